// libFuzzer target for everything that reads a guest's bytes on the host: FrameDecoder, parse_report
// and AgentSession::feed. The first input byte picks how the rest is chunked and how far time advances,
// so split frames, rate limiting and expiry get exercised too. Besides crashes (ASan/UBSan), it checks
// the invariants the orchestrator relies on.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "llmorch/orch/agent_session.h"
#include "llmorch/protocol/codec.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_report(const llmorch::protocol::Report& r, const llmorch::orch::AgentSessionLimits& l) {
  if (r.priority) check(std::isfinite(*r.priority) && *r.priority >= l.priority_min && *r.priority <= l.priority_max);
  check(std::isfinite(r.cpu_pct) && r.cpu_pct >= 0 && r.cpu_pct <= 100);
  check(r.mem_avail_kib <= r.mem_total_kib);
  check(r.floor_mib <= (l.floor_max_mib > 0 ? l.floor_max_mib : r.mem_total_kib / 1024));
  check(r.interval_ms >= llmorch::protocol::kMinIntervalMs && r.interval_ms <= llmorch::protocol::kMaxIntervalMs);
  // What the host accepted must survive a round trip through the encoder.
  std::string line = llmorch::protocol::encode(r);
  line.pop_back();
  check(llmorch::protocol::parse_report(line).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  const auto step = std::chrono::milliseconds(data[0] * 10);
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  // Every frame on its own, as the host command parser sees them too.
  llmorch::protocol::FrameDecoder decoder;
  for (const auto& frame : decoder.feed(input)) {
    check(frame.oversized || frame.line.size() <= llmorch::protocol::kMaxFrameBytes);
    (void)llmorch::protocol::parse_host_command(frame.line);
  }
  check(decoder.pending() <= llmorch::protocol::kMaxFrameBytes + 1);

  llmorch::orch::AgentSessionLimits limits;
  limits.priority_min = 2;
  limits.priority_max = 50;
  limits.floor_max_mib = (size > 0 && (data[0] & 1)) ? 4096 : 0;  // both clamping rules
  auto now = std::chrono::steady_clock::time_point{};
  llmorch::orch::AgentSession session(limits, now);
  std::uint64_t accepted = 0;
  for (std::size_t pos = 0; pos < input.size(); pos += chunk) {
    now += step;
    for (const auto& r : session.feed(input.substr(pos, chunk), now)) {
      check_report(r, limits);
      ++accepted;
    }
    if (auto latest = session.latest(now)) check_report(*latest, limits);
  }
  check(session.counters().frames_ok == accepted);
  return 0;
}
