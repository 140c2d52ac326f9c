// When the agent talks to the host, as pure decisions (no clock, no file descriptor): the agent's loop
// tells HostLink what poll(), write() and probes found and what time it is; HostLink says what is due
// and how long the loop may sleep.
//
// The virtio-serial port has two states that matter here (drivers/char/virtio_console.c):
//   host listening  a host process (llmorchd) holds the channel's socket: reads block, writes go through.
//   host absent     nobody holds it (llmorchd stopped, restarting, or not started yet): poll() reports
//                   POLLHUP *and* POLLIN, read() returns 0 at once and write() EAGAIN. Nothing can be
//                   waited for on the port itself, so a loop that keeps it in its poll set spins.
// While the host is absent the agent takes the port out of its poll set, stops reporting (a report
// nobody reads is stale before anyone could read it) and probes the port after growing delays
// (Backoff). The kernel also raises SIGIO when the host end opens; the agent turns that into an
// immediate probe, so the backoff only bounds how late it notices if the signal never comes. When the
// host is back, a fresh report is due at once.
#pragma once

#include <cstdint>

namespace llmorch::agent {

// Delays between probes of an absent host: first_ms, then doubling, at most max_ms.
class Backoff {
 public:
  Backoff(std::int64_t first_ms, std::int64_t max_ms);
  // The delay to wait now; the next call returns twice as much, up to max_ms.
  std::int64_t next_ms();
  void reset() { next_ = first_; }

 private:
  std::int64_t first_, max_, next_;
};

enum class PortEvent {
  None,        // nothing to do
  Readable,    // the host sent bytes
  HostAbsent,  // POLLHUP: no host process holds the channel (possibly with POLLIN: read returns 0)
  Broken,      // POLLERR / POLLNVAL: the port is unusable; close it and rescan
};
// What poll()'s revents on the port mean. POLLHUP wins over POLLIN: without a host the driver reports
// both, and a loop that reads on POLLIN then spins (read() returns 0 at once).
PortEvent classify_port_events(short revents);

class HostLink {
 public:
  enum class Due { Nothing, Report, Probe };

  // Starts as "host absent" with a probe due at now_ms: the first probe finds out.
  HostLink(std::int64_t now_ms, std::int64_t interval_ms, Backoff backoff);

  bool host_listening() const { return listening_; }
  // What is due at now_ms (Nothing: sleep until wake_at()).
  Due due(std::int64_t now_ms) const;
  // The next report (host listening) or the next probe (host absent).
  std::int64_t wake_at() const { return listening_ ? next_report_ms_ : next_probe_ms_; }
  // When the host was last seen to go away (or the link was created); for the log.
  std::int64_t absent_since_ms() const { return absent_since_ms_; }

  // A report was sent or dropped at now_ms: the next one is due an interval later. After a stall the
  // schedule restarts from now instead of bursting to catch up.
  void reported(std::int64_t now_ms);
  // The host went away (POLLHUP, a write that found no host, the port vanished). True when it was
  // listening until now (log it); the first probe is due after the backoff's first delay.
  bool host_absent(std::int64_t now_ms);
  // A probe found nobody (or no port): the next probe waits longer.
  void probed_absent(std::int64_t now_ms);
  // The host end opened (SIGIO): probe now, whatever the backoff said.
  void probe_now(std::int64_t now_ms);
  // A probe found the host listening: a report is due at once (not before first_report_ms: the agent
  // needs a moment to measure CPU use if it has just sampled it), then every interval.
  void host_present(std::int64_t now_ms, std::int64_t first_report_ms);
  void set_interval(std::int64_t interval_ms) { interval_ms_ = interval_ms; }

 private:
  bool listening_ = false;
  std::int64_t interval_ms_;
  std::int64_t next_report_ms_ = 0;
  std::int64_t next_probe_ms_;
  std::int64_t absent_since_ms_;
  Backoff backoff_;
};

}  // namespace llmorch::agent
