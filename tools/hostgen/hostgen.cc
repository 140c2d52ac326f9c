#include "hostgen.h"

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include <pugixml.hpp>

namespace llmorch::tools {
namespace {

struct Cpu {
  int id;
  int socket;
  int core;
  std::vector<int> siblings;
};

struct Node {
  int id;
  int socket;
  std::uint64_t memory_kib;
  std::uint64_t huge_2m, huge_1g, pages_4k;
  std::vector<Cpu> cpus;
};

std::uint64_t per_node(const std::vector<std::uint64_t>& v, std::size_t i, std::size_t n, const char* field) {
  if (v.size() == 1) return v[0];
  if (v.size() != n)
    throw std::invalid_argument(std::string(field) + ": " + std::to_string(v.size()) + " values for " +
                                std::to_string(n) + " nodes (give one, or one per node)");
  return v[i];
}

std::string join(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

std::vector<Node> build_nodes(const HostSpec& s) {
  if (s.sockets < 1 || s.nodes_per_socket < 1 || s.cores_per_node < 1 || s.threads_per_core < 1)
    throw std::invalid_argument("sockets, nodes_per_socket, cores_per_node and threads_per_core must be >= 1");
  const int n_nodes = s.sockets * s.nodes_per_socket;
  const int cores = n_nodes * s.cores_per_node;  // on the host
  const int cores_per_socket = s.nodes_per_socket * s.cores_per_node;
  if (!s.node_ids.empty() && static_cast<int>(s.node_ids.size()) != n_nodes)
    throw std::invalid_argument("node_ids: " + std::to_string(s.node_ids.size()) + " ids for " +
                                std::to_string(n_nodes) + " nodes");
  if (!s.core_ids.empty() && static_cast<int>(s.core_ids.size()) != cores_per_socket)
    throw std::invalid_argument("core_ids: " + std::to_string(s.core_ids.size()) + " ids for " +
                                std::to_string(cores_per_socket) + " cores per socket");
  std::vector<Node> nodes;
  for (int n = 0; n < n_nodes; ++n) {
    const auto i = static_cast<std::size_t>(n);
    const auto count = static_cast<std::size_t>(n_nodes);
    Node node{.id = s.node_ids.empty() ? n : s.node_ids[i],
              .socket = n / s.nodes_per_socket,
              .memory_kib = per_node(s.memory_kib, i, count, "memory_kib"),
              .huge_2m = per_node(s.hugepages_2m, i, count, "hugepages_2m"),
              .huge_1g = per_node(s.hugepages_1g, i, count, "hugepages_1g"),
              .pages_4k = 0,
              .cpus = {}};
    const std::uint64_t huge_kib = node.huge_2m * 2048 + node.huge_1g * 1048576;
    node.pages_4k = s.pages_4k.empty() ? (node.memory_kib > huge_kib ? (node.memory_kib - huge_kib) / 4 : 0)
                                       : per_node(s.pages_4k, i, count, "pages_4k");
    for (int k = 0; k < s.cores_per_node; ++k) {
      // The host-wide index of this node's k-th core, and its label within the socket.
      const int core = s.numbering == HostSpec::Numbering::Interleaved ? k * n_nodes + n : n * s.cores_per_node + k;
      const int in_socket = (n % s.nodes_per_socket) * s.cores_per_node + k;
      const int label = s.core_ids.empty() ? in_socket : s.core_ids[static_cast<std::size_t>(in_socket)];
      std::vector<int> siblings;
      for (int t = 0; t < s.threads_per_core; ++t)
        siblings.push_back(s.numbering == HostSpec::Numbering::Adjacent ? core * s.threads_per_core + t
                                                                        : t * cores + core);
      for (int id : siblings)
        node.cpus.push_back({.id = id, .socket = node.socket, .core = label, .siblings = siblings});
    }
    std::sort(node.cpus.begin(), node.cpus.end(), [](const Cpu& a, const Cpu& b) { return a.id < b.id; });
    nodes.push_back(std::move(node));
  }
  for (const auto& m : s.memory_only)
    nodes.push_back({.id = m.id,
                     .socket = -1,
                     .memory_kib = m.memory_kib,
                     .huge_2m = 0,
                     .huge_1g = 0,
                     .pages_4k = m.memory_kib / 4,
                     .cpus = {}});
  std::set<int> ids;
  for (const Node& n : nodes)
    if (!ids.insert(n.id).second) throw std::invalid_argument("node id " + std::to_string(n.id) + " used twice");
  std::sort(nodes.begin(), nodes.end(), [](const Node& a, const Node& b) { return a.id < b.id; });
  return nodes;
}

int distance(const HostSpec& s, const Node& a, const Node& b) {
  if (a.id == b.id) return 10;
  if (a.socket >= 0 && a.socket == b.socket) return s.same_socket;
  return s.remote;
}

void add_pages(pugi::xml_node parent, std::uint64_t size_kib, std::optional<std::uint64_t> count) {
  auto p = parent.append_child("pages");
  p.append_attribute("unit") = "KiB";
  p.append_attribute("size") = std::to_string(size_kib).c_str();
  if (count) p.text() = std::to_string(*count).c_str();
}

}  // namespace

std::string render_capabilities(const HostSpec& s) {
  const std::vector<Node> nodes = build_nodes(s);
  pugi::xml_document doc;
  doc.append_child(pugi::node_comment)
      .set_value(
          (" llmorch host description '" + s.name + "', generated by tools/hostgen: " + s.description + " ").c_str());
  auto host = doc.append_child("capabilities").append_child("host");
  auto cpu = host.append_child("cpu");
  cpu.append_child("arch").text() = "x86_64";
  cpu.append_child("model").text() = s.model.c_str();
  auto topo = cpu.append_child("topology");
  topo.append_attribute("sockets") = 1;  // libvirt reports one socket's shape here
  topo.append_attribute("cores") = s.nodes_per_socket * s.cores_per_node;
  topo.append_attribute("threads") = s.threads_per_core;
  for (std::uint64_t size : {4u, 2048u, 1048576u}) add_pages(cpu, size, std::nullopt);
  auto cells = host.append_child("topology").append_child("cells");
  cells.append_attribute("num") = static_cast<unsigned>(nodes.size());
  for (const Node& n : nodes) {
    auto cell = cells.append_child("cell");
    cell.append_attribute("id") = n.id;
    auto mem = cell.append_child("memory");
    mem.append_attribute("unit") = "KiB";
    mem.text() = std::to_string(n.memory_kib).c_str();
    add_pages(cell, 4, n.pages_4k);
    add_pages(cell, 2048, n.huge_2m);
    add_pages(cell, 1048576, n.huge_1g);
    if (s.with_distances) {
      auto d = cell.append_child("distances");
      for (const Node& other : nodes) {
        auto sib = d.append_child("sibling");
        sib.append_attribute("id") = other.id;
        sib.append_attribute("value") = distance(s, n, other);
      }
    }
    auto cpus = cell.append_child("cpus");
    cpus.append_attribute("num") = static_cast<unsigned>(n.cpus.size());
    for (const Cpu& c : n.cpus) {
      auto e = cpus.append_child("cpu");
      e.append_attribute("id") = c.id;
      e.append_attribute("socket_id") = c.socket;
      e.append_attribute("core_id") = c.core;
      e.append_attribute("siblings") = join(c.siblings).c_str();
    }
  }
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration | pugi::format_attribute_single_quote);
  return out.str();
}

const std::vector<HostSpec>& presets() {
  using N = HostSpec::Numbering;
  static const std::vector<HostSpec> all = [] {
    std::vector<HostSpec> v;
    {
      HostSpec s;
      s.name = "x86-1node-2cpu-small";
      s.description = "one node, two CPUs, no SMT, about 4.7 GiB: a small build VM like the CI machines";
      s.cores_per_node = 2;
      s.memory_kib = {4942044};
      v.push_back(s);
    }
    {
      HostSpec s;
      s.name = "x86-2node-96cpu-cascadelake";
      s.description =
          "2 sockets of 24 cores x 2 threads (siblings n, n+48), one node each, distances 10/21, "
          "core ids with gaps as on real Intel parts, uneven node memory";
      s.sockets = 2;
      s.cores_per_node = 24;
      s.threads_per_core = 2;
      s.memory_kib = {32646592, 32982940};
      s.core_ids = {0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 24, 25, 26, 27, 28, 29};
      s.remote = 21;
      s.model = "Cascadelake-Server";
      v.push_back(s);
    }
    {
      HostSpec s;
      s.name = "x86-4node-uneven-synthetic";
      s.description =
          "4 nodes of 4 CPUs with 1/2/3/4 GiB, no <distances> (assume 10/20), hugepage counts "
          "that do NOT fit in node memory: a parser must not trust them";
      s.sockets = 4;
      s.cores_per_node = 4;
      s.memory_kib = {1048576, 2097152, 3145728, 4194304};
      s.pages_4k = {2048, 4096, 6144, 8192};
      s.hugepages_2m = {4096, 6144, 8192, 10240};
      s.hugepages_1g = {6144, 8192, 10240, 12288};
      s.with_distances = false;
      v.push_back(s);
    }
    {
      HostSpec s;
      s.name = "x86-8node-384cpu-epyc-nps4";
      s.description =
          "2 sockets in NPS4 mode: 8 nodes of 24 cores x 2 threads (siblings n, n+192), 96 GiB and "
          "8192 x 2 MiB hugepages per node, distances 10/12/32";
      s.sockets = 2;
      s.nodes_per_socket = 4;
      s.cores_per_node = 24;
      s.threads_per_core = 2;
      s.memory_kib = {96ull << 20};
      s.hugepages_2m = {8192};
      s.same_socket = 12;
      s.remote = 32;
      s.model = "EPYC-Genoa";
      v.push_back(s);
    }
    {
      HostSpec s;
      s.name = "x86-odd-sparse-interleaved";
      s.description =
          "what real hosts do that parsers trip on: node ids 0, 2, 5 and a memory-only node 7, "
          "CPU ids interleaved across nodes (not contiguous within a node), 4 threads per core, "
          "core ids with gaps";
      s.sockets = 3;
      s.cores_per_node = 2;
      s.threads_per_core = 4;
      s.numbering = N::Interleaved;
      s.node_ids = {0, 2, 5};
      s.core_ids = {0, 4};
      s.memory_kib = {2097152, 1048576, 3145728};
      s.hugepages_2m = {64, 0, 128};
      s.memory_only = {{.id = 7, .memory_kib = 8388608}};
      s.remote = 20;
      v.push_back(s);
    }
    {
      HostSpec s;
      s.name = "x86-2node-16cpu-interleaved";
      s.description =
          "2 nodes whose CPU ids alternate (node 0: even ids, node 1: odd ids), 2 threads per "
          "core (siblings n, n+8), 8 GiB per node";
      s.sockets = 2;
      s.cores_per_node = 4;
      s.threads_per_core = 2;
      s.numbering = N::Interleaved;
      s.memory_kib = {8ull << 20};
      v.push_back(s);
    }
    return v;
  }();
  return all;
}

const HostSpec* find_preset(const std::string& name) {
  for (const HostSpec& s : presets())
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace llmorch::tools
