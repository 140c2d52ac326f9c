// CpuPolicy's one spelling, both ways.
#include "llmorch/policy/types.h"

#include <gtest/gtest.h>

namespace llmorch::policy {
namespace {

TEST(CpuPolicyNames, RoundTripAndRejectOthers) {
  EXPECT_EQ(to_string(CpuPolicy::Dedicated), "dedicated");
  EXPECT_EQ(to_string(CpuPolicy::Shared), "shared");
  for (CpuPolicy p : {CpuPolicy::Dedicated, CpuPolicy::Shared}) EXPECT_EQ(cpu_policy_from_string(to_string(p)), p);
  EXPECT_EQ(cpu_policy_from_string("Shared"), std::nullopt);  // case matters, as in templates and metadata
  EXPECT_EQ(cpu_policy_from_string(""), std::nullopt);
  EXPECT_EQ(cpu_policy_from_string("shared "), std::nullopt);
}

}  // namespace
}  // namespace llmorch::policy
