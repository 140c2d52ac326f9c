#include <gtest/gtest.h>

#include <stdexcept>

#include "llmorch/orch/config.h"

namespace llmorch::orch {
namespace {

using Set = std::set<policy::CpuId>;

std::string error_of(const std::string& text) {
  try {
    parse_cpu_list(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CpuList, ParsesIdsAndRanges) {
  EXPECT_EQ(parse_cpu_list("0-3,8"), (Set{0, 1, 2, 3, 8}));
  EXPECT_EQ(parse_cpu_list("5"), (Set{5}));
  EXPECT_EQ(parse_cpu_list(" 1 , 3 - 4 ,1"), (Set{1, 3, 4}));
  EXPECT_EQ(parse_cpu_list("0,48"), (Set{0, 48}));
}

TEST(CpuList, RejectsBadPartsNamingThem) {
  EXPECT_NE(error_of("3-1").find("'3-1'"), std::string::npos) << error_of("3-1");
  EXPECT_NE(error_of("0,a").find("'a'"), std::string::npos) << error_of("0,a");
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("  ").find("empty"), std::string::npos);
  EXPECT_NE(error_of("1,,2").find("empty entry"), std::string::npos);
  EXPECT_NE(error_of("-1").find("'-1'"), std::string::npos);
  EXPECT_NE(error_of("2x").find("'2x'"), std::string::npos);
  EXPECT_NE(error_of("0-4000000000").find("0-4000000000"), std::string::npos);
}

TEST(CpuList, FormatsCompactly) {
  EXPECT_EQ(format_cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(format_cpu_list({}), "");
  EXPECT_EQ(format_cpu_list({7}), "7");
  const Set odd{1, 3, 5, 6, 7, 100};
  EXPECT_EQ(parse_cpu_list(format_cpu_list(odd)), odd);
}

}  // namespace
}  // namespace llmorch::orch
