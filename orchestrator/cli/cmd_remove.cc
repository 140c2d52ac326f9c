// llmorch remove: stops and undefines a VM llmorch manages, which frees its CPUs and memory.
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"

namespace llmorch::cli {

namespace {

constexpr const char* kHelp = R"(usage: llmorch remove NAME [-c URI] [--config FILE]

Stops the VM NAME (at once, like pulling the plug: 'virsh destroy') and removes its libvirt definition,
so its dedicated CPUs and its memory reservation are free for new VMs. Only VMs llmorch manages (with
llmorch metadata, also metadata llmorchd reports as bad) are removed; any other domain is refused
and left alone. NAME is looked up once: the domain removed is the one with the UUID found then, never a
new domain given the same name meanwhile.

  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE      accepted for symmetry with the other commands

Exit status: 0 removed; 1 no such VM, a domain not managed by llmorch, the VM removed meanwhile by
someone else, or libvirt failed; 2 bad arguments.
)";

}  // namespace

int cmd_remove(const std::vector<std::string>& args, Io io) {
  return guarded("remove", io, [&] {
    const auto [common, name] = parse_vm_args(args);
    if (common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    if (name.empty()) throw UsageError("name the VM to remove");
    load_host_config(common);
    auto hypervisor = connect(common, io);
    const auto vm = hypervisor->find_managed(name);
    if (!vm) {
      if (hypervisor->domain_exists(name)) {
        io.err << "llmorch remove: domain '" << name
               << "' is not managed by llmorch (it has no llmorch metadata); left alone. Use virsh for it\n";
      } else {
        io.err << "llmorch remove: there is no VM named '" << name << "'; 'llmorch list' shows the VMs\n";
      }
      return kExitFailure;
    }
    // The name is resolved once: from here on the domain is its UUID, so a domain of the same name
    // defined meanwhile (another remove and place) is never the one destroyed.
    if (vm->uuid.empty())
      throw EnvironmentError("libvirt gave no UUID for domain '" + name + "'; nothing removed, retry");
    if (!hypervisor->destroy_and_undefine_uuid(vm->uuid)) {
      io.err << "llmorch remove: vm '" << name << "' (uuid " << vm->uuid
             << ") was removed meanwhile, by someone else; nothing done. 'llmorch list' shows what is there now\n";
      return kExitFailure;
    }
    if (vm->metadata_error) {
      io.out << "removed vm " << name << " (was " << orch::to_string(vm->state) << "; its llmorch metadata was bad, "
             << "so what it held is not known)\n";
      return kExitOk;
    }
    const auto& p = vm->facts.placement;
    std::uint64_t mib = 0;
    for (const auto& [node, m] : p.memory_mib_per_node) mib += m;
    io.out << "removed vm " << name << " (was " << orch::to_string(vm->state) << "); freed on node(s) "
           << cpu_list(p.nodes) << ": " << mib << " MiB"
           << (p.cpu_policy == policy::CpuPolicy::Dedicated ? ", cpus " + cpu_list(p.cpus) : std::string()) << "\n";
    return kExitOk;
  });
}

}  // namespace llmorch::cli
