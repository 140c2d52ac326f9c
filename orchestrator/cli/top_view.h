// llmorch top's frame: llmorchd's status file(s) -> the lines of one screen. Pure (no terminal, no
// clock, no file): cmd_top.cc reads status.json every interval and draws what render_top returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llmorch/orch/status_file.h"

namespace llmorch::cli {

struct TopInput {
  const orch::StatusFile* status = nullptr;    // status.json now; null when none could be read
  const orch::StatusFile* previous = nullptr;  // an older status.json (another last_tick_at): CPU %
  std::string why_not = {};                    // empty: llmorchd runs; else why it does not ("process 12 is gone")
  double age_s = -1;                           // seconds since status->last_tick_at; < 0 unknown
  std::string clock = {};                      // the time shown in the header ("14:03:02")
  bool live = false;                           // redrawn on a terminal: the summary says "(q quits)"
};

// One VM's row, before formatting (what the frame shows, in the order it shows it).
struct TopRow {
  std::string name;
  double priority = 0;
  std::string source;  // "agent", "template", "stale", "hostile"
  double weight = 0;
  int shares = 0;
  std::optional<double> cpu_pct;  // % of one host CPU over the two files; null without two readings
  std::optional<int> vcpus_online;
  std::optional<std::uint64_t> balloon_mib;  // actual
  std::uint64_t floor_mib = 0;
  std::optional<double> report_age_s;
  std::string flags;  // "hostile,flapping,unresponsive,..." or "-"
};

// The rows of `in`, heaviest weight first (then by name).
std::vector<TopRow> top_rows(const TopInput& in);

// The frame: a header line (llmorchd, health, alpha, interval, tick age, clock), a summary line (VMs,
// flagged VMs, total CPU %), a blank line, the column titles and one line per VM. Every line is cut to
// `width` columns (at least 20); nothing is padded past it.
std::vector<std::string> render_top(const TopInput& in, std::size_t width);

}  // namespace llmorch::cli
