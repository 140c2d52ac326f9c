// Dividing a host's CPUs among VMs by weight: whole-CPU apportionment within per-VM bounds,
// load-aware water-filling. (Hysteresis lives in the reconciler: the share tolerance, the per-node
// re-pin dwell and the per-VM priority dwell; see orchestrator/include/llmorch/orch/reconciler.h.)
// Pure functions; invalid input throws std::invalid_argument with a message naming the bad value.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "llmorch/policy/types.h"
#include "llmorch/policy/weighting.h"

namespace llmorch::policy {

// Whole CPUs for each VM, in proportion to `weights`, each within [min[i], max[i]].
// weights: finite and > 0 (need not sum to 1). total >= 0; 0 <= min[i] <= max[i]. Equal sizes.
//
// Normal case (Σmin <= total <= Σmax): the result sums to exactly `total`. Each VM's ideal is
// x_i = clamp(λ·w_i, min_i, max_i) with λ chosen so that Σx_i = total (a min is a floor, not a bonus;
// what a capped VM cannot take goes to the others by weight). Each VM gets floor(x_i); the CPUs left
// go one each by largest remainder, ties broken by higher weight, then lower index.
// Too few CPUs (Σmin > total): VMs get their min in order of weight (highest first, ties by lower
// index) until the CPUs run out; the last one served may get less than its min, later ones 0.
// Too many CPUs (Σmax < total): every VM gets its max; total − Σmax CPUs stay unassigned.
// The result never sums to more than `total`. O(n log n).
std::vector<int> apportion(std::span<const double> weights, int total, std::span<const int> min,
                           std::span<const int> max);

// Weighted max-min fairness ("water-filling"): shares capacity by weight, but never gives a VM more
// than its demand; what a VM does not want goes to the others, again by weight.
// weights: finite and > 0; demand: >= 0 (infinity = unbounded); capacity: finite, >= 0.
// The result sums to min(capacity, Σdemand). When every demand is at least capacity·w_i/Σw
// (full contention) it is exactly capacity·w_i/Σw. O(n log n).
std::vector<double> waterfill(std::span<const double> weights, std::span<const double> demand, double capacity);

// One division of the host's CPUs; every vector is in the order of the VMs given to divide().
struct Division {
  std::vector<std::string> names;
  std::vector<double> weights;     // compute_weights of the priorities, Σ = 1
  std::vector<double> share_cpus;  // fractional CPUs: waterfill(weights, demand, total); ignores min
  std::vector<int> cpus;           // whole CPUs: apportion(weights, total, min, demand bound)
};

// Divides `total_cpus` among `vms` by the weighting formula and their load.
// A VM's demand is demand_cpus capped at max_cpus (demand_cpus < 0: unknown, so max_cpus).
// - share_cpus: waterfill(weights, demand, total_cpus).
// - cpus: apportion(weights, total_cpus, min_cpus, clamp(ceil(demand), min_cpus, max_cpus)); so a
//   VM keeps its min, an idle VM's CPUs go to the busy ones by weight, and when every VM wants all it
//   can use (full contention) this is the plain formula apportion(weights, total, min, max).
//   CPUs that no VM wants stay unassigned (Σcpus < total_cpus).
// Ties are broken by name (then by position), so the result does not depend on the order of `vms`
// except for VMs with equal names; passing them already sorted by name (as from a std::map) skips a
// sort. O(n log n). Throws std::invalid_argument naming the VM for a bad priority,
// min_cpus < 0, max_cpus < min_cpus, a NaN demand, or total_cpus < 0.
Division divide(std::span<const VmDemand> vms, int total_cpus, double alpha = kDefaultAlpha);

}  // namespace llmorch::policy
