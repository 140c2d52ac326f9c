// CPU division cost for large hosts: weights, whole-CPU apportionment, water-filling, and divide()
// (all three together, load-aware), and plan_cpus (a whole tick's CPU plan). Target: divide() for 1,000
// VMs well under 0.2 ms, whatever the order of the VMs.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "llmorch/policy/cpu_plan.h"
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
    VmDemand vm{"vm-" + std::string(8 - number.size(), '0') + number, double(priority(rng)), 1, vcpus(rng), load(rng)};
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

// A tick on a big host: VMs spread over 8 nodes; 4 in 5 dedicated, holding 1..4 CPUs of their node
// and allowed up to 4 more, the rest shared over their node's 8-CPU shared pool; loads as above.
std::vector<llmorch::policy::VmCpuInput> make_tick(std::size_t n) {
  constexpr int kNodes = 8;
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int> priority(1, 10), held(1, 4), extra(0, 4);
  std::uniform_real_distribution<double> load(-1.0, 8.0);
  std::bernoulli_distribution is_shared(0.2);
  std::vector<std::vector<llmorch::policy::CpuId>> shared_pool(kNodes);
  std::vector<llmorch::policy::CpuId> next_cpu(kNodes);
  for (int node = 0; node < kNodes; ++node) {
    for (int c = 0; c < 8; ++c) shared_pool[node].push_back(node * 1000 + c);
    next_cpu[node] = node * 1000 + 8;
  }
  std::vector<llmorch::policy::VmCpuInput> vms;
  for (std::size_t i = 0; i < n; ++i) {
    const int node = static_cast<int>(i % kNodes);
    const std::string number = std::to_string(i);
    llmorch::policy::VmCpuInput vm;
    vm.name = "vm-" + std::string(8 - number.size(), '0') + number;
    vm.nodes = {node};
    vm.priority = priority(rng);
    vm.demand_cpus = load(rng);
    if (is_shared(rng)) {
      vm.cpu_policy = llmorch::policy::CpuPolicy::Shared;
      vm.cpus = shared_pool[node];
      vm.max_vcpus = 2;
    } else {
      vm.cpu_policy = llmorch::policy::CpuPolicy::Dedicated;
      for (int c = held(rng); c > 0; --c) vm.cpus.push_back(next_cpu[node]++);
      vm.max_vcpus = static_cast<int>(vm.cpus.size()) + extra(rng);
    }
    vms.push_back(std::move(vm));
  }
  return vms;
}

void BM_PlanCpus(benchmark::State& state) {
  const std::vector<llmorch::policy::VmCpuInput> vms = make_tick(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(llmorch::policy::plan_cpus(vms, 0.8));
}

BENCHMARK(BM_ComputeWeights)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Apportion)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Waterfill)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Divide)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DivideUnsortedNames)->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PlanCpus)->Arg(1000)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
