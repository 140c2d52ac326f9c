// apportion, waterfill and divide: examples, edge cases and randomized properties.
#include "llmorch/policy/division.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmorch::policy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

int sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }
double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

std::string message_of(auto&& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

// ---------------------------------------------------------------------------------------------
// apportion

TEST(Apportion, WorkedExampleFromTheDesign) {
  const std::vector<double> w = compute_weights(std::vector<double>{2.0, 1.0}, 0.8);
  EXPECT_EQ(apportion(w, 4, std::vector<int>{1, 1}, std::vector<int>{4, 4}), (std::vector<int>{1, 3}));
}

TEST(Apportion, CappedVmsSurplusGoesToOthersByWeight) {
  const std::vector<double> w{0.5, 0.25, 0.25};
  EXPECT_EQ(apportion(w, 8, std::vector<int>{0, 0, 0}, std::vector<int>{2, 8, 8}), (std::vector<int>{2, 3, 3}));
}

TEST(Apportion, MinIsAFloorNotABonus) {
  // VM 0's ideal 6 already exceeds its min 2; VM 1's ideal 2 is raised to its min 3.
  const std::vector<double> w{0.75, 0.25};
  EXPECT_EQ(apportion(w, 8, std::vector<int>{2, 3}, std::vector<int>{8, 8}), (std::vector<int>{5, 3}));
}

TEST(Apportion, EqualRemaindersGoToTheHigherWeight) {
  // Ideals 0.5 and 1.5: equal remainders; the heavier VM gets the spare CPU.
  const std::vector<double> w{0.5, 1.5};
  EXPECT_EQ(apportion(w, 2, std::vector<int>{0, 0}, std::vector<int>{2, 2}), (std::vector<int>{0, 2}));
}

TEST(Apportion, FullTiesGoToTheLowerIndex) {
  const std::vector<double> w{1.0, 1.0, 1.0};
  EXPECT_EQ(apportion(w, 1, std::vector<int>{0, 0, 0}, std::vector<int>{1, 1, 1}), (std::vector<int>{1, 0, 0}));
  EXPECT_EQ(apportion(w, 2, std::vector<int>{0, 0, 0}, std::vector<int>{1, 1, 1}), (std::vector<int>{1, 1, 0}));
}

TEST(Apportion, TooFewCpusServesMinsInWeightOrder) {
  const std::vector<double> w{0.2, 0.5, 0.3};
  EXPECT_EQ(apportion(w, 5, std::vector<int>{2, 2, 2}, std::vector<int>{4, 4, 4}), (std::vector<int>{1, 2, 2}));
  EXPECT_EQ(apportion(w, 0, std::vector<int>{2, 2, 2}, std::vector<int>{4, 4, 4}), (std::vector<int>{0, 0, 0}));
}

TEST(Apportion, TooManyCpusGivesEveryoneItsMaxAndLeavesTheRest) {
  const std::vector<double> w{0.9, 0.1};
  EXPECT_EQ(apportion(w, 10, std::vector<int>{1, 1}, std::vector<int>{3, 2}), (std::vector<int>{3, 2}));
}

TEST(Apportion, RejectsBadInputNamingIt) {
  const std::vector<double> w{0.5, 0.5};
  const std::vector<int> lo{0, 0}, hi{2, 2};
  EXPECT_NE(message_of([&] { apportion(w, -1, lo, hi); }).find("total"), std::string::npos);
  EXPECT_NE(message_of([&] { apportion(w, 2, std::vector<int>{0}, hi); }).find("min"), std::string::npos);
  EXPECT_NE(message_of([&] { apportion(w, 2, lo, std::vector<int>{2, -1}); }).find("bounds #2"), std::string::npos);
  EXPECT_NE(message_of([&] {
              apportion(std::vector<double>{0.5, 0.0}, 2, lo, hi);
            }).find("weight #2"),
            std::string::npos);
}

struct RandomBounds {
  std::vector<double> weights;
  std::vector<int> min, max;
  int total;
};

// Random weights and bounds; `equal_bounds` gives every VM the same [min, max].
RandomBounds random_bounds(std::mt19937_64& rng, bool equal_bounds) {
  std::uniform_int_distribution<int> count(1, 30);
  std::uniform_int_distribution<int> priority(1, 6);
  std::uniform_int_distribution<int> lo_dist(0, 3), span_dist(0, 12);
  std::uniform_real_distribution<double> alpha(0.0, 1.0);
  RandomBounds r;
  std::vector<double> p(count(rng));
  for (double& x : p) x = priority(rng);
  r.weights = compute_weights(p, alpha(rng));
  const int lo = lo_dist(rng), hi = lo + span_dist(rng);
  for (std::size_t i = 0; i < p.size(); ++i) {
    r.min.push_back(equal_bounds ? lo : lo_dist(rng));
    r.max.push_back(equal_bounds ? hi : r.min.back() + span_dist(rng));
  }
  // Totals from well below Σmin to well above Σmax, so all three regimes are exercised.
  std::uniform_int_distribution<int> total(0, sum(r.max) + 5);
  r.total = total(rng);
  return r;
}

class ApportionProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(ApportionProperty, SumIsExactAndBoundsAreHonoured) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 500; ++round) {
    const RandomBounds r = random_bounds(rng, false);
    const std::vector<int> cpus = apportion(r.weights, r.total, r.min, r.max);
    ASSERT_EQ(cpus.size(), r.weights.size());
    const int sum_min = sum(r.min), sum_max = sum(r.max);
    EXPECT_EQ(sum(cpus), std::min(r.total, sum_max));
    for (std::size_t i = 0; i < cpus.size(); ++i) {
      EXPECT_GE(cpus[i], 0);
      EXPECT_LE(cpus[i], r.max[i]);
      if (sum_min <= r.total) {
        EXPECT_GE(cpus[i], r.min[i]);
      }
    }
  }
}

