// Capabilities XML -> policy::HostTopology. Every problem becomes a CapabilitiesError that names the
// cell and element, so an operator can find it in `virsh capabilities` output.
#include "llmorch/orch/topology.h"

#include <pugixml.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "llmorch/orch/config.h"

namespace llmorch::orch {
namespace {

using policy::CpuId;
using policy::NodeId;

[[noreturn]] void fail(const std::string& what) { throw CapabilitiesError("host capabilities: " + what); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::strchr(" \t\r\n", s.front())) s.remove_prefix(1);
  while (!s.empty() && std::strchr(" \t\r\n", s.back())) s.remove_suffix(1);
  return s;
}

template <typename T>
T parse_number(std::string_view text, const std::string& where) {
  const std::string_view t = trim(text);
  T value{};
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size() || value < T{0}) {
    fail(where + ": '" + std::string(text) + "' is not a non-negative integer");
  }
  return value;
}

// A required integer attribute.
template <typename T>
T attr_number(const pugi::xml_node& el, const char* name, const std::string& where) {
  const pugi::xml_attribute a = el.attribute(name);
  if (!a) fail(where + ": missing attribute '" + name + "'");
  return parse_number<T>(a.value(), where + " attribute '" + name + "'");
}

// An optional integer attribute (0 when absent, as libvirt omits die_id on older hosts).
int optional_attr(const pugi::xml_node& el, const char* name, const std::string& where) {
  const pugi::xml_attribute a = el.attribute(name);
  return a ? parse_number<int>(a.value(), where + " attribute '" + name + "'") : 0;
}

// Bytes per unit for libvirt's scaled integers; 0 when the unit is unknown.
std::uint64_t unit_bytes(std::string_view unit) {
  constexpr std::uint64_t k = 1024, d = 1000;
  static const std::pair<std::string_view, std::uint64_t> table[] = {{"b", 1},
                                                                     {"bytes", 1},
                                                                     {"KB", d},
                                                                     {"K", k},
                                                                     {"KiB", k},
                                                                     {"MB", d * d},
                                                                     {"M", k * k},
                                                                     {"MiB", k * k},
                                                                     {"GB", d * d * d},
                                                                     {"G", k * k * k},
                                                                     {"GiB", k * k * k},
                                                                     {"TB", d * d * d * d},
                                                                     {"T", k * k * k * k},
                                                                     {"TiB", k * k * k * k}};
  for (const auto& [name, bytes] : table) {
    if (name == unit) return bytes;
  }
  return 0;
}

// A scaled amount converted to KiB (rounded down). Unit defaults to KiB as in libvirt's output.
std::uint64_t amount_kib(const pugi::xml_node& el, std::string_view text, const std::string& where) {
  const pugi::xml_attribute unit_attr = el.attribute("unit");
  const std::string_view unit = unit_attr ? std::string_view(unit_attr.value()) : "KiB";
  const std::uint64_t bytes = unit_bytes(unit);
  if (bytes == 0) fail(where + ": unknown unit '" + std::string(unit) + "'");
  const auto value = parse_number<std::uint64_t>(text, where);
  if (bytes >= 1024) {
    const std::uint64_t factor = bytes / 1024;
    if (value > std::numeric_limits<std::uint64_t>::max() / factor) fail(where + ": amount too large");
    return value * factor;
  }
  return value / (1024 / bytes);
}

std::vector<policy::PageInfo> parse_pages(const pugi::xml_node& cell, const std::string& where) {
  std::vector<policy::PageInfo> pages;
  for (const pugi::xml_node& p : cell.children("pages")) {
    const std::string pw = where + " <pages>";
    policy::PageInfo info;
    const pugi::xml_attribute size = p.attribute("size");
    if (!size) fail(pw + ": missing attribute 'size'");
    info.size_kib = amount_kib(p, size.value(), pw + " size");
    if (info.size_kib == 0) fail(pw + ": page size 0");
    const std::string_view count = trim(p.child_value());
    info.count = count.empty() ? 0 : parse_number<std::uint64_t>(count, pw + " count");
    if (std::any_of(pages.begin(), pages.end(),
                    [&](const policy::PageInfo& o) { return o.size_kib == info.size_kib; })) {
      fail(pw + ": page size " + std::to_string(info.size_kib) + " KiB listed twice");
    }
    pages.push_back(info);
  }
  std::sort(pages.begin(), pages.end(),
            [](const policy::PageInfo& a, const policy::PageInfo& b) { return a.size_kib < b.size_kib; });
  return pages;
}

