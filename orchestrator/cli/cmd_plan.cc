// llmorch plan: NUMA placement, offline. Places VMs one after another on a host described by a
// capabilities file, so an operator can see where llmorchd would put them and why some do not fit.
#include <boost/program_options.hpp>
#include <charconv>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "llmorch/orch/config.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/topology.h"
#include "llmorch/policy/placement.h"
#include "placement_json.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;
using policy::CpuPolicy;

constexpr const char* kHelp =
    R"(usage: llmorch plan --capabilities FILE [--reserve-cpus LIST] [--json] --vm SPEC [--vm SPEC]...

Places VMs on a host's NUMA nodes the way llmorchd would, without touching any VM. The host starts
empty; the VMs are placed in the order given, each seeing the ones placed before it.

  --capabilities FILE  the host, as printed by 'virsh capabilities' (libvirt capabilities XML)
  --reserve-cpus LIST  host CPUs never given to VMs, e.g. 0-1,48-49
  --vm SPEC            a VM: name=NAME,vcpus=V,memory_mib=M[,cpu_policy=dedicated|shared][,hugepages=2M|1G]
                       dedicated (default): each vCPU pinned to its own host CPU, SMT siblings together;
                       shared: the vCPUs float over the node's CPUs that are neither reserved nor dedicated;
                       the pool shown is the one after every VM is placed (llmorchd re-pins shared VMs, vCPUs
                       and emulator threads, whenever a dedicated VM on their node is placed, re-divided
                       or removed, so a dedicated VM's CPUs stay exclusive)
  --json               print exactly one JSON object instead of a table

Rules: a VM that fits one node gets one node, the one it fills best (fewest CPUs, then least memory
left over, then lowest id). A larger VM spans the fewest nodes, nearest first (smallest sum of NUMA
distances), with one guest NUMA cell per host node; vCPUs and memory are split in proportion to what
each node has free. Hugepage VMs also need free hugepages of that size on their nodes.

JSON output:
  {"placed": [{"name": N, "nodes": [ids], "cpus": [host CPU ids; vCPU i runs on cpus[i] when dedicated;
               shared: the pool once every VM is placed],
               "memory_mib_per_node": {"ID": MiB, ...}, "cpu_policy": "dedicated"|"shared",
               "hugepages": "2M"|"1G"|null, "cells": [{"node": ID, "vcpus": [i, ...], "memory_mib": M}]}],
   "rejected": [{"name": N, "reason": "why, node by node"}]}

Example: llmorch plan --capabilities host.xml --vm name=a,vcpus=8,memory_mib=16384 --vm name=b,vcpus=2,memory_mib=2048,cpu_policy=shared

Exit status: 0 the plan was made (some VMs may be rejected: see "rejected"); 2 bad arguments or an
unreadable or malformed capabilities file.
)";

struct Options {
  std::string capabilities;
  std::set<policy::CpuId> reserved;
  bool json = false;
  bool help = false;
  std::vector<policy::PlacementRequest> vms;
};

std::uint64_t spec_number(const std::string& spec, const std::string& key, const std::string& value) {
  std::uint64_t n = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, n);
  if (value.empty() || ec != std::errc{} || ptr != end || n > (1ull << 40)) {
    throw UsageError("--vm '" + spec + "': " + key + " must be a whole number, got '" + value + "'");
  }
  return n;
}

