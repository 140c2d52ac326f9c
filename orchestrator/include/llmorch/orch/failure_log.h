// Logs that stay readable: a failure that repeats every tick for the same thing (a lever the driver does
// not support, an agent channel that is not connected) is logged when it starts, again when its message
// changes, and when it ends, with how many times it failed; not once per tick (1,000 VMs on a driver
// without cpu_shares used to write about 1,800 lines per tick). Pure: the caller logs.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace llmorch::orch {

class FailureLog {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Ended {
    std::string key;
    std::string message;     // the last failure's
    std::uint64_t failures;  // how many times it failed in a row
    TimePoint since;         // the first of them
  };

  // Records this tick's failure of `key`. True when it should be logged: the first failure, or one whose
  // message differs from the last; false while it only repeats (counted).
  bool failed(const std::string& key, const std::string& message, TimePoint now);
  // Ends a tick: the keys that failed before but not during this tick (they succeeded, or are no longer
  // tried), to be logged once as over.
  std::vector<Ended> end_tick();
  std::size_t failing() const { return entries_.size(); }

 private:
  struct Entry {
    std::string message;
    std::uint64_t failures = 0;
    TimePoint since{};
    bool this_tick = false;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace llmorch::orch
