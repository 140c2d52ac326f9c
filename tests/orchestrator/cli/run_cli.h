// Runs the llmorch CLI's entry point in the test's process, as the command line `llmorch ARGS...` would,
// and keeps what it printed.
#pragma once

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"

namespace llmorch::cli {

struct CliResult {
  int status;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
};

// `args` without the leading "llmorch". `hypervisors`: how commands reach the hypervisor (a fake);
// empty: libvirt.
inline CliResult run_cli(std::vector<std::string> args, HypervisorFactory hypervisors = {}) {
  args.insert(args.begin(), "llmorch");
  std::ostringstream out, err;
  const int status = run(args, {out, err, std::move(hypervisors)});
  return {status, out.str(), err.str()};
}

}  // namespace llmorch::cli