TEST_P(ApportionProperty, BetterWeightNeverGetsFewerCpusUnderEqualBounds) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 500; ++round) {
    const RandomBounds r = random_bounds(rng, true);
    const std::vector<int> cpus = apportion(r.weights, r.total, r.min, r.max);
    for (std::size_t i = 0; i < cpus.size(); ++i) {
      for (std::size_t j = 0; j < cpus.size(); ++j) {
        if (r.weights[i] > r.weights[j]) {
          EXPECT_GE(cpus[i], cpus[j]);
        }
      }
    }
  }
}

TEST_P(ApportionProperty, UnboundedVmsGetTheirQuotaRoundedUpOrDown) {
  std::mt19937_64 rng(GetParam());
  std::uniform_int_distribution<int> total_dist(0, 200);
  for (int round = 0; round < 500; ++round) {
    RandomBounds r = random_bounds(rng, true);
    r.total = total_dist(rng);
    std::fill(r.min.begin(), r.min.end(), 0);
    std::fill(r.max.begin(), r.max.end(), r.total);
    const std::vector<int> cpus = apportion(r.weights, r.total, r.min, r.max);
    for (std::size_t i = 0; i < cpus.size(); ++i) {
      EXPECT_LT(std::abs(cpus[i] - r.total * r.weights[i]), 1.0 + 1e-9);
    }
  }
}

TEST_P(ApportionProperty, SameInputSameOutput) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 100; ++round) {
    const RandomBounds r = random_bounds(rng, false);
    EXPECT_EQ(apportion(r.weights, r.total, r.min, r.max), apportion(r.weights, r.total, r.min, r.max));
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, ApportionProperty, ::testing::Values(1u, 7u, 42u, 2024u));

// ---------------------------------------------------------------------------------------------
// waterfill

