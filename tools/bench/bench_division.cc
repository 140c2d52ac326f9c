// CPU division cost for large hosts: weights, whole-CPU apportionment, water-filling, and divide()
// (all three together, load-aware). Target: divide() for 1,000 VMs well under 0.2 ms.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "llmorch/policy/division.h"
#include "llmorch/policy/weighting.h"

namespace {

using llmorch::policy::VmDemand;

// A busy host: 4 CPUs per VM, VMs of 1..16 vCPUs, loads from idle to saturated, some unknown.
// Names are zero-padded so that the VMs come sorted by name, as the daemon holds them.
struct Host {
  std::vector<VmDemand> vms;
  std::vector<double> priorities, weights, demand;
  std::vector<int> min, max;
  int cpus = 0;
};

Host make_host(std::size_t n) {
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int> priority(1, 10), vcpus(1, 16);
  std::uniform_real_distribution<double> load(-1.0, 16.0);
  Host h;
  h.cpus = static_cast<int>(4 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string number = std::to_string(i);
    VmDemand vm{"vm-" + std::string(8 - number.size(), '0') + number, double(priority(rng)), 1, vcpus(rng),
                load(rng)};
    h.priorities.push_back(vm.priority);
    h.min.push_back(vm.min_cpus);
    h.max.push_back(vm.max_cpus);
    h.demand.push_back(vm.demand_cpus < 0 ? vm.max_cpus : vm.demand_cpus);
    h.vms.push_back(std::move(vm));
  }
  h.weights = llmorch::policy::compute_weights(h.priorities, 0.8);
  return h;
}

void BM_ComputeWeights(benchmark::State& state) {
  const Host h = make_host(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::compute_weights(h.priorities, 0.8));
}

void BM_Apportion(benchmark::State& state) {
  const Host h = make_host(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::apportion(h.weights, h.cpus, h.min, h.max));
}

void BM_Waterfill(benchmark::State& state) {
  const Host h = make_host(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::waterfill(h.weights, h.demand, h.cpus));
}

void BM_Divide(benchmark::State& state) {
  const Host h = make_host(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::divide(h.vms, h.cpus, 0.8));
}

// The same host with the VMs in random order: divide() must first sort them by name.
void BM_DivideUnsortedNames(benchmark::State& state) {
  Host h = make_host(state.range(0));
  std::shuffle(h.vms.begin(), h.vms.end(), std::mt19937_64(7));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::divide(h.vms, h.cpus, 0.8));
}

BENCHMARK(BM_ComputeWeights)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Apportion)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Waterfill)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Divide)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DivideUnsortedNames)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
