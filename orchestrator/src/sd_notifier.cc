// The real Notifier: libsystemd's sd_notify. The only code that includes <systemd/sd-daemon.h>.
#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstring>

#include <spdlog/spdlog.h>

#include "llmorch/orch/notifier.h"

namespace llmorch::orch {
namespace {

class SdNotifier final : public Notifier {
 public:
  SdNotifier() {
    std::uint64_t usec = 0;
    const int rc = sd_watchdog_enabled(0, &usec);
    if (rc > 0) watchdog_ = std::chrono::microseconds(usec);
    else if (rc < 0)
      spdlog::warn("the service manager's watchdog settings are unusable ({}); sending no watchdog pings",
                   std::strerror(-rc));
  }
  void notify(const std::string& state) override {
    const int rc = sd_notify(0, state.c_str());
    if (rc < 0 && !failed_) {
      failed_ = true;
      spdlog::warn(
          "cannot notify the service manager through $NOTIFY_SOCKET ({}); systemd may time out "
          "waiting for READY=1 or for the watchdog",
          std::strerror(-rc));
    }
  }
  std::chrono::microseconds watchdog_interval() const override { return watchdog_; }

 private:
  std::chrono::microseconds watchdog_{0};
  bool failed_ = false;
};

}  // namespace

std::unique_ptr<Notifier> make_sd_notifier() { return std::make_unique<SdNotifier>(); }

}  // namespace llmorch::orch