TEST(Waterfill, WhatAnIdleVmLeavesGoesToTheOthersByWeight) {
  const std::vector<double> w{0.5, 0.25, 0.25};
  const std::vector<double> share = waterfill(w, std::vector<double>{1.0, kInf, kInf}, 8.0);
  EXPECT_DOUBLE_EQ(share[0], 1.0);
  EXPECT_DOUBLE_EQ(share[1], 3.5);
  EXPECT_DOUBLE_EQ(share[2], 3.5);
}

TEST(Waterfill, EveryoneSatisfiedLeavesCapacityUnused) {
  const std::vector<double> share = waterfill(std::vector<double>{0.5, 0.5}, std::vector<double>{1.0, 2.0}, 8.0);
  EXPECT_EQ(share, (std::vector<double>{1.0, 2.0}));
}

TEST(Waterfill, RejectsBadInput) {
  const std::vector<double> w{0.5, 0.5};
  EXPECT_THROW(waterfill(w, std::vector<double>{1.0, -1.0}, 2.0), std::invalid_argument);
  EXPECT_THROW(waterfill(w, std::vector<double>{1.0, std::nan("")}, 2.0), std::invalid_argument);
  EXPECT_THROW(waterfill(w, std::vector<double>{1.0}, 2.0), std::invalid_argument);
  EXPECT_THROW(waterfill(w, std::vector<double>{1.0, 1.0}, kInf), std::invalid_argument);
}

struct RandomLoad {
  std::vector<double> weights, demand;
  double capacity;
};

RandomLoad random_load(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> count(1, 40);
  std::uniform_real_distribution<double> priority(0.5, 10.0), demand(0.0, 16.0), capacity(0.0, 200.0);
  std::bernoulli_distribution unknown(0.2);
  RandomLoad r;
  std::vector<double> p(count(rng));
  for (double& x : p) x = priority(rng);
  r.weights = compute_weights(p, 0.8);
  for (std::size_t i = 0; i < p.size(); ++i) r.demand.push_back(unknown(rng) ? kInf : demand(rng));
  r.capacity = capacity(rng);
  return r;
}

class WaterfillProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(WaterfillProperty, CapsAtDemandAndSharesTheRestMaxMinFairly) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 500; ++round) {
    const RandomLoad r = random_load(rng);
    const std::vector<double> share = waterfill(r.weights, r.demand, r.capacity);
    EXPECT_NEAR(sum(share), std::min(r.capacity, sum(r.demand)), 1e-9 * (1 + r.capacity));
    for (std::size_t i = 0; i < share.size(); ++i) {
      EXPECT_GE(share[i], 0.0);
      EXPECT_LE(share[i], r.demand[i]);
      // Weighted max-min fairness: a VM short of its demand is at the highest level of share per
      // unit of weight; nobody is above it.
      if (share[i] < r.demand[i] - 1e-9) {
        for (std::size_t j = 0; j < share.size(); ++j) {
          EXPECT_GE(share[i] / r.weights[i], share[j] / r.weights[j] - 1e-9);
        }
      }
    }
  }
}

