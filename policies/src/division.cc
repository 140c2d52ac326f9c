#include "llmorch/policy/division.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string_view>

namespace llmorch::policy {

namespace {

std::vector<std::size_t> iota_indices(std::size_t n) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  return order;
}

void check_weights(std::span<const double> weights) {
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (!(weights[i] > 0.0) || !std::isfinite(weights[i])) {
      throw std::invalid_argument("weight #" + std::to_string(i + 1) + " must be finite and > 0");
    }
  }
}

void check_same_size(std::size_t a, std::size_t b, const char* what) {
  if (a != b) {
    throw std::invalid_argument(std::string(what) + " has " + std::to_string(b) + " entries but there are " +
                                std::to_string(a) + " weights");
  }
}

// Σmin > total: mins in order of weight (highest first, ties by lower index) until CPUs run out.
std::vector<int> mins_by_weight(std::span<const double> weights, int total, std::span<const int> min) {
  std::vector<std::size_t> order = iota_indices(weights.size());
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return weights[a] > weights[b]; });
  std::vector<int> cpus(weights.size(), 0);
  int left = total;
  for (std::size_t i : order) {
    cpus[i] = std::min(min[i], left);
    left -= cpus[i];
  }
  return cpus;
}

// The λ where f(λ) = Σ clamp(λ·w_i, lo_i, hi_i) reaches total; needs Σlo <= total < Σhi. f is piecewise
// linear, continuous and non-decreasing: VM i grows with slope w_i between its breakpoints lo_i/w_i and
// hi_i/w_i. The segment where f reaches total is found by selection rather than by sorting the
// breakpoints: evaluate f at the median breakpoint still inside the bracket (left, right), keep the half
// that holds the crossing, and settle every VM whose breakpoints both lie outside the bracket (within it,
// it is constant or linear). A round costs the breakpoints and unsettled VMs left, and halves the
// breakpoints: O(n) expected, where sorting the 2n breakpoints was O(n log n) (and 3x slower at 10,000).
double crossing(std::span<const double> weights, double total, std::span<const double> lo, std::span<const double> hi) {
  struct Open {  // a VM not settled yet: its breakpoints a, b and what f needs, side by side
    double a, b, w, lo, hi;
  };
  const std::size_t n = weights.size();
  std::vector<double> points;
  points.reserve(2 * n);
  std::vector<Open> open;
  open.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    open.push_back({lo[i] / weights[i], hi[i] / weights[i], weights[i], lo[i], hi[i]});
    points.push_back(open.back().a);
    points.push_back(open.back().b);
  }
  double left = 0.0, right = std::numeric_limits<double>::infinity();
  double fixed = 0.0, slope = 0.0;  // within (left, right), the settled VMs add fixed + slope·λ
  const auto settle = [&] {
    std::erase_if(open, [&](const Open& v) {
      if (v.b <= left) fixed += v.hi;
      else if (v.a >= right) fixed += v.lo;
      else if (v.a <= left && v.b >= right) slope += v.w;
      else return false;
      return true;
    });
    std::erase_if(points, [&](double p) { return p <= left || p >= right; });
  };
  settle();
  while (!points.empty()) {  // a VM still open has a breakpoint strictly inside the bracket
    const auto mid = points.begin() + static_cast<std::ptrdiff_t>(points.size() / 2);
    std::nth_element(points.begin(), mid, points.end());
    const double m = *mid;
    double f = fixed + slope * m;
    for (const Open& v : open) f += std::clamp(m * v.w, v.lo, v.hi);
    (f >= total ? right : left) = m;
    settle();
  }
  // Every VM is settled: f is linear on the bracket and reaches total in it (Σhi > total: slope > 0).
  assert(open.empty() && slope > 0.0);
  return std::clamp((total - fixed) / slope, left, right);
}

// Fractional ideal x_i = clamp(λ·w_i, lo_i, hi_i) with Σx_i = total; needs Σlo <= total < Σhi.
std::vector<double> bounded_proportional(std::span<const double> weights, int total, std::span<const int> lo,
                                         std::span<const int> hi) {
  const std::vector<double> lo_d(lo.begin(), lo.end()), hi_d(hi.begin(), hi.end());
  const double lambda = crossing(weights, total, lo_d, hi_d);
  std::vector<double> x(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) x[i] = std::clamp(lambda * weights[i], lo_d[i], hi_d[i]);
  return x;
}

