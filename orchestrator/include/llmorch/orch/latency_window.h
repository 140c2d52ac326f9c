// The last N latency samples (ms) and their nearest-rank percentiles: llmorchd's report-to-apply figure
// (status.json "daemon.report_to_apply_ms"). Pure bookkeeping, no clock.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <optional>
#include <vector>

namespace llmorch::orch {

struct LatencySummary {
  std::size_t n = 0;                    // samples in the window
  std::optional<double> p50, p99, max;  // empty while n == 0
};

class LatencyWindow {
 public:
  explicit LatencyWindow(std::size_t capacity) : capacity_(capacity) { assert(capacity > 0); }

  // Adds a sample; once full, it replaces the oldest.
  void add(double ms) {
    if (samples_.size() < capacity_) {
      samples_.push_back(ms);
    } else {
      samples_[next_] = ms;
    }
    next_ = (next_ + 1) % capacity_;
  }

  std::size_t size() const { return samples_.size(); }

  LatencySummary summary() const {
    LatencySummary s;
    s.n = samples_.size();
    if (samples_.empty()) return s;
    std::vector<double> sorted = samples_;
    std::sort(sorted.begin(), sorted.end());
    s.p50 = nearest_rank(sorted, 0.50);
    s.p99 = nearest_rank(sorted, 0.99);
    s.max = sorted.back();
    return s;
  }

 private:
  // The smallest sample with at least q of the samples at or below it.
  static double nearest_rank(const std::vector<double>& sorted, double q) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::max<std::size_t>(rank, 1) - 1];
  }

  std::size_t capacity_;
  std::vector<double> samples_;
  std::size_t next_ = 0;  // where the next sample goes once full
};

}  // namespace llmorch::orch
