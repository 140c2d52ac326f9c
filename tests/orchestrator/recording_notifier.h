// A Notifier for unit tests of the daemon: records each notification with when it was sent
// (steady_clock), behind a mutex (run() sends from its loop thread while the test reads).
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "llmorch/orch/notifier.h"

namespace llmorch::orch::testing {

class RecordingNotifier : public Notifier {
 public:
  explicit RecordingNotifier(std::chrono::microseconds watchdog = std::chrono::microseconds(0)) : watchdog_(watchdog) {}
  void notify(const std::string& state) override {
    std::lock_guard lock(mu_);
    sent_.emplace_back(std::chrono::steady_clock::now(), state);
  }
  std::chrono::microseconds watchdog_interval() const override { return watchdog_; }

  std::vector<std::string> messages() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [at, m] : sent_) out.push_back(m);
    return out;
  }
  // How many messages equal to `state` were sent at or after `since`.
  int count(const std::string& state, std::chrono::steady_clock::time_point since = {}) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [at, m] : sent_) n += (at >= since && m == state) ? 1 : 0;
    return n;
  }

 private:
  std::chrono::microseconds watchdog_;
  mutable std::mutex mu_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> sent_;
};

}  // namespace llmorch::orch::testing
