#include "llmorch/policy/weighting.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace llmorch::policy {

namespace {

std::string number(double v) {
  std::ostringstream os;  // shortest readable form: "-1", "nan", "inf", "1e-320"
  os << v;
  return os.str();
}

void check_alpha(double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) {  // also rejects NaN
    throw std::invalid_argument("alpha must be a number in [0, 1], got " + number(alpha));
  }
}

void check_priority(double p, std::size_t index) {
  if (!(p > 0.0) || !std::isfinite(p)) {
    throw std::invalid_argument("priority #" + std::to_string(index + 1) +
                                " must be a finite number > 0, got " + number(p));
  }
}

}  // namespace

std::vector<double> compute_weights(std::span<const double> priorities, double alpha) {
  check_alpha(alpha);
  const double equal_share = 1.0 / static_cast<double>(priorities.size());
  std::vector<double> weights;
  weights.reserve(priorities.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < priorities.size(); ++i) {
    check_priority(priorities[i], i);
    const double raw = alpha / priorities[i] + (1.0 - alpha) * equal_share;
    weights.push_back(raw);
    sum += raw;
  }
  // 1/p overflows for priorities near the smallest double; say so rather than return NaN.
  if (!priorities.empty() && !(std::isfinite(sum) && sum > 0.0)) {
    throw std::invalid_argument("priorities span too wide a range to weigh; use values like 1..1000");
  }
  for (double& w : weights) w /= sum;
  return weights;
}

int cpu_shares(double weight, std::size_t n) {
  if (!(weight >= 0.0) || !std::isfinite(weight)) {
    throw std::invalid_argument("weight must be a finite number >= 0, got " + number(weight));
  }
  if (n == 0) throw std::invalid_argument("cpu_shares needs at least one VM (n >= 1)");
  // Clamp in double before converting: weight * n * 1024 may not fit in an int.
  const double shares = std::round(weight * static_cast<double>(n) * 1024.0);
  return static_cast<int>(std::clamp(shares, double{kMinCpuShares}, double{kMaxCpuShares}));
}

}  // namespace llmorch::policy
