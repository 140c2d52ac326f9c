#include "llmorch/protocol/codec.h"

#include <gtest/gtest.h>

#include <string>

namespace llmorch::protocol {
namespace {

Report full_report() {
  Report r;
  r.seq = 12;
  r.priority = 2.5;
  r.cpu_pct = 87.5;
  r.psi_cpu_some10 = 12.25;
  r.runnable = 3;
  r.ncpu_online = 2;
  r.mem_total_kib = 262144;
  r.mem_avail_kib = 100000;
  r.psi_mem_some10 = 0.5;
  r.floor_mib = 160;
  r.llm_running = 1;
  r.llm_waiting = 4;
  r.interval_ms = 1000;
  return r;
}

std::string strip_newline(std::string s) {
  EXPECT_EQ(s.back(), '\n');
  s.pop_back();
  return s;
}

TEST(Codec, ReportRoundTrips) {
  Report r = full_report();
  auto parsed = parse_report(strip_newline(encode(r)));
  ASSERT_TRUE(parsed.ok()) << parsed.error();
  EXPECT_EQ(parsed.value(), r);
}

TEST(Codec, ReportWithoutOptionalFieldsRoundTrips) {
  Report r = full_report();
  r.priority.reset();
  r.psi_cpu_some10.reset();
  r.psi_mem_some10.reset();
  r.llm_running.reset();
  r.llm_waiting.reset();
  std::string line = strip_newline(encode(r));
  EXPECT_EQ(line.find("prio"), std::string::npos);
  auto parsed = parse_report(line);
  ASSERT_TRUE(parsed.ok()) << parsed.error();
  EXPECT_EQ(parsed.value(), r);
}

TEST(Codec, EncodesTheDocumentedTextForm) {
  EXPECT_EQ(encode(full_report()),
            "LLMO1 report seq=12 prio=2.500 cpu_pct=87.5 psi_cpu_some10=12.25 runnable=3 ncpu_online=2 "
            "mem_total_kib=262144 mem_avail_kib=100000 psi_mem_some10=0.50 floor_mib=160 llm_running=1 "
            "llm_waiting=4 interval_ms=1000\n");
}

TEST(Codec, HostCommandsRoundTrip) {
  for (HostCommand c : {HostCommand(ConfigCommand{250}), HostCommand(VcpusCommand{3})}) {
    auto parsed = parse_host_command(strip_newline(encode(c)));
    ASSERT_TRUE(parsed.ok()) << parsed.error();
    EXPECT_EQ(parsed.value(), c);
  }
  EXPECT_EQ(encode(HostCommand(VcpusCommand{3})), "LLMO1 vcpus online=3\n");
}

const char* kMinimal =
    "LLMO1 report seq=1 cpu_pct=5 runnable=1 ncpu_online=1 mem_total_kib=1000 mem_avail_kib=500 floor_mib=0 "
    "interval_ms=1000";

TEST(Codec, AcceptsMinimalReportAndCountsUnknownKeys) {
  ParseStats stats;
  auto parsed = parse_report(std::string(kMinimal) + " future_key=7 other=x", &stats);
  ASSERT_TRUE(parsed.ok()) << parsed.error();
  EXPECT_EQ(stats.unknown_keys, 2u);
  EXPECT_FALSE(parsed.value().priority.has_value());
  EXPECT_DOUBLE_EQ(parsed.value().cpu_pct, 5.0);
}

struct Rejection {
  std::string frame;
  std::string error_contains;
};

class CodecRejects : public ::testing::TestWithParam<Rejection> {};

TEST_P(CodecRejects, Frame) {
  auto parsed = parse_report(GetParam().frame);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().find(GetParam().error_contains), std::string::npos) << parsed.error();
}

std::string with(const std::string& extra) { return std::string(kMinimal) + " " + extra; }
std::string without(const std::string& key) {
  std::string s = kMinimal;
  auto pos = s.find(" " + key + "=");
  auto end = s.find(' ', pos + 1);
  return s.erase(pos, end == std::string::npos ? std::string::npos : end - pos);
}

INSTANTIATE_TEST_SUITE_P(
    Bad, CodecRejects,
    ::testing::Values(
        Rejection{"", "does not start"}, Rejection{"hello world", "does not start"},
        Rejection{"LLMO2 report seq=1", "unsupported protocol version"}, Rejection{"LLMO1", "no message type"},
        Rejection{"LLMO1 config interval_ms=100", "unexpected message type"},
        Rejection{without("seq"), "required key seq"}, Rejection{without("interval_ms"), "required key interval_ms"},
        Rejection{with("prio=nan"), "prio"}, Rejection{with("prio=inf"), "prio"}, Rejection{with("prio=-1"), "prio"},
        Rejection{with("prio=1e300"), "prio"}, Rejection{with("prio=1x"), "prio"}, Rejection{with("prio="), "prio"},
        Rejection{with("seq=2"), "appears twice"}, Rejection{with("psi_mem_some10=100.5"), "psi_mem_some10"},
        Rejection{with("llm_waiting=-3"), "llm_waiting"},
        Rejection{with("runnable=99999999999999999999999"), "runnable"}, Rejection{with("novalue"), "not key=value"},
        Rejection{with("=5"), "not key=value"}, Rejection{std::string(kMinimal).replace(6, 1, "\0", 1), "printable"},
        Rejection{with("x=\t"), "printable"}, Rejection{with("mem_avail_kib=200"), "appears twice"},
        Rejection{std::string(kMinimal) + " " + std::string(1100, 'a'), "longer than"}));

TEST(Codec, RejectsAvailableAboveTotal) {
  std::string frame = without("mem_avail_kib") + " mem_avail_kib=1001";
  auto parsed = parse_report(frame);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().find("exceeds"), std::string::npos);
}

TEST(Codec, RejectsBadHostCommands) {
  EXPECT_FALSE(parse_host_command("LLMO1 config interval_ms=10").ok());      // below 100 ms
  EXPECT_FALSE(parse_host_command("LLMO1 config interval_ms=600001").ok());  // above 60 s
  EXPECT_FALSE(parse_host_command("LLMO1 vcpus online=0").ok());
  EXPECT_FALSE(parse_host_command("LLMO1 vcpus").ok());
  EXPECT_FALSE(parse_host_command("LLMO1 reboot now=1").ok());
  ParseStats stats;
  auto ok = parse_host_command("LLMO1 vcpus online=2 hint=x", &stats);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(std::get<VcpusCommand>(ok.value()).online, 2u);
  EXPECT_EQ(stats.unknown_keys, 1u);
}

}  // namespace
}  // namespace llmorch::protocol
