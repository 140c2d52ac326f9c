// Time as the daemon sees it, behind an interface so tests run on simulated time.
#pragma once

#include <chrono>

namespace llmorch::orch {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;                               // monotonic: ages, dwell, ticks
  virtual std::chrono::system_clock::time_point wall() const = 0;  // calendar: status timestamps
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point wall() const override { return std::chrono::system_clock::now(); }
};

}  // namespace llmorch::orch