policy::PlacementRequest parse_vm(const std::string& spec) {
  policy::PlacementRequest r;
  std::set<std::string> seen;
  std::size_t start = 0;
  while (start <= spec.size()) {
    const std::size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, comma - start);
    start = comma + 1;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) throw UsageError("--vm '" + spec + "': '" + item + "' is not KEY=VALUE");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (!seen.insert(key).second) throw UsageError("--vm '" + spec + "': " + key + " is given twice");
    if (key == "name") {
      if (value.empty()) throw UsageError("--vm '" + spec + "': empty name");
      r.name = value;
    } else if (key == "vcpus") {
      const std::uint64_t v = spec_number(spec, key, value);
      if (v < 1 || v > 4096) throw UsageError("--vm '" + spec + "': vcpus must be 1..4096, got " + value);
      r.vcpus = static_cast<int>(v);
    } else if (key == "memory_mib") {
      r.memory_mib = spec_number(spec, key, value);
      if (r.memory_mib == 0) throw UsageError("--vm '" + spec + "': memory_mib must be at least 1");
    } else if (key == "cpu_policy") {
      const auto policy = policy::cpu_policy_from_string(value);
      if (!policy) throw UsageError("--vm '" + spec + "': cpu_policy must be dedicated or shared, got '" + value + "'");
      r.cpu_policy = *policy;
    } else if (key == "hugepages") {
      if (value != "2M" && value != "1G")
        throw UsageError("--vm '" + spec + "': hugepages must be 2M or 1G, got '" + value + "'");
      r.hugepage_kib = value == "2M" ? 2048 : 1048576;
    } else {
      throw UsageError("--vm '" + spec + "': unknown key '" + key +
                       "' (known: name, vcpus, memory_mib, cpu_policy, hugepages)");
    }
  }
  for (const char* key : {"name", "vcpus", "memory_mib"}) {
    if (!seen.count(key)) throw UsageError("--vm '" + spec + "': missing " + key);
  }
  return r;
}

Options parse(const std::vector<std::string>& args) {
  Options o;
  std::string reserve;
  po::options_description options;  // --help prints kHelp, so the descriptions here are terse
  options.add_options()("help,h", "explain this command")("capabilities", po::value<std::string>(&o.capabilities),
                                                          "capabilities XML file")(
      "reserve-cpus", po::value<std::string>(&reserve), "reserved CPUs")("json", "JSON output")(
      "vm", po::value<std::vector<std::string>>(), "VM spec");
  const po::variables_map vm = parse_args(args, options);
  o.help = vm.count("help") > 0;
  o.json = vm.count("json") > 0;
  if (o.help) return o;
  if (o.capabilities.empty()) throw UsageError("--capabilities FILE is required ('virsh capabilities > FILE')");
  if (vm.count("reserve-cpus")) {
    try {
      o.reserved = orch::parse_cpu_list(reserve);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--reserve-cpus: ") + e.what());
    }
  }
  if (!vm.count("vm")) throw UsageError("give at least one --vm SPEC");
  std::set<std::string> names;
  for (const std::string& spec : vm["vm"].as<std::vector<std::string>>()) {
    o.vms.push_back(parse_vm(spec));
    if (!names.insert(o.vms.back().name).second) throw UsageError("VM name '" + o.vms.back().name + "' is given twice");
  }
  return o;
}

void check_reserved_exist(const policy::HostTopology& host, const std::set<policy::CpuId>& reserved) {
  std::set<policy::CpuId> known;
  for (const auto& n : host.nodes) {
    for (const auto& c : n.cpus) known.insert(c.id);
  }
  for (policy::CpuId id : reserved) {
    if (!known.count(id)) {
      throw UsageError("--reserve-cpus names CPU " + std::to_string(id) + ", which the host does not have (it has " +
                       orch::format_cpu_list(known) + ")");
    }
  }
}

void print_json(std::ostream& out, const std::vector<policy::Placement>& placed,
                const std::vector<policy::Rejection>& rejected) {
  nlohmann::ordered_json doc;
  doc["placed"] = nlohmann::ordered_json::array();
  for (const auto& p : placed) doc["placed"].push_back(placement_json(p));
  doc["rejected"] = nlohmann::ordered_json::array();
  for (const auto& r : rejected) doc["rejected"].push_back({{"name", r.name}, {"reason", r.reason}});
  out << doc.dump() << "\n";
}