// Whole CPUs from a fractional ideal: floors, then one more each by largest remainder (ties: higher
// weight, then lower index) for VMs still below their max, until the sum is total.
std::vector<int> largest_remainder(std::span<const double> x, std::span<const double> weights, int total,
                                   std::span<const int> hi) {
  struct Candidate {
    double remainder;
    double weight;
    std::size_t index;
  };
  std::vector<int> cpus(x.size());
  std::vector<Candidate> below_max;
  std::int64_t assigned = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    cpus[i] = static_cast<int>(std::floor(x[i]));
    assigned += cpus[i];
    if (cpus[i] < hi[i]) below_max.push_back({x[i] - cpus[i], weights[i], i});
  }
  // In exact arithmetic 0 <= total - assigned < |below_max|; the clamp keeps rounding error in x from
  // ever handing out more than total.
  assert(total - assigned >= 0 && total - assigned <= std::ssize(below_max));
  const std::int64_t left = std::clamp<std::int64_t>(total - assigned, 0, std::ssize(below_max));
  // A strict total order, so the `left` best candidates are one well-defined set; nth_element finds
  // them in O(n) without sorting the rest.
  const auto better = [](const Candidate& a, const Candidate& b) {
    if (a.remainder != b.remainder) return a.remainder > b.remainder;
    if (a.weight != b.weight) return a.weight > b.weight;
    return a.index < b.index;
  };
  std::nth_element(below_max.begin(), below_max.begin() + left, below_max.end(), better);
  for (std::int64_t k = 0; k < left; ++k) ++cpus[below_max[k].index];
  return cpus;
}

}  // namespace

std::vector<int> apportion(std::span<const double> weights, int total, std::span<const int> min,
                           std::span<const int> max) {
  check_weights(weights);
  check_same_size(weights.size(), min.size(), "min");
  check_same_size(weights.size(), max.size(), "max");
  if (total < 0) throw std::invalid_argument("total CPUs must be >= 0, got " + std::to_string(total));
  std::int64_t sum_min = 0;
  std::int64_t sum_max = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (min[i] < 0 || max[i] < min[i]) {
      throw std::invalid_argument("bounds #" + std::to_string(i + 1) + " need 0 <= min <= max, got min " +
                                  std::to_string(min[i]) + ", max " + std::to_string(max[i]));
    }
    sum_min += min[i];
    sum_max += max[i];
  }
  if (sum_min >= total) return mins_by_weight(weights, total, min);
  if (sum_max <= total) return {max.begin(), max.end()};
  return largest_remainder(bounded_proportional(weights, total, min, max), weights, total, max);
}

std::vector<double> waterfill(std::span<const double> weights, std::span<const double> demand, double capacity) {
  check_weights(weights);
  check_same_size(weights.size(), demand.size(), "demand");
  for (std::size_t i = 0; i < demand.size(); ++i) {
    if (!(demand[i] >= 0.0)) {
      throw std::invalid_argument("demand #" + std::to_string(i + 1) + " must be >= 0");
    }
  }
  if (!(capacity >= 0.0) || !std::isfinite(capacity)) {
    throw std::invalid_argument("capacity must be finite and >= 0");
  }
  // The common case on a host that is not saturated: nobody is short, everybody gets its demand.
  if (std::accumulate(demand.begin(), demand.end(), 0.0) <= capacity) return {demand.begin(), demand.end()};
  // Max-min fair by weight: every VM gets min(level·w_i, demand_i), the level where that sums to the
  // capacity (a VM whose demand fits below the level gets exactly its demand).
  const std::vector<double> zero(weights.size(), 0.0);
  const double level = crossing(weights, capacity, zero, demand);
  std::vector<double> share(weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i) share[i] = std::min(level * weights[i], demand[i]);
  return share;
}

