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
    throw std::invalid_argument("priority #" + std::to_string(index + 1) + " must be a finite number > 0, got " +
                                number(p));
  }
}

}  // namespace

std::vector<WeightTerm> weight_terms(std::span<const double> priorities, double alpha) {
  check_alpha(alpha);
  const double equal_share = 1.0 / static_cast<double>(priorities.size());
  std::vector<WeightTerm> terms;
  terms.reserve(priorities.size());
  for (std::size_t i = 0; i < priorities.size(); ++i) {
    check_priority(priorities[i], i);
    const WeightTerm t{.priority_part = alpha / priorities[i], .equal_part = (1.0 - alpha) * equal_share, .raw = 0};
    terms.push_back(t);
    terms.back().raw = t.priority_part + t.equal_part;
  }
  return terms;
}

std::vector<double> compute_weights(std::span<const double> priorities, double alpha) {
  const std::vector<WeightTerm> terms = weight_terms(priorities, alpha);
  double sum = 0.0;
  for (const WeightTerm& t : terms) sum += t.raw;
  // 1/p overflows for priorities near the smallest double; say so rather than return NaN.
  if (!terms.empty() && !(std::isfinite(sum) && sum > 0.0)) {
    throw std::invalid_argument("priorities span too wide a range to weigh; use values like 1..1000");
  }
  std::vector<double> weights;
  weights.reserve(terms.size());
  for (const WeightTerm& t : terms) weights.push_back(t.raw / sum);
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