TEST_P(WaterfillProperty, FullContentionIsThePlainFormula) {
  std::mt19937_64 rng(GetParam());
  std::uniform_real_distribution<double> extra(0.0, 5.0);
  for (int round = 0; round < 500; ++round) {
    RandomLoad r = random_load(rng);
    for (std::size_t i = 0; i < r.demand.size(); ++i) {
      r.demand[i] = std::max(r.demand[i], r.capacity * r.weights[i] + extra(rng));
    }
    const std::vector<double> share = waterfill(r.weights, r.demand, r.capacity);
    for (std::size_t i = 0; i < share.size(); ++i) {
      EXPECT_NEAR(share[i], r.capacity * r.weights[i], 1e-9 * (1 + r.capacity));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, WaterfillProperty, ::testing::Values(1u, 7u, 42u, 2024u));

// ---------------------------------------------------------------------------------------------
// divide

VmDemand vm(std::string name, double priority, int min, int max, double demand = -1.0) {
  return {std::move(name), priority, min, max, demand};
}

TEST(Divide, WorkedExampleFromTheDesign) {
  const std::vector<VmDemand> vms{vm("A", 2.0, 1, 4), vm("B", 1.0, 1, 4)};
  const Division d = divide(vms, 4, 0.8);
  EXPECT_EQ(d.names, (std::vector<std::string>{"A", "B"}));
  EXPECT_NEAR(d.weights[0], 0.3571, 5e-5);
  EXPECT_NEAR(d.weights[1], 0.6429, 5e-5);
  EXPECT_NEAR(d.share_cpus[0], 1.4286, 5e-5);
  EXPECT_NEAR(d.share_cpus[1], 2.5714, 5e-5);
  EXPECT_EQ(d.cpus, (std::vector<int>{1, 3}));
}

TEST(Divide, IdleImportantVmLeavesItsCpusToABusyOne) {
  const std::vector<VmDemand> vms{vm("llm-prod", 1.0, 1, 8, 0.5), vm("batch", 5.0, 1, 8)};
  const Division d = divide(vms, 8, 0.8);
  EXPECT_EQ(d.cpus, (std::vector<int>{1, 7}));
  EXPECT_DOUBLE_EQ(d.share_cpus[0], 0.5);
  EXPECT_DOUBLE_EQ(d.share_cpus[1], 7.5);
}

TEST(Divide, DemandAboveMaxCountsAsMax) {
  const std::vector<VmDemand> vms{vm("a", 1.0, 1, 2, 50.0), vm("b", 1.0, 1, 8, 50.0)};
  const Division d = divide(vms, 8, 0.8);
  EXPECT_EQ(d.cpus, (std::vector<int>{2, 6}));
  EXPECT_DOUBLE_EQ(d.share_cpus[0], 2.0);
}

TEST(Divide, TiesAreBrokenByNameWhateverTheInputOrder) {
  std::vector<VmDemand> vms{vm("c", 1.0, 0, 4), vm("a", 1.0, 0, 4), vm("b", 1.0, 0, 4)};
  EXPECT_EQ(divide(vms, 2, 0.8).cpus, (std::vector<int>{0, 1, 1}));
  std::reverse(vms.begin(), vms.end());
  EXPECT_EQ(divide(vms, 2, 0.8).cpus, (std::vector<int>{1, 1, 0}));
  EXPECT_EQ(divide(vms, 2, 0.8).names, (std::vector<std::string>{"b", "a", "c"}));
}

TEST(Divide, TiesFollowFullNameOrderWhateverTheSharedPrefix) {
  // Names that share a long prefix, differ only after 8 more bytes, are prefixes of each other or
  // hold a NUL byte: full ties go to the names that std::string orders first.
  std::vector<std::string> names{"vm-000000000000b",
                                 "vm-000000000000a",
                                 "vm-0000",
                                 "vm-00000",
                                 std::string("vm-0000\0", 8),
                                 "vm-1",
                                 "vm-10",
                                 "vm-"};
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  std::mt19937_64 rng(3);
  for (int round = 0; round < 20; ++round) {
    std::shuffle(names.begin(), names.end(), rng);
    std::vector<VmDemand> vms;
    for (const std::string& name : names) vms.push_back(vm(name, 1.0, 0, 1));
    const Division d = divide(vms, 3, 0.8);  // three equal VMs win a CPU
    for (std::size_t i = 0; i < names.size(); ++i) {
      const bool among_first_three = std::find(sorted.begin(), sorted.begin() + 3, names[i]) != sorted.begin() + 3;
      EXPECT_EQ(d.cpus[i], among_first_three ? 1 : 0) << "name '" << names[i] << "' in round " << round;
    }
  }
}

TEST(Divide, EmptyHostOrNoVms) {
  EXPECT_TRUE(divide(std::vector<VmDemand>{}, 8, 0.8).cpus.empty());
  const Division d = divide(std::vector<VmDemand>{vm("a", 1.0, 1, 4)}, 0, 0.8);
  EXPECT_EQ(d.cpus, std::vector<int>{0});
  EXPECT_EQ(d.share_cpus, std::vector<double>{0.0});
}

TEST(Divide, RejectsBadVmsNamingThem) {
  auto msg = [](VmDemand v) { return message_of([&] { divide(std::vector<VmDemand>{v}, 4, 0.8); }); };
  EXPECT_NE(msg(vm("x", 0.0, 1, 2)).find("VM 'x': priority"), std::string::npos);
  EXPECT_NE(msg(vm("x", 1.0, 3, 2)).find("VM 'x': max_cpus"), std::string::npos);
  EXPECT_NE(msg(vm("x", 1.0, -1, 2)).find("VM 'x': min_cpus"), std::string::npos);
  EXPECT_NE(msg(vm("x", 1.0, 1, 2, std::nan(""))).find("VM 'x': demand"), std::string::npos);
  EXPECT_NE(message_of([] { divide(std::vector<VmDemand>{vm("x", 1.0, 1, 2)}, 4, 1.5); }).find("alpha"),
            std::string::npos);
}

std::vector<VmDemand> random_vms(std::mt19937_64& rng, bool uniform_bounds_and_demand) {
  std::uniform_int_distribution<int> count(1, 30), priority(1, 6), lo(0, 2), span(0, 10);
  std::uniform_real_distribution<double> demand(-1.0, 12.0);
  const int shared_lo = lo(rng), shared_hi = shared_lo + span(rng);
  const double shared_demand = demand(rng);
  std::vector<VmDemand> vms(count(rng));
  for (std::size_t i = 0; i < vms.size(); ++i) {
    VmDemand& v = vms[i];
    v.name = "vm" + std::string(i < 10 ? "0" : "") + std::to_string(i);  // name order == index order
    v.priority = priority(rng);
    v.min_cpus = uniform_bounds_and_demand ? shared_lo : lo(rng);
    v.max_cpus = uniform_bounds_and_demand ? shared_hi : v.min_cpus + span(rng);
    v.demand_cpus = uniform_bounds_and_demand ? shared_demand : demand(rng);
  }
  return vms;
}

class DivideProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(DivideProperty, BoundsAndDemandAreHonouredAndTotalNeverExceeded) {
  std::mt19937_64 rng(GetParam());
  std::uniform_int_distribution<int> total_dist(0, 120);
  for (int round = 0; round < 500; ++round) {
    const std::vector<VmDemand> vms = random_vms(rng, false);
    const int total = total_dist(rng);
    const Division d = divide(vms, total, 0.8);
    EXPECT_LE(sum(d.cpus), total);
    EXPECT_LE(sum(d.share_cpus), total + 1e-9);
    int sum_min = 0;
    for (const VmDemand& v : vms) sum_min += v.min_cpus;
    for (std::size_t i = 0; i < vms.size(); ++i) {
      const double demand = vms[i].demand_cpus < 0 ? vms[i].max_cpus : vms[i].demand_cpus;
      EXPECT_LE(d.cpus[i], vms[i].max_cpus);
      EXPECT_LE(d.cpus[i], std::max<double>(vms[i].min_cpus, std::ceil(demand)));
      EXPECT_LE(d.share_cpus[i], std::min<double>(demand, vms[i].max_cpus) + 1e-9);
      if (sum_min <= total) {
        EXPECT_GE(d.cpus[i], vms[i].min_cpus);
      }
    }
  }
}

TEST_P(DivideProperty, FullContentionIsThePlainFormula) {
  std::mt19937_64 rng(GetParam());
  std::uniform_int_distribution<int> total_dist(0, 120);
  std::bernoulli_distribution unknown(0.5);
  for (int round = 0; round < 500; ++round) {
    std::vector<VmDemand> vms = random_vms(rng, false);
    std::vector<double> priority, max_demand;
    std::vector<int> min, max;
    for (VmDemand& v : vms) {
      v.demand_cpus = unknown(rng) ? -1.0 : v.max_cpus + 0.5;  // everyone wants all it can use
      priority.push_back(v.priority);
      min.push_back(v.min_cpus);
      max.push_back(v.max_cpus);
      max_demand.push_back(v.max_cpus);
    }
    const int total = total_dist(rng);
    const Division d = divide(vms, total, 0.8);
    const std::vector<double> w = compute_weights(priority, 0.8);
    EXPECT_EQ(d.weights, w);
    EXPECT_EQ(d.cpus, apportion(w, total, min, max));
    EXPECT_EQ(d.share_cpus, waterfill(w, max_demand, total));
  }
}

TEST_P(DivideProperty, UnboundedFullContentionSharesAreTotalTimesWeight) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 200; ++round) {
    std::vector<VmDemand> vms = random_vms(rng, false);
    const int total = 64;
    for (VmDemand& v : vms) v = vm(v.name, v.priority, 0, total);
    const Division d = divide(vms, total, 0.8);
    EXPECT_EQ(sum(d.cpus), total);
    for (std::size_t i = 0; i < vms.size(); ++i) EXPECT_NEAR(d.share_cpus[i], total * d.weights[i], 1e-9);
  }
}

