// llmorch list: one line per VM llmorch manages.
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kHelp = R"(usage: llmorch list [-c URI] [--config FILE]

Lists the VMs llmorch manages (libvirt domains that carry llmorch metadata), one line each:
  NAME     the domain name
  STATE    libvirt's state (running, shut off, paused, ...)
  POLICY   dedicated (own CPUs) or shared (floating over the shared pool)
  NODES    host NUMA nodes holding its memory
  CPUS     host CPUs it holds (dedicated) or floats over (shared), as recorded in its metadata
  VCPUS    vCPUs present now / maximum
  MEMORY   balloon size now / maximum, MiB
Domains without llmorch metadata are not listed ('virsh list --all' shows them).

  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE      accepted for symmetry with the other commands

Exit status: 0 listed (possibly nothing); 1 libvirt failed; 2 bad arguments.
)";

}  // namespace

int cmd_list(const std::vector<std::string>& args, Io io) {
  return guarded("list", io, [&] {
    CommonOptions common;
    po::options_description options;
    add_common_options(options, common);
    parse_args(args, options);
    if (common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    load_host_config(common);  // a broken --config is reported, as by every command
    const auto domains = connect(common, io)->list_managed();
    Table table;
    table.row({"NAME", "STATE", "POLICY", "NODES", "CPUS", "VCPUS", "MEMORY"});
    std::vector<std::string> bad;
    for (const auto& d : domains) {
      if (d.metadata_error) {
        table.row({d.name, std::string(orch::to_string(d.state)), "?", "?", "?", "?", "?"});
        bad.push_back("vm " + d.name + ": " + *d.metadata_error + " (llmorchd leaves it alone)");
        continue;
      }
      const auto& p = d.facts.placement;
      table.row({d.name, std::string(orch::to_string(d.state)), std::string(policy::to_string(p.cpu_policy)),
                 cpu_list(p.nodes), cpu_list(p.cpus),
                 std::to_string(d.vcpus_current) + "/" + std::to_string(d.vcpus_max),
                 std::to_string(d.memory_actual_kib / 1024) + "/" + std::to_string(d.memory_max_kib / 1024) + " MiB"});
    }
    table.print(io.out);
    for (const auto& line : bad) io.out << line << "\n";
    if (domains.empty()) io.out << "(no VM managed by llmorch)\n";
    return kExitOk;
  });
}

}  // namespace llmorch::cli
