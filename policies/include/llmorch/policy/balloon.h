// The memory half of one daemon tick: move memory between running VMs with the virtio balloon, by
// weight, fast, and never below what the model needs resident. Pure: no libvirt, clock or I/O.
//
// Terms (all memory in MiB; the caller converts libvirt's and the agent's KiB by / 1024):
//   actual   the balloon's current size (libvirt VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
//   free     what the guest could give without swapping: balloon `usable` (MemAvailable), else the
//            agent's mem_available, else balloon `unused` (MemFree, the most conservative)
//   floor    min(max(template memory_floor_mib, agent floor_mib), max_memory_mib)
//   headroom(a) = max(headroom_mib, ⌈headroom_fraction · a⌉)   free memory a guest keeps after a reclaim
//   keep     = max(floor, actual − free + headroom(actual))
//   reclaimable = actual − keep, if positive (free memory above the headroom, never below the floor)
//   squeezable  = actual − floor (only used when reclaimable memory does not cover a shortage)
//   pressure: psi memory some avg10 > pressure_psi, or free < pressure_free_fraction · actual, or
//             swap-in or major faults rose since the previous stats by at least the set amounts.
//
// Shortage (host side). Node n is short by  short_n = reserve_n + low_watermark − free_n  (if > 0);
// with a limit L the host is over by  over = Σ actual − L  (if > 0; VMs left alone count with their
// actual, or their max when the balloon reports nothing). A VM on k nodes is taken to hold 1/k of its
// memory on each (an approximation: the balloon returns pages from wherever the guest frees them).
//
// One tick, in order:
//   1. Corrections: a VM above its max goes to max, a VM below its floor goes to its floor (not
//      step-limited: these bounds are hard).
//   2. Reclaim while any node is short or the host is over its limit, from the VMs on the short nodes
//      (any VM for the limit) in four passes: reclaimable memory of VMs not under pressure, then that
//      of VMs under pressure, then squeezable memory of VMs not under pressure, then of those under
//      pressure. Within a pass, lowest weight first, then most reclaimable, then name. Each VM gives
//      at most step_mib per tick, and at least the dead band when it gives anything (overshoot is free
//      memory for the host; it stops the last few MiB of a shortage from lingering); a squeeze may
//      move less when that reaches the floor exactly.
//   3. Only when nothing is short: VMs under pressure grow, highest weight first, by up to step_mib
//      (never above max), from room = min(over each node: free_n − reserve_n − high_watermark,
//      L − Σ planned); when the room is not enough, from the reclaimable memory of VMs with a lower
//      weight that share a node (lowest weight first).
//   4. Dead band: a change smaller than max(dead_band_mib, dead_band_fraction · actual) is dropped
//      (corrections excepted). A stable guest (no shortage, no pressure) is never touched.
// Squeezes are checked against what the host got back (ShrinkReturn, gathered by the daemon): when the
// VM's last shrink gave the host back less than kMinReturnedFraction of the memory taken (QEMU's RSS
// fell by less: the guest had never touched those pages, so the balloon freed nothing on the host), it
// is not squeezed below its keep again until its RSS moves by at least
// max(dead_band_mib, kMinReturnedFraction · taken) either way (the guest touched memory, or the return
// showed up late), or its nodes' free memory has risen by the whole amount taken since the shrink (the
// host got it back some other way). Reclaiming memory above keep goes on. Without RSS figures (a driver
// that does not report them) squeezes go on as before, and the reason says that it was not checked.
// The low/high watermark gap is the host-side hysteresis: reclaims start below reserve + low, grows
// only spend free memory above reserve + high.
//
// Compared with the anchors: oVirt MOM shrinks every guest by ≤ 5 % per 10–15 s cycle when host free
// memory is below 20 % and grows them otherwise (halving a guest takes minutes); Proxmox VE every 10 s
// aims at 80 % host memory use and shares the memory above each VM's minimum in proportion to its
// `shares`, ≤ 100 MiB per VM per cycle. llmorch takes the floor from the guest (model weights + KV
// cache, reported by the agent), orders and sizes reclaims and grows by the priority weight the CPUs
// use, takes free guest memory before squeezing anyone, grows only guests that show pressure, and moves
// up to step_mib (256 MiB) per VM per tick of seconds: gigabytes move in seconds, not minutes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "llmorch/policy/types.h"

