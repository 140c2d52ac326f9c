// llmorch host: the host's NUMA nodes, CPUs and memory: what is free and who uses the rest.
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "llmorch/orch/host_state.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;
using nlohmann::ordered_json;

constexpr const char* kHelp = R"(usage: llmorch host [--json] [-c URI] [--config FILE]

Shows each NUMA node of the host as llmorch's placement sees it:

  CPUs     all of the node's CPUs; reserved (reserved_cpus: never for VMs); dedicated, by VM; the shared
           pool (shared_cpus on this node when the host config sets it, else the CPUs that are neither
           reserved nor dedicated) and the shared VMs on the node; free (none of these: what a new
           dedicated VM can take).
  memory   total; free now (the kernel's view); reserve (memory_reserve_mib); non-llmorch (what other
           users hold now: total - free - the running managed VMs' balloon sizes, at least 0); each
           managed VM's reservation (max memory) and actual size; available for new VMs
           (total - reserve - non-llmorch - reservations).
  hugepages per page size with a pool on the node (or a VM using it): the pool (its page count, at
           most the node's memory), each hugepage-backed VM's reservation, and what is left for new
           VMs of that page size. The pool also counts as non-llmorch memory above.

  --json             one JSON object: {"nodes": [{"id", "cpus", "reserved_cpus", "dedicated": {VM: [cpus]},
                     "shared_pool", "shared_vms", "free_cpus", "memory": {"total_mib", "free_mib",
                     "reserve_mib", "others_mib", "vms": {VM: {"reserved_mib", "actual_mib"|null}},
                     "available_mib"}, "hugepages": [{"page_kib", "pool_mib", "vms": {VM: MiB},
                     "available_mib"}]}]}
  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE      host config (reserved_cpus, shared_cpus, memory_reserve_mib)

Exit status: 0 shown; 1 libvirt failed; 2 bad arguments or host config.
)";

ordered_json node_json(const orch::NodeUse& n) {
  ordered_json j;
  j["id"] = n.id;
  j["cpus"] = n.cpus;
  j["reserved_cpus"] = n.reserved;
  j["dedicated"] = ordered_json::object();
  for (const auto& [vm, cpus] : n.dedicated) j["dedicated"][vm] = cpus;
  j["shared_pool"] = n.shared_pool;
  j["shared_vms"] = n.shared_vms;
  j["free_cpus"] = n.free;
  ordered_json m;
  m["total_mib"] = n.total_mib;
  m["free_mib"] = n.free_mib;
  m["reserve_mib"] = n.reserve_mib;
  m["others_mib"] = n.others_mib;
  m["vms"] = ordered_json::object();
  for (const auto& [vm, mib] : n.vm_mib) {
    auto actual = n.vm_actual_mib.find(vm);
    m["vms"][vm] = {
        {"reserved_mib", mib},
        {"actual_mib", actual == n.vm_actual_mib.end() ? ordered_json(nullptr) : ordered_json(actual->second)}};
  }
  m["available_mib"] = n.available_mib;
  j["memory"] = m;
  j["hugepages"] = ordered_json::array();
  for (const orch::HugepagePool& p : n.hugepages)
    j["hugepages"].push_back(
        {{"page_kib", p.page_kib}, {"pool_mib", p.pool_mib}, {"vms", p.vm_mib}, {"available_mib", p.available_mib}});
  return j;
}

void print_node(std::ostream& out, const orch::NodeUse& n) {
  out << "node " << n.id << ": " << n.cpus.size() << " CPUs (" << cpu_list(n.cpus) << "), " << n.total_mib << " MiB\n";
  out << "  cpus:   free " << cpu_list(n.free) << "; reserved " << cpu_list(n.reserved) << "; dedicated";
  if (n.dedicated.empty()) out << " -";
  for (const auto& [vm, cpus] : n.dedicated) out << " " << vm << ":" << cpu_list(cpus);
  out << "; shared pool " << cpu_list(n.shared_pool);
  if (!n.shared_vms.empty()) {
    out << " (used by";
    for (const auto& vm : n.shared_vms) out << " " << vm;
    out << ")";
  }
  out << "\n  memory: available for new VMs " << n.available_mib << " MiB; free now " << n.free_mib << "; reserve "
      << n.reserve_mib << "; non-llmorch " << n.others_mib << "; VMs";
  if (n.vm_mib.empty()) out << " -";
  for (const auto& [vm, mib] : n.vm_mib) {
    out << " " << vm << ":" << mib;
    if (auto a = n.vm_actual_mib.find(vm); a != n.vm_actual_mib.end()) out << " (actual " << a->second << ")";
  }
  out << "\n";
  for (const orch::HugepagePool& p : n.hugepages) {
    out << "  hugepages " << policy::page_size_text(p.page_kib) << ": available for new VMs " << p.available_mib
        << " MiB; pool " << p.pool_mib << "; VMs";
    if (p.vm_mib.empty()) out << " -";
    for (const auto& [vm, mib] : p.vm_mib) out << " " << vm << ":" << mib;
    out << "\n";
  }
}

}  // namespace

int cmd_host(const std::vector<std::string>& args, Io io) {
  return guarded("host", io, [&] {
    CommonOptions common;
    bool json = false;
    po::options_description options;
    add_common_options(options, common);
    options.add_options()("json", po::bool_switch(&json), "JSON output");
    parse_args(args, options);
    if (common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    const orch::HostConfig config = load_host_config(common);
    const orch::HostSnapshot host = read_host(connect(common, io), io.err);
    orch::check_config(host.topology, config);
    const auto nodes = orch::describe_nodes(host, config);
    if (json) {
      ordered_json doc;
      doc["nodes"] = ordered_json::array();
      for (const auto& n : nodes) doc["nodes"].push_back(node_json(n));
      io.out << doc.dump() << "\n";
      return kExitOk;
    }
    for (const auto& n : nodes) print_node(io.out, n);
    return kExitOk;
  });
}

}  // namespace llmorch::cli
