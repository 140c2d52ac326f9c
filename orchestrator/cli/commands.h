// The ops CLI's subcommands. Each lives in its own cmd_NAME.cc and is listed in commands.cc.
#pragma once

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llmorch::orch {
class Hypervisor;
}

namespace llmorch::cli {

// Exit statuses, the same for every subcommand (documented in README.md).
inline constexpr int kExitOk = 0;       // done
inline constexpr int kExitFailure = 1;  // the environment failed: libvirt error, VM not found, ...
inline constexpr int kExitUsage = 2;    // bad arguments, malformed template/config/capabilities
inline constexpr int kExitNoFit = 3;    // the host cannot fit the VM (nothing was changed)

// Opens the hypervisor at a libvirt URI. Shared: a bounded call still running after its deadline keeps
// the hypervisor alive (read_host).
using HypervisorFactory = std::function<std::shared_ptr<orch::Hypervisor>(const std::string& uri)>;

// What a command runs with: where it prints, and how it reaches the hypervisor (empty: libvirt; tests
// pass one that hands out a fake).
struct Io {
  std::ostream& out;
  std::ostream& err;
  HypervisorFactory hypervisors = {};
};

// args: the subcommand's own arguments (without the program and subcommand names).
using CommandFn = int (*)(const std::vector<std::string>& args, Io io);

struct Command {
  std::string_view name;
  std::string_view summary;
  CommandFn run;
};

const std::vector<Command>& commands();

// Entry point used by main(): dispatches argv[1] to its subcommand.
int run(const std::vector<std::string>& argv, Io io);

// Subcommands (one file each).
int cmd_weights(const std::vector<std::string>& args, Io io);
int cmd_plan(const std::vector<std::string>& args, Io io);
int cmd_place(const std::vector<std::string>& args, Io io);
int cmd_list(const std::vector<std::string>& args, Io io);
int cmd_status(const std::vector<std::string>& args, Io io);
int cmd_host(const std::vector<std::string>& args, Io io);
int cmd_explain(const std::vector<std::string>& args, Io io);
int cmd_remove(const std::vector<std::string>& args, Io io);
int cmd_top(const std::vector<std::string>& args, Io io);

}  // namespace llmorch::cli
