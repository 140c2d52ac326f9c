// The agent: samples the guest every interval, reports to the host, obeys the host's commands.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "control.h"
#include "llm_metrics.h"
#include "llmorch/protocol/frame_decoder.h"
#include "llmorch/protocol/messages.h"
#include "port.h"
#include "sampler.h"
#include "settings.h"
#include "sysfs.h"

namespace llmorch::agent {

struct AgentOptions {
  std::string sysfs_root = "/sys";
  std::string proc_root = "/proc";
  std::string dev_root = "/dev";
  std::string config_path = "/etc/llmorch-agent.conf";
  std::string control_path = kDefaultControlSocket;
  std::string port_name = kDefaultPortName;
  std::optional<std::uint64_t> interval_ms;  // overrides the config file
  std::optional<std::string> llm_metrics;    // overrides the config file
};

class Agent {
 public:
  explicit Agent(AgentOptions options);

  // One report, CPU utilisation measured over `window_ms`, written to stdout. Exit status.
  int run_once(int window_ms);
  // Runs until killed. Exit status (only on a setup failure).
  int run();

  // Visible for tests.
  protocol::Report build_report();
  void handle_host_bytes(std::string_view bytes);
  std::uint64_t interval_ms() const { return interval_ms_; }
  Settings& settings() { return settings_; }

 private:
  void handle_command(const protocol::HostCommand& command);
  void report_tick();
  void poll_once(std::int64_t until_ms, bool watch_port);

  AgentOptions options_;
  ProcSampler sampler_;
  CpuControl cpus_;
  Settings settings_;
  std::optional<HttpUrl> llm_url_;
  std::uint64_t interval_ms_ = 1000;
  std::uint64_t seq_ = 0;
  std::optional<CpuTimes> last_cpu_;
  std::int64_t started_ms_;
  Port port_;
  ControlServer control_;
  protocol::FrameDecoder decoder_;
  bool host_listening_ = true;  // false after POLLHUP: stop polling the port until the next tick
};

}  // namespace llmorch::agent