TEST_P(DivideProperty, BetterPriorityNeverGetsLessUnderEqualBoundsAndDemand) {
  std::mt19937_64 rng(GetParam());
  std::uniform_int_distribution<int> total_dist(0, 120);
  for (int round = 0; round < 500; ++round) {
    const std::vector<VmDemand> vms = random_vms(rng, true);
    const Division d = divide(vms, total_dist(rng), 0.8);
    for (std::size_t i = 0; i < vms.size(); ++i) {
      for (std::size_t j = 0; j < vms.size(); ++j) {
        if (vms[i].priority < vms[j].priority) {
          EXPECT_GE(d.weights[i], d.weights[j]);
          EXPECT_GE(d.share_cpus[i], d.share_cpus[j]);
          EXPECT_GE(d.cpus[i], d.cpus[j]);
        }
      }
    }
  }
}

TEST_P(DivideProperty, SameInputSameOutputAndOrderDoesNotMatter) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 200; ++round) {
    std::vector<VmDemand> vms = random_vms(rng, false);
    const Division d = divide(vms, 40, 0.8);
    const Division again = divide(vms, 40, 0.8);
    EXPECT_EQ(d.cpus, again.cpus);
    EXPECT_EQ(d.share_cpus, again.share_cpus);
    std::reverse(vms.begin(), vms.end());
    std::vector<int> reversed = divide(vms, 40, 0.8).cpus;
    std::reverse(reversed.begin(), reversed.end());
    EXPECT_EQ(reversed, d.cpus);
  }
}

