// compute_weights and cpu_shares: the worked example, invalid input, and randomized properties.
#include "llmorch/policy/weighting.h"

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

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Random priorities: mostly small integers (as operators write them), some arbitrary reals.
std::vector<double> random_priorities(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> count(1, 40);
  std::uniform_int_distribution<int> small(1, 10);
  std::uniform_real_distribution<double> real(0.01, 100.0);
  std::bernoulli_distribution use_integer(0.7);
  std::vector<double> p(count(rng));
  for (double& x : p) x = use_integer(rng) ? small(rng) : real(rng);
  return p;
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

std::string message_of(const std::vector<double>& priorities, double alpha) {
  try {
    compute_weights(priorities, alpha);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(ComputeWeights, WorkedExampleFromTheDesign) {
  const std::vector<double> w = compute_weights(std::vector<double>{2.0, 1.0}, 0.8);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NEAR(w[0], 0.5 / 1.4, 1e-12);
  EXPECT_NEAR(w[1], 0.9 / 1.4, 1e-12);
  EXPECT_NEAR(w[0], 0.3571, 5e-5);
  EXPECT_NEAR(w[1], 0.6429, 5e-5);
}

TEST(ComputeWeights, DefaultAlphaIsPointEight) {
  const std::vector<double> p{3.0, 1.0, 2.0};
  EXPECT_EQ(compute_weights(p), compute_weights(p, 0.8));
}

TEST(ComputeWeights, EmptyInputGivesEmptyOutput) { EXPECT_TRUE(compute_weights(std::vector<double>{}, 0.5).empty()); }

TEST(ComputeWeights, SingleVmGetsEverything) {
  EXPECT_EQ(compute_weights(std::vector<double>{7.0}, 0.3), std::vector<double>{1.0});
}

TEST(ComputeWeights, RejectsBadPrioritiesNamingThem) {
  for (double bad : {0.0, -1.0, -0.0, kNaN, kInf, -kInf}) {
    const std::string msg = message_of({1.0, bad}, 0.8);
    EXPECT_NE(msg.find("priority #2"), std::string::npos) << bad << ": " << msg;
  }
}

TEST(ComputeWeights, RejectsAlphaOutsideUnitIntervalNamingIt) {
  for (double bad : {-0.01, 1.01, kNaN, kInf}) {
    const std::string msg = message_of({1.0, 2.0}, bad);
    EXPECT_NE(msg.find("alpha"), std::string::npos) << bad << ": " << msg;
  }
}

TEST(ComputeWeights, AcceptsAlphaAtBothEnds) {
  EXPECT_NO_THROW(compute_weights(std::vector<double>{1.0, 2.0}, 0.0));
  EXPECT_NO_THROW(compute_weights(std::vector<double>{1.0, 2.0}, 1.0));
}

TEST(ComputeWeights, RejectsPrioritiesWhoseInverseOverflows) {
  EXPECT_THROW(compute_weights(std::vector<double>{1e-320, 1.0}, 1.0), std::invalid_argument);
}

class ComputeWeightsProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(ComputeWeightsProperty, SumsToOneAndBetterPriorityNeverWeighsLess) {
  std::mt19937_64 rng(GetParam());
  std::uniform_real_distribution<double> alpha_dist(0.0, 1.0);
  for (int round = 0; round < 200; ++round) {
    const std::vector<double> p = random_priorities(rng);
    const double alpha = alpha_dist(rng);
    const std::vector<double> w = compute_weights(p, alpha);
    ASSERT_EQ(w.size(), p.size());
    EXPECT_NEAR(sum(w), 1.0, 1e-12);
    for (std::size_t i = 0; i < p.size(); ++i) {
      EXPECT_GT(w[i], 0.0);
      for (std::size_t j = 0; j < p.size(); ++j) {
        if (p[i] < p[j]) {
          EXPECT_GE(w[i], w[j]) << "p " << p[i] << " vs " << p[j] << ", alpha " << alpha;
        }
        if (p[i] == p[j]) {
          EXPECT_EQ(w[i], w[j]);
        }
      }
    }
  }
}

TEST_P(ComputeWeightsProperty, AlphaZeroIsAnEqualSplit) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 200; ++round) {
    const std::vector<double> p = random_priorities(rng);
    for (double w : compute_weights(p, 0.0)) EXPECT_NEAR(w, 1.0 / p.size(), 1e-12);
  }
}

TEST_P(ComputeWeightsProperty, AlphaOneIsProportionalToInversePriority) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 200; ++round) {
    const std::vector<double> p = random_priorities(rng);
    const std::vector<double> w = compute_weights(p, 1.0);
    double inverse_sum = 0.0;
    for (double x : p) inverse_sum += 1.0 / x;
    for (std::size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(w[i], (1.0 / p[i]) / inverse_sum, 1e-12);
  }
}

