// Where the reported priority and memory floor come from, in rising precedence: the kernel command
// line (llmorch.priority=P, llmorch.floor_mib=M, llmorch.priority_at=SECONDS:P), the config file
// (key=value: priority, floor_mib, interval_ms, llm_metrics), and `llmorch-agent set-priority|set-floor`
// sent to the running agent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llmorch::agent {

struct Layer {
  std::optional<double> priority;
  std::optional<std::uint64_t> floor_mib;
};

struct ScheduledPriority {  // llmorch.priority_at=SECONDS:P
  double after_s = 0;
  double priority = 1;
};

struct CmdlineSettings {
  Layer layer;
  std::vector<ScheduledPriority> scheduled;
};

struct FileSettings {
  Layer layer;
  std::optional<std::uint64_t> interval_ms;
  std::optional<std::string> llm_metrics;
};

// Valid priorities are finite and in (0, protocol::kMaxPriority]; invalid values are skipped and
// described in `warnings`.
CmdlineSettings parse_cmdline(const std::string& cmdline, std::vector<std::string>* warnings);
FileSettings parse_config_file(const std::string& text, std::vector<std::string>* warnings);
std::optional<double> parse_priority(std::string_view text);
std::optional<std::uint64_t> parse_floor(std::string_view text);

class Settings {
 public:
  Settings(CmdlineSettings cmdline, Layer file) : cmdline_(std::move(cmdline)), file_(file) {}

  // Applies llmorch.priority_at entries that are due `elapsed_s` after start: each replaces the
  // command-line priority (the file and set-priority still take precedence, as for llmorch.priority).
  void advance(double elapsed_s);
  void set_runtime_priority(double p) { runtime_.priority = p; }
  void set_runtime_floor(std::uint64_t mib) { runtime_.floor_mib = mib; }

  std::optional<double> priority() const;
  std::uint64_t floor_mib() const;

 private:
  CmdlineSettings cmdline_;
  Layer file_;
  Layer runtime_;
};

}  // namespace llmorch::agent
