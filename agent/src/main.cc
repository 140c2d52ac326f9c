// llmorch-agent: thin main. Parses the command line and runs the agent or a control subcommand.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "agent.h"
#include "util.h"

namespace {

const char kHelp[] =
    "Usage: llmorch-agent [OPTIONS]           report to the host over virtio-serial, forever\n"
    "       llmorch-agent --once [OPTIONS]    print one report to stdout and exit\n"
    "       llmorch-agent set-priority P      tell the running agent to report priority P (1 = most\n"
    "                                         important); takes effect in the next report\n"
    "       llmorch-agent set-floor MIB       tell the running agent to report a memory floor of MIB\n"
    "\n"
    "Priority and floor come from, in rising precedence: the kernel command line (llmorch.priority=P,\n"
    "llmorch.floor_mib=M, llmorch.priority_at=SECONDS:P), the config file (priority=, floor_mib=,\n"
    "interval_ms=, llm_metrics=), then set-priority / set-floor. llmorch.priority_at=SECONDS:P (may repeat)\n"
    "replaces the command-line priority with P once SECONDS have passed since this agent started (not\n"
    "since boot).\n"
    "\n"
    "Options:\n"
    "  --config FILE          config file (default /etc/llmorch-agent.conf; missing is fine)\n"
    "  --control-socket PATH  unix socket for set-priority/set-floor (default /run/llmorch-agent.sock)\n"
    "  --interval-ms N        report interval, 100..60000 (default 1000; the host may change it)\n"
    "  --llm-metrics URL      scrape a local LLM server's queue, e.g. http://127.0.0.1:8080/metrics\n"
    "                         (llama.cpp and vLLM Prometheus metrics)\n"
    "  --port-name NAME       virtio-serial channel name (default org.llmorch.agent.0)\n"
    "  --sysfs-root DIR       where sysfs is (default /sys)\n"
    "  --proc-root DIR        where procfs is (default /proc)\n"
    "  --dev-root DIR         where the port device nodes are (default /dev)\n"
    "  --help                 this text\n"
    "The protocol is described in agent/protocol/PROTOCOL.md.\n";

int usage_error(const char* message) {
  llmorch::agent::log("%s; see llmorch-agent --help", message);
  return 2;
}

int control_command(const std::string& path, const std::string& verb, const std::string& arg) {
  std::string reply = llmorch::agent::send_control_request(path, verb + " " + arg);
  reply += '\n';
  bool ok = reply.rfind("ok", 0) == 0;
  [[maybe_unused]] ssize_t n = ::write(ok ? 1 : 2, reply.data(), reply.size());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  llmorch::agent::AgentOptions options;
  bool once = false;
  std::string verb, verb_arg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (arg == "--help" || arg == "-h") {
      [[maybe_unused]] ssize_t n = ::write(1, kHelp, sizeof kHelp - 1);
      return 0;
    } else if (arg == "--once") {
      once = true;
    } else if (arg == "--sysfs-root" && value(&options.sysfs_root)) {
    } else if (arg == "--proc-root" && value(&options.proc_root)) {
    } else if (arg == "--dev-root" && value(&options.dev_root)) {
    } else if (arg == "--config" && value(&options.config_path)) {
    } else if (arg == "--control-socket" && value(&options.control_path)) {
    } else if (arg == "--port-name" && value(&options.port_name)) {
    } else if (arg == "--llm-metrics" && value(&v)) {
      options.llm_metrics = v;
    } else if (arg == "--interval-ms" && value(&v)) {
      auto ms = llmorch::agent::parse_u64(v);
      if (!ms || *ms < llmorch::protocol::kMinIntervalMs || *ms > llmorch::protocol::kMaxIntervalMs)
        return usage_error("--interval-ms must be between 100 and 60000");
      options.interval_ms = ms;
    } else if ((arg == "set-priority" || arg == "set-floor") && verb.empty() && value(&verb_arg)) {
      verb = arg;
    } else {
      std::string message = "unknown or incomplete argument '" + arg + "'";
      return usage_error(message.c_str());
    }
  }
  if (!verb.empty()) return control_command(options.control_path, verb, verb_arg);
  llmorch::agent::Agent agent(options);
  return once ? agent.run_once(200) : agent.run();
}