TEST_P(ComputeWeightsProperty, SameInputSameOutput) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 50; ++round) {
    const std::vector<double> p = random_priorities(rng);
    EXPECT_EQ(compute_weights(p, 0.8), compute_weights(p, 0.8));
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, ComputeWeightsProperty, ::testing::Values(1u, 7u, 42u, 2024u));

TEST(CpuShares, EqualSplitIsTheKernelDefault) {
  EXPECT_EQ(cpu_shares(0.25, 4), 1024);
  EXPECT_EQ(cpu_shares(1.0, 1), 1024);
}

TEST(CpuShares, WorkedExample) {
  const std::vector<double> w = compute_weights(std::vector<double>{2.0, 1.0}, 0.8);
  EXPECT_EQ(cpu_shares(w[0], 2), 731);   // round(0.35714 * 2048)
  EXPECT_EQ(cpu_shares(w[1], 2), 1317);  // round(0.64286 * 2048)
}

TEST(CpuShares, ClampsToCgroupRange) {
  EXPECT_EQ(cpu_shares(0.0, 10), kMinCpuShares);
  EXPECT_EQ(cpu_shares(1e-9, 10), kMinCpuShares);
  EXPECT_EQ(cpu_shares(1.0, 1000), kMaxCpuShares);
  EXPECT_EQ(cpu_shares(1.0, std::size_t{1} << 40), kMaxCpuShares);  // would overflow int unclamped
}

TEST(CpuShares, RatiosOfSharesFollowRatiosOfWeights) {
  std::mt19937_64 rng(99);
  for (int round = 0; round < 200; ++round) {
    const std::vector<double> w = compute_weights(random_priorities(rng), 0.8);
    const double scale = w.size() * 1024.0;  // shares per unit of weight: ratios are preserved
    for (std::size_t i = 0; i < w.size(); ++i) {
      const int s = cpu_shares(w[i], w.size());
      EXPECT_GE(s, kMinCpuShares);
      EXPECT_LE(s, kMaxCpuShares);
      if (w[i] * scale >= kMinCpuShares && w[i] * scale <= kMaxCpuShares) {
        EXPECT_LE(std::abs(s - w[i] * scale), 0.5);  // only whole-share rounding
      }
      for (std::size_t j = 0; j < w.size(); ++j) {
        if (w[i] > w[j]) {
          EXPECT_GE(s, cpu_shares(w[j], w.size()));
        }
      }
    }
  }
}

TEST(CpuShares, RejectsBadInput) {
  EXPECT_THROW(cpu_shares(-0.1, 2), std::invalid_argument);
  EXPECT_THROW(cpu_shares(kNaN, 2), std::invalid_argument);
  EXPECT_THROW(cpu_shares(0.5, 0), std::invalid_argument);
}

// weight_terms is the arithmetic compute_weights normalises: explain prints these numbers.
TEST(WeightTerms, AreTheFormulaTermsAndNormaliseToComputeWeights) {
  const std::vector<double> p{2, 1};
  const std::vector<WeightTerm> t = weight_terms(p, 0.8);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_DOUBLE_EQ(t[0].priority_part, 0.4);  // 0.8 / 2
  EXPECT_DOUBLE_EQ(t[1].priority_part, 0.8);  // 0.8 / 1
  EXPECT_DOUBLE_EQ(t[0].equal_part, 0.1);     // 0.2 / 2
  EXPECT_DOUBLE_EQ(t[1].equal_part, 0.1);
  EXPECT_DOUBLE_EQ(t[0].raw, 0.5);
  EXPECT_DOUBLE_EQ(t[1].raw, 0.9);
  std::mt19937_64 rng(12);
  for (int round = 0; round < 200; ++round) {
    const std::vector<double> prio = random_priorities(rng);
    const double alpha = std::uniform_real_distribution<double>(0, 1)(rng);
    const std::vector<WeightTerm> terms = weight_terms(prio, alpha);
    const std::vector<double> w = compute_weights(prio, alpha);
    double sum = 0;
    for (const WeightTerm& x : terms) sum += x.raw;
    ASSERT_EQ(terms.size(), w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      EXPECT_DOUBLE_EQ(terms[i].raw, terms[i].priority_part + terms[i].equal_part);
      EXPECT_DOUBLE_EQ(terms[i].raw / sum, w[i]) << "round " << round << " VM " << i;
    }
  }
}

TEST(WeightTerms, RejectWhatComputeWeightsRejects) {
  EXPECT_THROW(weight_terms(std::vector<double>{1, 0}, 0.8), std::invalid_argument);
  EXPECT_THROW(weight_terms(std::vector<double>{1}, 1.5), std::invalid_argument);
  EXPECT_TRUE(weight_terms(std::vector<double>{}, 0.8).empty());
}

}  // namespace
}  // namespace llmorch::policy