std::map<NodeId, int> parse_distances(const pugi::xml_node& cell, const std::string& where) {
  std::map<NodeId, int> distances;
  for (const pugi::xml_node& s : cell.child("distances").children("sibling")) {
    const std::string sw = where + " <distances><sibling>";
    const auto id = attr_number<NodeId>(s, "id", sw);
    const auto value = attr_number<int>(s, "value", sw);
    if (!distances.emplace(id, value).second) fail(sw + ": node " + std::to_string(id) + " listed twice");
  }
  return distances;
}

policy::Cpu parse_cpu(const pugi::xml_node& el, const std::string& where) {
  policy::Cpu cpu;
  cpu.id = attr_number<CpuId>(el, "id", where + " <cpu>");
  const std::string cw = where + " cpu " + std::to_string(cpu.id);
  cpu.socket_id = optional_attr(el, "socket_id", cw);
  cpu.die_id = optional_attr(el, "die_id", cw);
  cpu.core_id = optional_attr(el, "core_id", cw);
  std::set<CpuId> siblings{cpu.id};
  if (const pugi::xml_attribute s = el.attribute("siblings")) {
    try {
      siblings = parse_cpu_list(s.value());
    } catch (const std::invalid_argument& e) {
      fail(cw + ": siblings: " + e.what());
    }
    siblings.insert(cpu.id);  // some hosts list only the other threads
  }
  cpu.siblings.assign(siblings.begin(), siblings.end());
  return cpu;
}

policy::NumaNode parse_cell(const pugi::xml_node& cell, std::set<CpuId>& seen_cpus) {
  policy::NumaNode node;
  node.id = attr_number<NodeId>(cell, "id", "<cell>");
  const std::string where = "cell " + std::to_string(node.id);
  if (const pugi::xml_node mem = cell.child("memory")) {
    node.memory_kib = amount_kib(mem, mem.child_value(), where + " <memory>");
  }
  node.pages = parse_pages(cell, where);
  node.distances = parse_distances(cell, where);
  for (const pugi::xml_node& el : cell.child("cpus").children("cpu")) {
    policy::Cpu cpu = parse_cpu(el, where);
    if (!seen_cpus.insert(cpu.id).second) fail(where + ": cpu " + std::to_string(cpu.id) + " listed twice");
    node.cpus.push_back(std::move(cpu));
  }
  std::sort(node.cpus.begin(), node.cpus.end(), [](const policy::Cpu& a, const policy::Cpu& b) { return a.id < b.id; });
  return node;
}

}  // namespace

policy::HostTopology parse_capabilities(std::string_view xml) {
  pugi::xml_document doc;
  const pugi::xml_parse_result parsed = doc.load_buffer(xml.data(), xml.size());
  if (!parsed) {
    fail("not well-formed XML (" + std::string(parsed.description()) + " at offset " + std::to_string(parsed.offset) +
         "); pass the output of 'virsh capabilities'");
  }
  const pugi::xml_node caps = doc.child("capabilities");
  if (!caps) fail("no <capabilities> root element; pass the output of 'virsh capabilities'");
  const pugi::xml_node cells = caps.child("host").child("topology").child("cells");
  if (!cells) {
    fail(
        "no <host><topology><cells>: libvirt could not read this host's NUMA layout, so its CPUs "
        "cannot be pinned; check that libvirtd can read /sys/devices/system/node");
  }
  policy::HostTopology topo;
  std::set<CpuId> seen_cpus;
  for (const pugi::xml_node& cell : cells.children("cell")) {
    policy::NumaNode node = parse_cell(cell, seen_cpus);
    if (topo.node(node.id) != nullptr) fail("cell " + std::to_string(node.id) + " listed twice");
    // Keep nodes sorted as we go: node() binary-searches them.
    auto at = std::upper_bound(topo.nodes.begin(), topo.nodes.end(), node.id,
                               [](NodeId id, const policy::NumaNode& n) { return id < n.id; });
    topo.nodes.insert(at, std::move(node));
  }
  if (topo.nodes.empty()) fail("<cells> lists no <cell>");
  return topo;
}

policy::HostTopology parse_capabilities_file(const std::string& path) {
  if (std::error_code ec; std::filesystem::is_directory(path, ec)) {
    throw CapabilitiesError("host capabilities file '" + path +
                            "' is a directory; create a file with "
                            "'virsh capabilities > FILE'");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw CapabilitiesError("cannot read host capabilities file '" + path + "': " + std::strerror(errno) +
                            "; create one with 'virsh capabilities > FILE'");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw CapabilitiesError("error while reading host capabilities file '" + path + "'");
  try {
    return parse_capabilities(text.str());
  } catch (const CapabilitiesError& e) {
    throw CapabilitiesError(path + ": " + e.what());
  }
}

}  // namespace llmorch::orch
