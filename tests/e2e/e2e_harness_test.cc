// The harness's own pure parts: recognising sanitizer reports in a child's output (what makes the
// sanitized e2e run fail when llmorchd or the CLI reports a leak, an overflow or undefined behaviour).
#include <gtest/gtest.h>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

TEST(SanitizerReport, FindsEachKindFromTheStartOfItsLine) {
  const std::string log = "[info] tick\n==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n#0 f\n";
  EXPECT_EQ(sanitizer_report(log), "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n#0 f\n");
  EXPECT_FALSE(sanitizer_report("==1==ERROR: LeakSanitizer: detected memory leaks\n").empty());
  EXPECT_FALSE(sanitizer_report("daemon.cc:12:3: runtime error: signed integer overflow\n").empty());
  EXPECT_FALSE(sanitizer_report("WARNING: ThreadSanitizer: data race (pid=7)\n").empty());
}

TEST(SanitizerReport, CleanOutputHasNone) {
  EXPECT_EQ(sanitizer_report(""), "");
  EXPECT_EQ(sanitizer_report("[warn] vm x: agent sent a malformed frame: bad field 'AddressSanitizer'\n"), "");
}

TEST(SanitizerReport, KeepsAtMostFourThousandCharacters) {
  const std::string log = "ERROR: AddressSanitizer: x\n" + std::string(10000, 'a');
  EXPECT_EQ(sanitizer_report(log).size(), 4000u);
}

}  // namespace
}  // namespace llmorch::e2e
