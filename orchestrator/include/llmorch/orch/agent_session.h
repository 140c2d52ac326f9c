// Host side of one guest's agent channel: untrusted bytes in, validated reports out. Pure: no sockets,
// no clock (time is a parameter), so it is unit-tested with simulated time and fuzzed.
// One AgentSession per guest, so one guest's garbage never affects another.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/protocol/frame_decoder.h"
#include "llmorch/protocol/messages.h"

namespace llmorch::orch {

struct AgentSessionLimits {
  double priority_min = 1.0;        // the template's range: reported priorities are clamped into it;
  double priority_max = 100.0;      // a range that is not one (min > max, not finite) drops them
  std::uint64_t floor_max_mib = 0;  // reported floors are clamped to this (memory_floor_max_mib); 0: none
  double rate_per_s = 20.0;         // token bucket for frames of any kind
  double burst = 40.0;
  std::chrono::milliseconds min_ttl{3000};  // a report lives max(min_ttl, ttl_intervals * its interval)
  int ttl_intervals = 3;
  int hostile_errors = 20;  // this many errors within hostile_window marks the guest hostile
  std::chrono::milliseconds hostile_window{10'000};
};

struct AgentSessionCounters {
  std::uint64_t frames_ok = 0;
  std::uint64_t malformed = 0;     // failed to parse or validate
  std::uint64_t oversized = 0;     // longer than protocol::kMaxFrameBytes
  std::uint64_t rate_limited = 0;  // dropped by the token bucket
  std::uint64_t unknown_keys = 0;  // tolerated for forward compatibility, but counted
  std::uint64_t clamped = 0;       // reports whose priority or floor was clamped
};

class AgentSession {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Asserts a positive rate and burst. A priority range that is not one (it comes from metadata, which
  // llmorchd checks before it gets here) is not asserted: reported priorities are then dropped.
  AgentSession(AgentSessionLimits limits, TimePoint now);

  // Consumes bytes from the channel; returns the reports they completed, validated and clamped:
  //  - priority absent stays absent (use the template's); otherwise clamped to [priority_min, priority_max]
  //    (dropped when that is not a range);
  //  - floor_mib clamped to floor_max_mib (the operator's memory_floor_max_mib), or to the guest's own
  //    mem_total when no maximum is set. Not to mem_total otherwise: it shrinks with the balloon, so each
  //    squeeze would lower the floor. A floor above the current size makes the host grow the guest back.
  // Every frame costs a token of the rate limit, and so does every empty line ("\n" resynchronises a
  // sender once; a flood of them is a flood). An oversized line counts as one oversized frame per
  // kMaxFrameBytes + 1 bytes, so an endless line keeps counting.
  std::vector<protocol::Report> feed(std::string_view bytes, TimePoint now);

  // The newest report, or nothing once it is older than its TTL.
  std::optional<protocol::Report> latest(TimePoint now) const;

  const AgentSessionCounters& counters() const { return counters_; }
  // True while errors (malformed, oversized, rate-limited, empty lines beyond the rate limit) exceeded
  // the threshold within the last window.
  bool hostile(TimePoint now) const;
  // The most recent error, for status output; empty if none.
  const std::string& last_error() const { return last_error_; }

 private:
  bool take_token(TimePoint now);
  void charge_empty_lines(std::size_t count, TimePoint now);
  void record_error(TimePoint now, std::string message, std::size_t count = 1);
  protocol::Report sanitise(protocol::Report report);

  AgentSessionLimits limits_;
  protocol::FrameDecoder decoder_;
  AgentSessionCounters counters_;
  double tokens_;
  TimePoint refilled_at_;
  std::optional<protocol::Report> latest_;
  TimePoint latest_at_{};
  std::deque<TimePoint> recent_errors_;  // at most hostile_errors entries
  TimePoint hostile_until_{};
  std::string last_error_;
};

}  // namespace llmorch::orch
