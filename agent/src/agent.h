// The agent: samples the guest every interval, reports to the host, obeys the host's commands.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "control.h"
#include "host_link.h"
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
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // One report, CPU utilisation measured over `window_ms`, written to stdout. Exit status.
  int run_once(int window_ms);
  // Runs until killed. Exit status (only on a setup failure). Waits in poll() between reports; while no
  // host process listens on the channel it reports nothing and probes with backoff (host_link.h).
  int run();

  // Visible for tests.
  protocol::Report build_report();
  void handle_host_bytes(std::string_view bytes);
  std::uint64_t interval_ms() const { return interval_ms_; }
  Settings& settings() { return settings_; }

 private:
  void handle_command(const protocol::HostCommand& command);
  void report(std::int64_t now_ms);
  void probe(std::int64_t now_ms);
  void wait(std::int64_t now_ms);
  void read_port();
  void host_gone(std::int64_t now_ms, const char* why);
  void prime_cpu();

  AgentOptions options_;
  ProcSampler sampler_;
  CpuControl cpus_;
  Settings settings_;
  std::optional<HttpUrl> llm_url_;
  std::uint64_t interval_ms_ = 1000;
  std::uint64_t seq_ = 0;
  std::optional<CpuTimes> last_cpu_;
  std::int64_t last_cpu_ms_ = 0;
  std::int64_t started_ms_;
  Port port_;
  ControlServer control_;
  protocol::FrameDecoder decoder_;
  HostLink link_;
  int wake_fd_ = -1;              // signalfd for SIGIO: the port's host end opened or closed
  bool reported_before_ = false;  // the host has listened before (for the log)
  bool said_waiting_ = false;     // logged that no host listens yet
  bool signalled_ = false;        // SIGIO since the last probe (for the log)
};

}  // namespace llmorch::agent