TEST_P(DivideProperty, ShuffledInputGivesEveryNameTheSameResult) {
  std::mt19937_64 rng(GetParam());
  std::uniform_int_distribution<int> total_dist(0, 120);
  for (int round = 0; round < 200; ++round) {
    std::vector<VmDemand> vms = random_vms(rng, round % 2 == 0);  // uniform bounds: many ties
    const int total = total_dist(rng);
    const Division d = divide(vms, total, 0.8);
    std::shuffle(vms.begin(), vms.end(), rng);
    const Division shuffled = divide(vms, total, 0.8);
    for (std::size_t k = 0; k < vms.size(); ++k) {
      const std::size_t i = static_cast<std::size_t>(std::find(d.names.begin(), d.names.end(), vms[k].name) -
                                                     d.names.begin());
      ASSERT_LT(i, d.names.size());
      EXPECT_EQ(shuffled.names[k], d.names[i]);
      EXPECT_EQ(shuffled.weights[k], d.weights[i]);  // bit for bit: the same arithmetic in the same order
      EXPECT_EQ(shuffled.share_cpus[k], d.share_cpus[i]);
      EXPECT_EQ(shuffled.cpus[k], d.cpus[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, DivideProperty, ::testing::Values(1u, 7u, 42u, 2024u));

}  // namespace
}  // namespace llmorch::policy
