#include "llmorch/policy/balloon.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

namespace llmorch::policy {
namespace {

// A simulated guest: `used` MiB are what its workload touches; the balloon size is `actual`.
struct Guest {
  std::string name;
  std::uint64_t actual = 0;
  std::uint64_t used = 0;
  std::uint64_t floor = 0;
  std::uint64_t max = 0;
  double weight = 0.5;
  NodeId node = 0;

  BalloonVm vm() const {
    BalloonVm v;
    v.name = name;
    v.stats.actual_mib = actual;
    v.stats.usable_mib = actual > used ? actual - used : 0;
    v.template_floor_mib = floor;
    v.max_memory_mib = max;
    v.weight = weight;
    v.nodes = {node};
    return v;
  }
};

// One node of `node_mib` total memory that holds the guests; free = total − Σ actual.
struct Sim {
  std::uint64_t node_mib = 100000;
  std::uint64_t reserve = 0;
  std::optional<std::uint64_t> limit;
  std::vector<Guest> guests;
  BalloonConfig config;

  BalloonHost host() const {
    std::uint64_t used = 0;
    for (const Guest& g : guests) used += g.actual;
    return {{{0, node_mib > used ? node_mib - used : 0, reserve}}, limit};
  }
  std::vector<BalloonDecision> tick() {
    std::vector<BalloonVm> vms;
    for (const Guest& g : guests) vms.push_back(g.vm());
    auto out = plan_balloon(host(), vms, config);
    for (std::size_t i = 0; i < guests.size(); ++i)
      if (out[i].target_mib) guests[i].actual = *out[i].target_mib;
    return out;
  }
  std::uint64_t total() const {
    std::uint64_t t = 0;
    for (const Guest& g : guests) t += g.actual;
    return t;
  }
};

bool any_change(const std::vector<BalloonDecision>& ds) {
  return std::any_of(ds.begin(), ds.end(), [](const BalloonDecision& d) { return d.target_mib.has_value(); });
}

TEST(Balloon, FloorIsTheLargerOfTemplateAndAgentClampedToMax) {
  BalloonVm vm;
  vm.template_floor_mib = 100;
  vm.max_memory_mib = 1000;
  EXPECT_EQ(effective_floor(vm), 100u);
  vm.agent = AgentMemory{1000, 500, std::nullopt, 300};
  EXPECT_EQ(effective_floor(vm), 300u);
  vm.agent->floor_mib = 5000;
  EXPECT_EQ(effective_floor(vm), 1000u);
}

TEST(Balloon, MissingOrStaleStatsAreLeftAloneWithAReason) {
  Guest g{"g", 1024, 200, 0, 2048};
  BalloonVm no_actual = g.vm();
  no_actual.stats.actual_mib.reset();
  BalloonVm stale = g.vm();
  stale.name = "stale";
  stale.stats_fresh = false;
  BalloonVm no_free = g.vm();
  no_free.name = "nofree";
  no_free.stats.usable_mib.reset();
  const std::vector<BalloonVm> vms = {no_actual, stale, no_free};
  // The host is far over its limit: a managed VM would be reclaimed.
  const auto out = plan_balloon({{{0, 0, 0}}, 100}, vms);
  for (const BalloonDecision& d : out) {
    EXPECT_TRUE(d.left_alone) << d.name;
    EXPECT_FALSE(d.target_mib) << d.name;
  }
  EXPECT_NE(out[0].reason.find("balloon driver"), std::string::npos) << out[0].reason;
  EXPECT_NE(out[1].reason.find("not updating"), std::string::npos) << out[1].reason;
  EXPECT_NE(out[2].reason.find("free memory"), std::string::npos) << out[2].reason;
}

TEST(Balloon, AgentOrUnusedStandInForMissingUsable) {
  Sim sim;
  sim.limit = 1800;
  sim.guests = {{"g", 2048, 100, 0, 2048}};
  BalloonVm vm = sim.guests[0].vm();
  vm.stats.usable_mib.reset();
  vm.agent = AgentMemory{2048, 1948, std::nullopt, 0};
  auto out = plan_balloon(sim.host(), std::span(&vm, 1), sim.config);
  ASSERT_TRUE(out[0].target_mib) << out[0].reason;
  EXPECT_EQ(*out[0].target_mib, 1800u);  // over by 248
  vm.agent.reset();
  vm.stats.unused_mib = 1948;
  out = plan_balloon(sim.host(), std::span(&vm, 1), sim.config);
  ASSERT_TRUE(out[0].target_mib) << out[0].reason;
}

TEST(Balloon, StableGuestIsNotTouched) {
  Sim sim;
  sim.guests = {{"a", 1024, 500, 0, 2048, 0.5}, {"b", 1024, 300, 0, 2048, 0.5}};
  const auto out = sim.tick();
  EXPECT_FALSE(any_change(out));
  EXPECT_NE(out[0].reason.find("stable"), std::string::npos) << out[0].reason;
}

TEST(Balloon, ReclaimTakesFromTheLowestWeightFirstAndSaysWhy) {
  Sim sim;
  sim.limit = 3 * 1024 - 80;
  sim.guests = {{"hi", 1024, 100, 96, 2048, 0.5}, {"lo", 1024, 100, 96, 2048, 0.2}, {"mid", 1024, 100, 96, 2048, 0.3}};
  const auto out = sim.tick();
  EXPECT_FALSE(out[0].target_mib);
  EXPECT_FALSE(out[2].target_mib);
  ASSERT_TRUE(out[1].target_mib) << out[1].reason;
  EXPECT_EQ(*out[1].target_mib, 1024u - 80u);
  EXPECT_NE(out[1].reason.find("reclaim 80 MiB: host over limit by 80 MiB"), std::string::npos) << out[1].reason;
  EXPECT_NE(out[1].reason.find("weight 0.20"), std::string::npos) << out[1].reason;
}

// Issue 11: an idle 1 GiB guest that already gave 400 MiB of free memory of which QEMU's RSS fell by
// only 37 MiB (its pages had never been touched): squeezing it further frees nothing on the host.
// It sits at its keep (600 MiB, 100 free: keep = 600 − 100 + 120 = 620), the host is over its limit.
BalloonVm untouched_guest() {
  BalloonVm v;
  v.name = "idle";
  v.stats.actual_mib = 600;
  v.stats.usable_mib = 100;
  v.template_floor_mib = 128;
  v.max_memory_mib = 1024;
  v.weight = 0.5;
  v.nodes = {0};
  v.rss_mib = 207;
  v.last_shrink = ShrinkReturn{
      .taken_mib = 400, .rss_before_mib = 244, .rss_after_mib = 207, .node_free_before_mib = 5000};
  return v;
}
const BalloonHost kOverLimit{{{0, 5000, 0}}, 300};  // over by 300 MiB

TEST(Balloon, SqueezeStopsAtKeepWhenTheLastShrinkGaveTheHostNothingBack) {
  const BalloonVm vm = untouched_guest();
  const auto out = plan_balloon(kOverLimit, std::vector<BalloonVm>{vm});
  EXPECT_FALSE(out[0].target_mib) << out[0].reason;
  EXPECT_NE(out[0].reason.find("host over limit by 300 MiB, but not below keep 620 MiB: the last 400 MiB taken gave "
                               "the host back 37 MiB (QEMU RSS 244 -> 207 MiB"),
            std::string::npos)
      << out[0].reason;
  EXPECT_NE(out[0].reason.find("never touched"), std::string::npos) << out[0].reason;
  EXPECT_FALSE(squeeze_stop(vm, 5000).empty());

  // The same guest without that history is squeezed by a full step: the stop is what held it.
  BalloonVm fresh = vm;
  fresh.last_shrink.reset();
  const auto squeezed = plan_balloon(kOverLimit, std::vector<BalloonVm>{fresh});
  ASSERT_TRUE(squeezed[0].target_mib) << squeezed[0].reason;
  EXPECT_EQ(*squeezed[0].target_mib, 600u - 256u);
  EXPECT_NE(squeezed[0].reason.find("squeeze 256 MiB"), std::string::npos) << squeezed[0].reason;
}

TEST(Balloon, ASqueezeWhoseMemoryCameBackGoesOn) {
  BalloonVm vm = untouched_guest();
  vm.last_shrink->rss_after_mib = 144;  // 100 of 400 came back: exactly a quarter is enough
  vm.rss_mib = 144;
  const auto out = plan_balloon(kOverLimit, std::vector<BalloonVm>{vm});
  ASSERT_TRUE(out[0].target_mib) << out[0].reason;
  EXPECT_EQ(*out[0].target_mib, 600u - 256u);
  vm.last_shrink->rss_after_mib = 145;  // 99: not enough
  vm.rss_mib = 145;
  EXPECT_FALSE(plan_balloon(kOverLimit, std::vector<BalloonVm>{vm})[0].target_mib);
}

TEST(Balloon, TheStopLiftsWhenRssMovesOrTheNodeShowsTheMemoryBack) {
  // RSS rose by a quarter of what was taken (100 MiB): the guest touched memory a squeeze would free.
  BalloonVm vm = untouched_guest();
  vm.rss_mib = 207 + 99;
  EXPECT_FALSE(plan_balloon(kOverLimit, std::vector<BalloonVm>{vm})[0].target_mib);
  vm.rss_mib = 207 + 100;
  EXPECT_TRUE(plan_balloon(kOverLimit, std::vector<BalloonVm>{vm})[0].target_mib);
  // RSS fell late by as much: the return came after the measurement.
  vm.rss_mib = 107;
  EXPECT_TRUE(plan_balloon(kOverLimit, std::vector<BalloonVm>{vm})[0].target_mib);
  // The node's free memory rose by the whole 400 MiB since the shrink: the host has it back.
  vm.rss_mib = 207;
  const BalloonHost node_got_it{{{0, 5400, 0}}, 300};
  EXPECT_TRUE(plan_balloon(node_got_it, std::vector<BalloonVm>{vm})[0].target_mib);
  const BalloonHost node_did_not{{{0, 5399, 0}}, 300};
  EXPECT_FALSE(plan_balloon(node_did_not, std::vector<BalloonVm>{vm})[0].target_mib);
}

TEST(Balloon, WithoutRssSqueezesGoOnAndTheReasonSaysItWasNotChecked) {
  BalloonVm vm = untouched_guest();
  vm.rss_mib.reset();  // a driver that does not report QEMU's RSS
  vm.last_shrink->rss_before_mib.reset();
  vm.last_shrink->rss_after_mib.reset();
  const auto out = plan_balloon(kOverLimit, std::vector<BalloonVm>{vm});
  ASSERT_TRUE(out[0].target_mib) << out[0].reason;
  EXPECT_EQ(*out[0].target_mib, 600u - 256u);
  EXPECT_NE(out[0].reason.find("QEMU RSS not reported: not checked whether the host gets it back"), std::string::npos)
      << out[0].reason;
}

TEST(Balloon, ReclaimAboveKeepGoesOnWhileSqueezesAreStopped) {
  BalloonVm vm = untouched_guest();
  vm.stats.actual_mib = 1024;
  vm.stats.usable_mib = 600;  // keep = 1024 − 600 + 205 = 629: 395 MiB reclaimable
  BalloonConfig c;
  c.step_mib = 1024;
  const BalloonHost host{{{0, 5000, 0}}, 300};  // over by 724: more than it can give above keep
  const auto out = plan_balloon(host, std::vector<BalloonVm>{vm}, c);
  ASSERT_TRUE(out[0].target_mib) << out[0].reason;
  EXPECT_EQ(*out[0].target_mib, 629u);
  EXPECT_NE(out[0].reason.find("reclaim 395 MiB"), std::string::npos) << out[0].reason;
  EXPECT_NE(out[0].reason.find("but not below keep 629 MiB"), std::string::npos) << out[0].reason;
}

TEST(Balloon, ReclaimSpreadsOverVmsInWeightOrderWhenOneStepIsNotEnough) {
  Sim sim;
  sim.limit = 3 * 1024 - 400;
  sim.guests = {{"hi", 1024, 100, 96, 2048, 0.5}, {"lo", 1024, 100, 96, 2048, 0.2}, {"mid", 1024, 100, 96, 2048, 0.3}};
  const auto out = sim.tick();
  EXPECT_FALSE(out[0].target_mib);
  EXPECT_EQ(out[1].target_mib, 1024u - 256u);
  EXPECT_EQ(out[2].target_mib, 1024u - 144u);
  EXPECT_LE(sim.total(), *sim.limit);
}

TEST(Balloon, NodeBelowLowWatermarkIsRelievedFromItsOwnVms) {
  BalloonConfig c;
  std::vector<BalloonVm> vms = {Guest{"n0", 4096, 1000, 0, 4096, 0.5, 0}.vm(),
                                Guest{"n1", 4096, 1000, 0, 4096, 0.1, 1}.vm()};
  const BalloonHost host{{{0, 200, 100}, {1, 10000, 100}}, std::nullopt};
  const auto out = plan_balloon(host, vms, c);
  // Node 0 needs reserve 100 + low 256 − free 200 = 156 MiB; the lighter VM is on the other node.
  EXPECT_EQ(out[0].target_mib, 4096u - 156u);
  EXPECT_NE(out[0].reason.find("node 0 short by 156 MiB"), std::string::npos) << out[0].reason;
  EXPECT_FALSE(out[1].target_mib);
}

TEST(Balloon, PressureGrowsHighestWeightFirstFromHostFree) {
  Sim sim;
  sim.config.high_watermark_mib = 256;
  sim.config.low_watermark_mib = 128;
  // Room on the node for exactly one step above reserve + high.
  sim.guests = {{"lo", 1024, 1020, 0, 4096, 0.3}, {"hi", 1024, 1020, 0, 4096, 0.7}};
  sim.node_mib = 2048 + 256 + 256;
  const auto out = sim.tick();
  EXPECT_FALSE(out[0].target_mib) << out[0].reason;
  EXPECT_EQ(out[1].target_mib, 1024u + 256u) << out[1].reason;
  EXPECT_NE(out[1].reason.find("grow 256 MiB"), std::string::npos) << out[1].reason;
  EXPECT_NE(out[0].reason.find("no room"), std::string::npos) << out[0].reason;
}

TEST(Balloon, PressureTakesFromLowerWeightVmsWhenTheHostHasNoRoom) {
  Sim sim;
  sim.limit = 3072;
  sim.guests = {{"hi", 1024, 1020, 0, 4096, 0.6}, {"lo", 2048, 500, 0, 4096, 0.4}};
  auto out = sim.tick();
  EXPECT_EQ(out[0].target_mib, 1024u + 256u) << out[0].reason;
  EXPECT_EQ(out[1].target_mib, 2048u - 256u) << out[1].reason;
  EXPECT_NE(out[1].reason.find("give 256 MiB to hi"), std::string::npos) << out[1].reason;
  EXPECT_LE(sim.total(), *sim.limit);
  // A heavier VM never gives to a lighter one.
  sim.guests = {{"hi", 2048, 500, 0, 4096, 0.6}, {"lo", 1024, 1020, 0, 4096, 0.4}};
  out = sim.tick();
  EXPECT_FALSE(any_change(out));
}

TEST(Balloon, SwapInOrMajorFaultsRisingIsPressure) {
  BalloonVm vm = Guest{"g", 1024, 300, 0, 2048}.vm();
  vm.previous = vm.stats;
  vm.stats.swap_in_mib = 10;
  vm.previous->swap_in_mib = 2;
  const BalloonHost host{{{0, 100000, 0}}, std::nullopt};
  auto out = plan_balloon(host, std::span(&vm, 1));
  EXPECT_EQ(out[0].target_mib, 1024u + 256u);
  EXPECT_NE(out[0].reason.find("swap-in rising"), std::string::npos) << out[0].reason;
  vm.previous->swap_in_mib = 10;
  vm.stats.major_faults = 5000;
  vm.previous->major_faults = 100;
  out = plan_balloon(host, std::span(&vm, 1));
  EXPECT_NE(out[0].reason.find("major faults rising"), std::string::npos) << out[0].reason;
  vm.previous->major_faults = 4500;
  out = plan_balloon(host, std::span(&vm, 1));
  EXPECT_FALSE(out[0].target_mib) << out[0].reason;
  vm.agent = AgentMemory{1024, 700, 25.0, 0};
  out = plan_balloon(host, std::span(&vm, 1));
  EXPECT_NE(out[0].reason.find("psi some avg10 25.0"), std::string::npos) << out[0].reason;
}

TEST(Balloon, CorrectionsIntoFloorAndMaxAreImmediate) {
  const std::vector<BalloonVm> vms = {Guest{"over", 3000, 100, 0, 2048}.vm(), Guest{"under", 100, 90, 1024, 2048}.vm()};
  const auto out = plan_balloon({{{0, 100000, 0}}, std::nullopt}, vms);
  EXPECT_EQ(out[0].target_mib, 2048u);
  EXPECT_EQ(out[1].target_mib, 1024u);
  EXPECT_NE(out[1].reason.find("up to floor 1024"), std::string::npos) << out[1].reason;
}

TEST(Balloon, DeadBandSuppressesSmallGrows) {
  Sim sim;
  sim.config.low_watermark_mib = 0;
  sim.config.high_watermark_mib = 0;
  sim.guests = {{"g", 1024, 1020, 0, 4096}};
  sim.node_mib = 1024 + 10;  // 10 MiB of room: below the 20 MiB dead band (2 % of 1024)
  const auto out = sim.tick();
  EXPECT_FALSE(out[0].target_mib) << out[0].reason;
}

TEST(Balloon, InvalidInputIsRejectedNamingTheVm) {
  BalloonVm vm = Guest{"bad", 1024, 100, 0, 2048}.vm();
  const BalloonHost host{{{0, 1000, 0}}, std::nullopt};
  vm.weight = 1.5;
  EXPECT_THROW(plan_balloon(host, std::span(&vm, 1)), std::invalid_argument);
  vm.weight = 0.5;
  vm.nodes = {7};
  try {
    plan_balloon(host, std::span(&vm, 1));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'bad'"), std::string::npos);
  }
  vm.nodes = {0};
  vm.max_memory_mib = 0;
  EXPECT_THROW(plan_balloon(host, std::span(&vm, 1)), std::invalid_argument);
}

// Two 256 MiB guests, floors 160 and 96, a limit below their sum: the low-priority one shrinks first
// and never below 96; lifting the limit with the guest under pressure lets it grow back.
TEST(Balloon, ConvergenceSimulationTwoSmallGuests) {
  Sim sim;
  sim.node_mib = 4096;
  sim.limit = 300;
  sim.guests = {{"high", 256, 120, 160, 256, 0.71}, {"low", 256, 60, 96, 256, 0.29}};
  // Tick 1: free guest memory first, lowest weight first. low keeps max(96, 60 used + 64 headroom),
  // high keeps 120 + 64; the last 8 MiB over come from squeezing low (by the 16 MiB dead band).
  auto out = sim.tick();
  EXPECT_EQ(sim.guests[1].actual, 256u - 132u - 16u) << out[1].reason;
  EXPECT_EQ(sim.guests[0].actual, 256u - 72u) << out[0].reason;
  EXPECT_NE(out[1].reason.find("reclaim 132 MiB: host over limit by 212 MiB; weight 0.29"), std::string::npos)
      << out[1].reason;
  EXPECT_NE(out[1].reason.find("squeeze 16 MiB: host over limit by 8 MiB"), std::string::npos) << out[1].reason;
  EXPECT_LE(sim.total(), 300u);
  EXPECT_FALSE(any_change(sim.tick()));

  // Tighter: nothing reclaimable is left, so squeeze toward the floors, low first, and never below.
  sim.limit = 260;
  for (int i = 0; i < 5; ++i) {
    out = sim.tick();
    EXPECT_GE(sim.guests[1].actual, 96u);
    EXPECT_GE(sim.guests[0].actual, 160u);
  }
  EXPECT_EQ(sim.guests[1].actual, 96u);
  EXPECT_EQ(sim.guests[0].actual, 164u);
  EXPECT_FALSE(any_change(sim.tick()));

  // The low guest's workload grows past what it has: pressure, but no room under the limit.
  sim.guests[1].used = 200;
  out = sim.tick();
  EXPECT_FALSE(any_change(out));
  EXPECT_NE(out[1].reason.find("no room"), std::string::npos) << out[1].reason;
  // Lift the limit: it grows back, then stays.
  sim.limit.reset();
  out = sim.tick();
  EXPECT_EQ(sim.guests[1].actual, 256u) << out[1].reason;
  EXPECT_NE(out[1].reason.find("grow 160 MiB: only 0 MiB free"), std::string::npos) << out[1].reason;
  EXPECT_FALSE(any_change(sim.tick()));
}

// With a small step, one VM's step does not cover the shortage: the next-lightest gives the rest in
// the same tick, and the lightest still gives the most over the whole run.
TEST(Balloon, SmallStepSpillsInWeightOrderAndConvergesInFewTicks) {
  Sim sim;
  sim.config.step_mib = 32;
  sim.limit = 400;
  sim.guests = {{"high", 256, 120, 160, 256, 0.71}, {"low", 256, 60, 96, 256, 0.29}};
  int ticks = 0;
  while (sim.total() > 400 && ticks < 20) {
    const auto out = sim.tick();
    ++ticks;
    ASSERT_TRUE(out[1].target_mib) << "the lightest VM gives every tick: " << out[1].reason;
  }
  EXPECT_EQ(ticks, 2);
  EXPECT_LE(sim.total(), 400u);
  EXPECT_GT(256 - sim.guests[1].actual, 256 - sim.guests[0].actual);
}

// Random hosts and guests (fixed seeds): every invariant of the rule on one tick.
TEST(Balloon, PropertiesHoldOnRandomInput) {
  for (unsigned seed = 1; seed <= 400; ++seed) {
    std::mt19937 rng(seed);
    auto uni = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    BalloonHost host;
    const int nodes = static_cast<int>(uni(1, 3));
    for (int n = 0; n < nodes; ++n) host.nodes.push_back({n, uni(0, 8192), uni(0, 1024)});
    if (uni(0, 1)) host.limit_mib = uni(1024, 16384);
    std::vector<BalloonVm> vms;
    const int count = static_cast<int>(uni(1, 6));
    std::vector<double> raw;
    for (int i = 0; i < count; ++i) raw.push_back(static_cast<double>(uni(1, 100)));
    const double sum = std::accumulate(raw.begin(), raw.end(), 0.0);
    for (int i = 0; i < count; ++i) {
      BalloonVm vm;
      vm.name = "vm" + std::to_string(i);
      vm.max_memory_mib = uni(256, 8192);
      vm.template_floor_mib = uni(0, vm.max_memory_mib);
      if (uni(0, 4)) vm.stats.actual_mib = uni(vm.template_floor_mib / 2, vm.max_memory_mib + 512);
      if (uni(0, 3) && vm.stats.actual_mib) vm.stats.usable_mib = uni(0, *vm.stats.actual_mib);
      if (uni(0, 1))
        vm.agent = AgentMemory{vm.max_memory_mib, uni(0, vm.max_memory_mib),
                               uni(0, 1) ? std::optional<double>(static_cast<double>(uni(0, 40))) : std::nullopt,
                               uni(0, vm.max_memory_mib + 100)};
      vm.stats_fresh = uni(0, 9) != 0;
      vm.weight = raw[static_cast<std::size_t>(i)] / sum;
      vm.nodes = {static_cast<NodeId>(uni(0, static_cast<std::uint64_t>(nodes - 1)))};
      if (nodes > 1 && uni(0, 3) == 0) vm.nodes = {0, 1};
      vms.push_back(vm);
    }
    BalloonConfig c;
    const auto out = plan_balloon(host, vms, c);
    ASSERT_EQ(out.size(), vms.size());
    std::int64_t before = 0, after = 0;
    for (std::size_t i = 0; i < vms.size(); ++i) {
      const BalloonVm& vm = vms[i];
      const BalloonDecision& d = out[i];
      SCOPED_TRACE("seed " + std::to_string(seed) + " " + d.name + ": " + d.reason);
      EXPECT_EQ(d.name, vm.name);
      EXPECT_FALSE(d.reason.empty());
      const bool usable = vm.stats.actual_mib && vm.stats_fresh && (vm.stats.usable_mib || vm.agent);
      EXPECT_EQ(d.left_alone, !usable);
      if (d.left_alone) {
        EXPECT_FALSE(d.target_mib);
      }
      const std::uint64_t actual = vm.stats.actual_mib.value_or(vm.max_memory_mib);
      const std::uint64_t target = d.target_mib.value_or(actual);
      before += static_cast<std::int64_t>(actual);
      after += static_cast<std::int64_t>(target);
      if (!d.target_mib) continue;
      EXPECT_GE(target, effective_floor(vm));  // floors hold
      EXPECT_LE(target, vm.max_memory_mib);    // max never exceeded
      const std::uint64_t delta = target > actual ? target - actual : actual - target;
      const bool in_bounds = actual >= effective_floor(vm) && actual <= vm.max_memory_mib;
      if (in_bounds) {
        EXPECT_LE(delta, c.step_mib);  // step limit
        if (target != effective_floor(vm)) {
          EXPECT_GE(delta, c.dead_band_mib);  // dead band
        }
      }
    }
    // Growth never takes the host over its limit (corrections to floors aside).
    bool floor_fix = false;
    for (std::size_t i = 0; i < vms.size(); ++i)
      floor_fix |= !out[i].left_alone && *vms[i].stats.actual_mib < effective_floor(vms[i]);
    if (host.limit_mib && !floor_fix && after > before) {
      EXPECT_LE(after, static_cast<std::int64_t>(*host.limit_mib)) << "seed " << seed;
    }
  }
}

// Random simulated guests: repeated ticks converge, then stop changing; totals end within the limit
// and the node's free memory, and the weights order who gave.
TEST(Balloon, RandomSimulationsConvergeAndThenStayStill) {
  for (unsigned seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    auto uni = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    Sim sim;
    const int count = static_cast<int>(uni(2, 5));
    std::uint64_t floors = 0;
    for (int i = 0; i < count; ++i) {
      Guest g;
      g.name = "g" + std::to_string(i);
      g.max = uni(512, 4096);
      g.floor = uni(0, g.max / 2);
      g.used = uni(g.floor / 2, g.max);
      g.actual = uni(g.floor, g.max);
      g.weight = static_cast<double>(uni(1, 100)) / (100.0 * count);  // Σ ≤ 1, distinct mostly
      floors += g.floor;
      sim.guests.push_back(g);
    }
    sim.node_mib = uni(4096, 16384);
    sim.reserve = uni(0, 512);
    sim.limit = uni(floors, floors + 4096);
    int ticks = 0, still = 0;
    while (ticks < 200 && still < 3) {
      still = any_change(sim.tick()) ? 0 : still + 1;
      ++ticks;
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    EXPECT_EQ(still, 3) << "did not settle within 200 ticks";
    // With floors that fit, the limit holds once settled (the node's own total may not allow it).
    if (sim.node_mib >= sim.reserve + sim.config.low_watermark_mib + floors) {
      EXPECT_LE(sim.total(), *sim.limit);
      EXPECT_GE(sim.host().nodes[0].free_mib, sim.reserve + sim.config.low_watermark_mib);
    }
    for (const Guest& g : sim.guests) {
      EXPECT_GE(g.actual, g.floor);
      EXPECT_LE(g.actual, g.max);
    }
  }
}

}  // namespace
}  // namespace llmorch::policy