namespace {

void check_vm(const VmDemand& vm) {
  const auto fail = [&](const char* what) { throw std::invalid_argument("VM '" + vm.name + "': " + what); };
  if (vm.min_cpus < 0) fail("min_cpus must be >= 0");
  if (vm.max_cpus < vm.min_cpus) fail("max_cpus must be >= min_cpus");
  if (std::isnan(vm.demand_cpus)) fail("demand_cpus is NaN");
  if (!(vm.priority > 0.0) || !std::isfinite(vm.priority)) fail("priority must be a finite number > 0");
}

// A VM's demand in CPUs: what it reported, at most its max; unknown (< 0) means its max.
double demand_of(const VmDemand& vm) {
  return vm.demand_cpus < 0.0 ? vm.max_cpus : std::min(vm.demand_cpus, double(vm.max_cpus));
}

// The most whole CPUs worth giving a VM for its demand: enough to cover it, within its bounds.
int cpu_bound_of(const VmDemand& vm, double demand) {
  // A hair of tolerance so that a demand of 2.0000000001 (sampling noise) does not ask for 3 CPUs.
  const double whole = std::ceil(demand - 1e-9);
  return static_cast<int>(std::clamp(whole, double(vm.min_cpus), double(vm.max_cpus)));
}

// Length of the prefix that every name shares (0 for no VMs).
std::size_t common_prefix_length(std::span<const VmDemand> vms) {
  if (vms.empty()) return 0;
  std::string_view prefix = vms.front().name;
  for (const VmDemand& vm : vms) {
    const std::string_view name = vm.name;
    if (name.starts_with(prefix)) continue;  // the usual case: one memcmp
    const auto [differs, unused] = std::mismatch(prefix.begin(), prefix.end(), name.begin(), name.end());
    prefix = prefix.substr(0, static_cast<std::size_t>(differs - prefix.begin()));
  }
  return prefix.size();
}

// Up to 8 bytes of `name` from `from`, big-endian and zero-padded: comparing keys as integers
// orders names as std::string does (unsigned bytes), except that equal keys may still differ later.
std::uint64_t key_at(std::string_view name, std::size_t from) {
  unsigned char bytes[8] = {};
  if (from < name.size()) std::memcpy(bytes, name.data() + from, std::min<std::size_t>(8, name.size() - from));
  std::uint64_t key = 0;
  for (const unsigned char b : bytes) key = (key << 8) | b;
  return key;
}

// Positions of `vms` in order of name (then position). O(n) when they are already sorted by name.
// Names on one host share long prefixes ("vm-00000123"), which makes string compares slow; so names
// are sorted by the 8 bytes that follow the shared prefix, as an integer, and compared in full only
// when those bytes tie.
std::vector<std::size_t> name_order(std::span<const VmDemand> vms) {
  struct Keyed {
    std::uint64_t key;
    std::size_t index;
  };
  const std::size_t prefix = common_prefix_length(vms);
  std::vector<Keyed> keyed;
  keyed.reserve(vms.size());
  for (std::size_t i = 0; i < vms.size(); ++i) keyed.push_back({key_at(vms[i].name, prefix), i});
  const auto less = [&](const Keyed& a, const Keyed& b) {
    if (a.key != b.key) return a.key < b.key;
    const int by_name = vms[a.index].name.compare(vms[b.index].name);
    return by_name != 0 ? by_name < 0 : a.index < b.index;
  };
  if (!std::is_sorted(keyed.begin(), keyed.end(), less)) std::sort(keyed.begin(), keyed.end(), less);
  std::vector<std::size_t> order;
  order.reserve(vms.size());
  for (const Keyed& k : keyed) order.push_back(k.index);
  return order;
}

}  // namespace

Division divide(std::span<const VmDemand> vms, int total_cpus, double alpha) {
  if (total_cpus < 0) throw std::invalid_argument("total CPUs must be >= 0");
  // Work in name order, so ties (broken by lower index below) are broken by name.
  const std::vector<std::size_t> by_name = name_order(vms);

  const std::size_t n = vms.size();
  std::vector<double> priority(n), demand(n);
  std::vector<int> min(n), bound(n);
  for (std::size_t k = 0; k < n; ++k) {
    const VmDemand& vm = vms[by_name[k]];
    check_vm(vm);
    priority[k] = vm.priority;
    demand[k] = demand_of(vm);
    min[k] = vm.min_cpus;
    bound[k] = cpu_bound_of(vm, demand[k]);
  }
  const std::vector<double> weights = compute_weights(priority, alpha);
  const std::vector<double> share = waterfill(weights, demand, total_cpus);
  const std::vector<int> cpus = apportion(weights, total_cpus, min, bound);

  Division d;
  d.names.resize(n);
  d.weights.resize(n);
  d.share_cpus.resize(n);
  d.cpus.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = by_name[k];
    d.names[i] = vms[i].name;
    d.weights[i] = weights[k];
    d.share_cpus[i] = share[k];
    d.cpus[i] = cpus[k];
  }
  return d;
}

}  // namespace llmorch::policy
