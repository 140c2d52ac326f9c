// NUMA placement speed on the 8-node, 384-CPU EPYC fixture (NPS4, distances 10/12/32).
// BM_FillHost places a mix of VM sizes (some spanning 2-3 nodes, some shared, some on hugepages)
// one by one until the host is full; "per_decision" is the time of one place() call.
// BM_OneDecision times a single decision on a host already filled to the given percentage.
#include <benchmark/benchmark.h>

#include "llmorch/orch/topology.h"
#include "llmorch/policy/placement.h"

namespace {

using namespace llmorch::policy;

const HostTopology& epyc() {
  static const HostTopology host = llmorch::orch::parse_capabilities_file(std::string(LLMORCH_HOSTS_DIR) +
                                                                          "/x86-8node-384cpu-epyc-nps4.xml");
  return host;
}

// The i-th VM of a repeating mix: mostly 2-16 vCPUs, every 7th spans two nodes, every 11th three.
PlacementRequest mix(int i) {
  static const int kVcpus[] = {4, 8, 2, 16, 6, 1, 12};
  PlacementRequest r;
  r.name = "vm" + std::to_string(i);
  r.vcpus = kVcpus[i % 7];
  r.memory_mib = 2048u * r.vcpus;
  if (i % 7 == 6) r.vcpus = 64;
  if (i % 11 == 10) r.vcpus = 120;
  if (i % 5 == 4) r.cpu_policy = CpuPolicy::Shared;
  if (i % 3 == 2) r.hugepage_kib = 2048;
  return r;
}

// Places the mix until `stop_after` decisions or 20 rejections in a row; returns the decisions made.
int fill(HostUsage& usage, int stop_after) {
  int decisions = 0;
  for (int i = 0, misses = 0; misses < 20 && decisions < stop_after; ++i, ++decisions) {
    PlacementResult r = place(epyc(), usage, mix(i));
    if (auto* p = std::get_if<Placement>(&r)) {
      usage.placed.push_back(std::move(*p));
      misses = 0;
    } else {
      ++misses;
    }
  }
  return decisions;
}

void BM_FillHost(benchmark::State& state) {
  std::int64_t decisions = 0;
  std::size_t placed = 0;
  for (auto _ : state) {
    HostUsage usage;
    usage.reserved_cpus = {0, 192};
    decisions += fill(usage, 1 << 20);
    placed = usage.placed.size();
  }
  state.counters["vms_placed"] = static_cast<double>(placed);
  state.counters["per_decision"] = benchmark::Counter(static_cast<double>(decisions),
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_FillHost)->Unit(benchmark::kMillisecond);

// range(0): how full the host is (percent of the fill-up's decisions made first); range(1): the vCPUs
// of the VM placed (64 and 120 span nodes).
void BM_OneDecision(benchmark::State& state) {
  HostUsage full;
  full.reserved_cpus = {0, 192};
  const int all = fill(full, 1 << 20);
  HostUsage usage;
  usage.reserved_cpus = full.reserved_cpus;
  fill(usage, all * static_cast<int>(state.range(0)) / 100);
  PlacementRequest r;
  r.name = "probe";
  r.vcpus = static_cast<int>(state.range(1));
  r.memory_mib = 1024;
  for (auto _ : state) benchmark::DoNotOptimize(place(epyc(), usage, r));
  state.counters["vms_already_placed"] = static_cast<double>(usage.placed.size());
}
BENCHMARK(BM_OneDecision)->ArgsProduct({{0, 50, 90}, {4, 64, 120}})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
