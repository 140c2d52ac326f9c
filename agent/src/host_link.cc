#include "host_link.h"

#include <poll.h>

#include <algorithm>

namespace llmorch::agent {

Backoff::Backoff(std::int64_t first_ms, std::int64_t max_ms)
    : first_(std::max<std::int64_t>(1, first_ms)), max_(std::max(first_, max_ms)), next_(first_) {}

std::int64_t Backoff::next_ms() {
  const std::int64_t now = next_;
  next_ = std::min(max_, next_ * 2);
  return now;
}

PortEvent classify_port_events(short revents) {
  if (revents & (POLLERR | POLLNVAL)) return PortEvent::Broken;
  if (revents & POLLHUP) return PortEvent::HostAbsent;
  if (revents & POLLIN) return PortEvent::Readable;
  return PortEvent::None;
}

HostLink::HostLink(std::int64_t now_ms, std::int64_t interval_ms, Backoff backoff)
    : interval_ms_(interval_ms), next_probe_ms_(now_ms), absent_since_ms_(now_ms), backoff_(backoff) {}

HostLink::Due HostLink::due(std::int64_t now_ms) const {
  if (listening_) return now_ms >= next_report_ms_ ? Due::Report : Due::Nothing;
  return now_ms >= next_probe_ms_ ? Due::Probe : Due::Nothing;
}

void HostLink::reported(std::int64_t now_ms) {
  next_report_ms_ += interval_ms_;
  if (next_report_ms_ <= now_ms) next_report_ms_ = now_ms + interval_ms_;
}

bool HostLink::host_absent(std::int64_t now_ms) {
  if (!listening_) return false;
  listening_ = false;
  absent_since_ms_ = now_ms;
  backoff_.reset();
  next_probe_ms_ = now_ms + backoff_.next_ms();
  return true;
}

void HostLink::probed_absent(std::int64_t now_ms) {
  if (listening_) return;
  next_probe_ms_ = now_ms + backoff_.next_ms();
}

void HostLink::probe_now(std::int64_t now_ms) {
  if (!listening_) next_probe_ms_ = std::min(next_probe_ms_, now_ms);
}

void HostLink::host_present(std::int64_t now_ms, std::int64_t first_report_ms) {
  if (listening_) return;
  listening_ = true;
  backoff_.reset();
  next_report_ms_ = std::max(now_ms, first_report_ms);
}

}  // namespace llmorch::agent
