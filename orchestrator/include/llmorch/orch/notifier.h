// What llmorchd tells its service manager, in systemd's notify protocol (sd_notify(3)): "READY=1",
// "STATUS=...", "WATCHDOG=1", "RELOADING=1", "STOPPING=1". The daemon decides what to say and when
// (daemon.cc); a Notifier only sends it. The real one (make_sd_notifier, library llmorch_sd) sends to
// $NOTIFY_SOCKET through libsystemd and does nothing when that is unset (not run by systemd); unit tests
// record the messages instead.
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace llmorch::orch {

class Notifier {
 public:
  virtual ~Notifier() = default;
  // One notification: newline-separated VARIABLE=VALUE assignments, e.g. "READY=1\nSTATUS=...".
  virtual void notify(const std::string& state) = 0;
  // How often the service manager expects "WATCHDOG=1" at the latest (systemd's WatchdogSec=, passed
  // as $WATCHDOG_USEC), or zero when it expects none.
  virtual std::chrono::microseconds watchdog_interval() const = 0;
};

// sd_notify(3) to $NOTIFY_SOCKET; the watchdog interval from sd_watchdog_enabled(3), read once here.
// A failure to send is logged once (a service manager that went away is no reason to stop).
std::unique_ptr<Notifier> make_sd_notifier();

}  // namespace llmorch::orch