namespace llmorch::policy {

// libvirt's balloon statistics, MiB (swap in/out cumulative since boot); any may be missing.
struct BalloonStats {
  std::optional<std::uint64_t> actual_mib;
  std::optional<std::uint64_t> unused_mib;     // MemFree
  std::optional<std::uint64_t> available_mib;  // MemTotal as the guest sees it
  std::optional<std::uint64_t> usable_mib;     // MemAvailable
  std::optional<std::uint64_t> swap_in_mib;
  std::optional<std::uint64_t> swap_out_mib;
  std::optional<std::uint64_t> major_faults;  // cumulative count
};

// The agent's memory report (absent when the agent has not reported or its report is stale).
struct AgentMemory {
  std::uint64_t mem_total_mib = 0;
  std::uint64_t mem_available_mib = 0;
  std::optional<double> psi_some10;  // /proc/pressure/memory some avg10, percent
  std::uint64_t floor_mib = 0;
};

// The host's side of a VM's last balloon shrink (the step(s) since the previous measurement).
struct ShrinkReturn {
  std::uint64_t taken_mib = 0;                                       // how far the balloon went down
  std::optional<std::uint64_t> rss_before_mib = std::nullopt;        // QEMU's RSS just before the shrink
  std::optional<std::uint64_t> rss_after_mib = std::nullopt;         // from the first statistics newer than it
  std::optional<std::uint64_t> node_free_before_mib = std::nullopt;  // Σ free of the VM's nodes before it
};

// A shrink that gave the host back less than this share of what it took stops further squeezes.
inline constexpr double kMinReturnedFraction = 0.25;

struct BalloonVm {
  std::string name;
  BalloonStats stats;
  std::optional<BalloonStats> previous;  // the stats of the previous tick, to see swap/faults rising
  bool stats_fresh = true;               // false: the stats are not updating
  std::optional<AgentMemory> agent;
  std::uint64_t template_floor_mib = 0;
  std::uint64_t max_memory_mib = 0;                        // > 0
  double weight = 0.0;                                     // from the CPU plan, in [0, 1]
  std::vector<NodeId> nodes;                               // host nodes holding its memory; empty: limit only
  std::optional<std::uint64_t> rss_mib = std::nullopt;     // QEMU's resident memory now (libvirt balloon.rss)
  std::optional<ShrinkReturn> last_shrink = std::nullopt;  // none measured since llmorchd watches it, or it grew
};

struct BalloonNode {
  NodeId id = 0;
  std::uint64_t free_mib = 0;     // free now
  std::uint64_t reserve_mib = 0;  // what VMs may not take (host, other processes)
};

struct BalloonHost {
  std::vector<BalloonNode> nodes;
  std::optional<std::uint64_t> limit_mib;  // --host-memory-limit-mib: Σ VM memory allowed, host-wide
};

struct BalloonConfig {
  std::uint64_t step_mib = 256;            // most a VM moves per tick
  std::uint64_t dead_band_mib = 16;        // no change smaller than this ...
  double dead_band_fraction = 0.02;        // ... or this share of actual
  std::uint64_t low_watermark_mib = 256;   // a node is short below reserve + low
  std::uint64_t high_watermark_mib = 512;  // grows spend only free memory above reserve + high
  std::uint64_t headroom_mib = 64;         // free memory a guest keeps after a reclaim ...
  double headroom_fraction = 0.2;          // ... at least this share of actual
  double pressure_psi = 10.0;              // psi memory some avg10 above this: pressure
  double pressure_free_fraction = 0.1;     // free below this share of actual: pressure
  std::uint64_t swap_in_rise_mib = 1;      // swap-in rising by this much per tick: pressure
  std::uint64_t major_faults_rise = 1000;  // major faults rising by this many per tick: pressure
};

struct BalloonDecision {
  std::string name;
  std::optional<std::uint64_t> target_mib;  // absent: leave the balloon where it is
  std::string reason;                       // one line, why (or why not)
  bool left_alone = false;                  // no usable stats: not managed this tick
};

// The floor the rule enforces for `vm` (see the terms above).
std::uint64_t effective_floor(const BalloonVm& vm);

// Why `vm` must not be squeezed below its keep (its last shrink gave the host back too little and
// nothing has moved since), or empty. node_free_now_mib: Σ free memory of its nodes now (absent:
// unknown). The planner prepends "not below keep K MiB: ".
std::string squeeze_stop(const BalloonVm& vm, std::optional<std::uint64_t> node_free_now_mib,
                         const BalloonConfig& config = {});

// One decision per VM, in input order. Throws std::invalid_argument (naming the VM) for a max of 0,
// a weight outside [0, 1], a node the host does not list, a config with high < low watermark, or
// two VMs with the same name.
std::vector<BalloonDecision> plan_balloon(const BalloonHost& host, std::span<const BalloonVm> vms,
                                          const BalloonConfig& config = {});

}  // namespace llmorch::policy