void print_table(std::ostream& out, const Options& o, const policy::HostTopology& host,
                 const std::vector<policy::Placement>& placed, const std::vector<policy::Rejection>& rejected) {
  out << o.capabilities << ": " << host.nodes.size() << " NUMA nodes, " << host.cpu_count() << " CPUs";
  if (!o.reserved.empty()) out << ", reserved " << orch::format_cpu_list(o.reserved);
  out << "\n\n";
  std::vector<std::string> memory;        // "0:16384 1:16384 (2M pages)"
  std::size_t width = 4, mem_width = 22;  // the headers
  for (const auto& p : placed) {
    std::string m;
    for (const auto& [node, mib] : p.memory_mib_per_node)
      m += (m.empty() ? "" : " ") + std::to_string(node) + ":" + std::to_string(mib);
    if (p.hugepage_kib) m += p.hugepage_kib == 2048 ? " (2M pages)" : " (1G pages)";
    mem_width = std::max(mem_width, m.size());
    width = std::max(width, p.name.size());
    memory.push_back(std::move(m));
  }
  out << std::left << std::setw(width + 2) << "NAME" << std::setw(11) << "POLICY" << std::setw(7) << "VCPUS"
      << std::setw(mem_width + 2) << "MEMORY MiB (node:MiB)"
      << "HOST CPUS\n";
  for (std::size_t i = 0; i < placed.size(); ++i) {
    const policy::Placement& p = placed[i];
    out << std::left << std::setw(width + 2) << p.name << std::setw(11) << policy::to_string(p.cpu_policy)
        << std::setw(7) << p.vcpus << std::setw(mem_width + 2) << memory[i]
        << orch::format_cpu_list({p.cpus.begin(), p.cpus.end()}) << "\n";
  }
  if (placed.empty()) out << "(no VM placed)\n";
  if (!rejected.empty()) out << "\nrejected:\n";
  for (const auto& r : rejected) out << "  " << r.name << ": " << r.reason << "\n";
}

}  // namespace

int cmd_plan(const std::vector<std::string>& args, Io io) {
  Options o;
  policy::HostTopology host;
  try {
    o = parse(args);
    if (o.help) {
      io.out << kHelp;
      return kExitOk;
    }
    host = orch::parse_capabilities_file(o.capabilities);
    check_reserved_exist(host, o.reserved);
  } catch (const UsageError& e) {
    io.err << "llmorch plan: " << e.what() << "; 'llmorch plan --help' explains\n";
    return kExitUsage;
  } catch (const orch::CapabilitiesError& e) {
    io.err << "llmorch plan: " << e.what() << "\n";
    return kExitUsage;
  }
  policy::HostUsage usage;
  usage.reserved_cpus = o.reserved;
  std::vector<policy::Rejection> rejected;
  for (const auto& request : o.vms) {
    auto result = policy::place(host, usage, request);
    if (auto* p = std::get_if<policy::Placement>(&result)) {
      usage.placed.push_back(std::move(*p));
    } else {
      rejected.push_back(std::get<policy::Rejection>(std::move(result)));
    }
  }
  // Shared VMs float over what the dedicated VMs placed after them left: the pool llmorchd pins them to,
  // computed by the same rule (policy::shared_pool).
  std::set<policy::CpuId> dedicated;
  for (const auto& p : usage.placed)
    if (p.cpu_policy == CpuPolicy::Dedicated) dedicated.insert(p.cpus.begin(), p.cpus.end());
  const policy::CpuHost cpus = orch::cpu_host(host, o.reserved, {});
  for (auto& p : usage.placed) {
    if (p.cpu_policy != CpuPolicy::Shared) continue;
    if (auto pool = policy::shared_pool(cpus, p.nodes, dedicated); !pool.empty()) p.cpus = std::move(pool);
  }
  if (o.json) {
    print_json(io.out, usage.placed, rejected);
  } else {
    print_table(io.out, o, host, usage.placed, rejected);
  }
  return kExitOk;
}

}  // namespace llmorch::cli
