#include "commands.h"

#include <ostream>

namespace llmorch::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"weights", "compute priority weights and whole-CPU shares (offline)", cmd_weights},
      {"plan", "place VMs on a host described by a capabilities file (offline)", cmd_plan},
      {"place", "place a VM from a template on this host's NUMA nodes and start it", cmd_place},
      {"list", "list the VMs llmorch manages", cmd_list},
      {"status", "VMs with their CPUs, memory, priorities, load and weights", cmd_status},
      {"host", "NUMA nodes, CPUs and memory: what is free and who uses the rest", cmd_host},
      {"explain", "how a VM's weight, shares and CPUs come about, and llmorchd's last decision", cmd_explain},
      {"remove", "stop and undefine a VM llmorch manages", cmd_remove},
      {"top", "a live per-VM view of what llmorchd does (q quits)", cmd_top},
  };
  return table;
}

namespace {
void usage(std::ostream& os) {
  os << "usage: llmorch <command> [options]\n\n"
        "llmorch places LLM virtual machines on a KVM host's NUMA nodes and shows what llmorchd does.\n\n"
        "commands:\n";
  for (const Command& c : commands()) {
    os << "  " << c.name << std::string(c.name.size() < 10 ? 10 - c.name.size() : 1, ' ') << c.summary << "\n";
  }
  os << "\n'llmorch <command> --help' explains a command; 'llmorch --version' prints the version.\n"
        "Exit status: 0 done, 1 the environment failed (libvirt, missing VM), 2 bad arguments or input,\n"
        "3 the host cannot fit the VM.\n";
}
}  // namespace

int run(const std::vector<std::string>& argv, Io io) {
  if (argv.size() < 2 || argv[1] == "--help" || argv[1] == "-h" || argv[1] == "help") {
    usage(argv.size() < 2 ? io.err : io.out);
    return argv.size() < 2 ? kExitUsage : kExitOk;
  }
  if (argv[1] == "--version" || argv[1] == "version") {
    io.out << "llmorch " << LLMORCH_VERSION << "\n";
    return kExitOk;
  }
  for (const Command& c : commands()) {
    if (c.name == argv[1]) return c.run({argv.begin() + 2, argv.end()}, io);
  }
  io.err << "llmorch: unknown command '" << argv[1] << "'; 'llmorch --help' lists the commands\n";
  return kExitUsage;
}

}  // namespace llmorch::cli
