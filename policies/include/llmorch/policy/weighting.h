// Priority weights: w_i ∝ α·(1/p_i) + (1−α)·(1/n), normalised so that Σ w_i = 1.
// Pure functions; invalid input throws std::invalid_argument with a message naming the bad value.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace llmorch::policy {

// The default trade-off between priority (α = 1) and an equal split (α = 0).
inline constexpr double kDefaultAlpha = 0.8;

// One weight per priority, in the same order, summing to 1 (empty in, empty out).
// priorities: finite and > 0; 1 is the most important, larger is less important.
// alpha: in [0, 1]. α = 0 gives every VM 1/n; α = 1 gives weights proportional to 1/p.
// A smaller (better) priority never gets a smaller weight.
// Example: priorities {2, 1}, α 0.8 -> {0.3571, 0.6429}.
std::vector<double> compute_weights(std::span<const double> priorities, double alpha = kDefaultAlpha);

// The terms of one VM's weight before normalisation: w_i = raw_i / Σ raw.
struct WeightTerm {
  double priority_part = 0;  // α / p_i
  double equal_part = 0;     // (1 − α) / n
  double raw = 0;            // priority_part + equal_part
};
// The terms compute_weights normalises, in the same order and with the same checks (it throws
// std::invalid_argument for what compute_weights rejects). For showing the arithmetic (llmorch explain).
std::vector<WeightTerm> weight_terms(std::span<const double> priorities, double alpha = kDefaultAlpha);

// cgroup v1 cpu.shares bounds (libvirt's <cputune><shares>).
inline constexpr int kMinCpuShares = 2;
inline constexpr int kMaxCpuShares = 262144;

// libvirt cpu_shares for a VM of `weight` among `n` VMs: round(weight · n · 1024), clamped to
// [kMinCpuShares, kMaxCpuShares]. An equal split gives every VM the kernel default 1024, and (inside
// the clamp range) ratios of shares equal ratios of weights. weight: finite, >= 0; n >= 1.
int cpu_shares(double weight, std::size_t n);

}  // namespace llmorch::policy
