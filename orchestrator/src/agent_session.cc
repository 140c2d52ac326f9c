#include "llmorch/orch/agent_session.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "llmorch/protocol/codec.h"

namespace llmorch::orch {

using std::chrono::duration;
using std::chrono::milliseconds;

AgentSession::AgentSession(AgentSessionLimits limits, TimePoint now)
    : limits_(limits), tokens_(limits.burst), refilled_at_(now) {
  assert(limits_.rate_per_s > 0 && limits_.burst >= 1 && limits_.hostile_errors >= 1);
}

std::vector<protocol::Report> AgentSession::feed(std::string_view bytes, TimePoint now) {
  std::vector<protocol::Report> reports;
  const std::uint64_t empty_before = decoder_.empty_lines();
  std::vector<protocol::Frame> frames = decoder_.feed(bytes);
  charge_empty_lines(static_cast<std::size_t>(decoder_.empty_lines() - empty_before), now);
  for (protocol::Frame& frame : frames) {
    if (!take_token(now)) {
      ++counters_.rate_limited;
      record_error(now, "guest sends more than the rate limit allows; frames dropped");
      continue;
    }
    if (frame.oversized) {
      ++counters_.oversized;
      record_error(now, "frame longer than " + std::to_string(protocol::kMaxFrameBytes) + " bytes");
      continue;
    }
    protocol::ParseStats stats;
    auto parsed = protocol::parse_report(frame.line, &stats);
    counters_.unknown_keys += stats.unknown_keys;
    if (!parsed) {
      ++counters_.malformed;
      record_error(now, parsed.error());
      continue;
    }
    ++counters_.frames_ok;
    latest_ = sanitise(parsed.value());
    latest_at_ = now;
    reports.push_back(*latest_);
  }
  return reports;
}

std::optional<protocol::Report> AgentSession::latest(TimePoint now) const {
  if (!latest_) return std::nullopt;
  milliseconds ttl = std::max(limits_.min_ttl,
                              milliseconds(latest_->interval_ms * static_cast<std::uint64_t>(limits_.ttl_intervals)));
  if (now - latest_at_ > ttl) return std::nullopt;
  return latest_;
}

bool AgentSession::hostile(TimePoint now) const { return now < hostile_until_; }

bool AgentSession::take_token(TimePoint now) {
  // A clock that goes backwards (it should not) refills nothing.
  double elapsed_s = std::max(0.0, duration<double>(now - refilled_at_).count());
  tokens_ = std::min(limits_.burst, tokens_ + elapsed_s * limits_.rate_per_s);
  refilled_at_ = std::max(refilled_at_, now);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

// Empty lines share the frames' token bucket; those beyond it are rate-limited errors, counted in one go
// (a read of 64 KiB of "\n" must not cost 64 Ki error records).
void AgentSession::charge_empty_lines(std::size_t count, TimePoint now) {
  while (count > 0 && take_token(now)) --count;  // stops at the first missing token
  if (count == 0) return;
  counters_.rate_limited += count;
  record_error(now, "guest sends empty lines beyond the rate limit (" + std::to_string(count) + " in one read)", count);
}

void AgentSession::record_error(TimePoint now, std::string message, std::size_t count) {
  last_error_ = std::move(message);
  const auto keep = static_cast<std::size_t>(limits_.hostile_errors);
  for (std::size_t i = 0; i < std::min(count, keep); ++i) recent_errors_.push_back(now);
  while (recent_errors_.size() > keep) recent_errors_.pop_front();
  if (recent_errors_.size() == static_cast<std::size_t>(limits_.hostile_errors) &&
      now - recent_errors_.front() <= limits_.hostile_window)
    hostile_until_ = now + limits_.hostile_window;
}

protocol::Report AgentSession::sanitise(protocol::Report r) {
  bool clamped = false;
  if (r.priority) {
    const double lo = limits_.priority_min, hi = limits_.priority_max;
    if (std::isfinite(lo) && std::isfinite(hi) && lo <= hi) {  // std::clamp is undefined otherwise
      const double p = std::clamp(*r.priority, lo, hi);
      clamped |= p != *r.priority;
      r.priority = p;
    } else {
      r.priority.reset();  // no range the operator allows: the template's priority stands
      clamped = true;
    }
  }
  // Cap at the VM's maximum memory, not at the guest's MemTotal: MemTotal shrinks with the balloon (and
  // sits below the balloon size), so capping by it would lower the floor with every squeeze.
  const std::uint64_t floor_cap = limits_.floor_max_mib > 0 ? limits_.floor_max_mib : r.mem_total_kib / 1024;
  if (r.floor_mib > floor_cap) {
    r.floor_mib = floor_cap;
    clamped = true;
  }
  if (clamped) ++counters_.clamped;
  return r;
}

}  // namespace llmorch::orch
