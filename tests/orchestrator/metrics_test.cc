// Prometheus exposition (metrics.h): fixed input -> golden text, label escaping, histogram buckets,
// and promtool's own check of the rendered text.
//   LLMORCH_UPDATE_GOLDEN=1 ctest --test-dir BUILD -R Metrics   (then review `git diff tests/golden`)
#include "llmorch/orch/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace llmorch::orch {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Two VMs, one with every optional figure and a name that needs escaping, one with none; counters
// with a few observations each.
MetricsSnapshot sample_snapshot() {
  MetricsSnapshot s;
  s.libvirt_up = true;
  VmMetrics a;
  a.name = "llm-a";
  a.priority = 1;
  a.priority_source = "agent";
  a.weight = 0.7105;
  a.cpu_shares = 1455;
  a.vcpus_online = 2;
  a.cpu_seconds = 123.456;
  a.balloon_actual_bytes = 200ull << 20;
  a.balloon_target_bytes = 180ull << 20;
  a.balloon_floor_bytes = 96ull << 20;
  a.report_age_seconds = 0.4;
  a.flapping = true;
  VmMetrics b;
  b.name = "we\"ird\\vm\nname";
  b.priority = 3;
  b.priority_source = "template";
  b.weight = 0.2895;
  b.cpu_shares = 593;
  b.balloon_floor_bytes = 64ull << 20;
  b.hostile = true;
  b.unresponsive = true;
  s.vms = {a, b};
  for (double t : {0.004, 0.004, 0.03, 20.0}) s.counters.tick_seconds.observe(t);
  for (double t : {0.0005, 0.0011}) s.counters.report_to_applied_seconds.observe(t);
  s.counters.actions_applied = {{"cpu_shares", 4}, {"pin_vcpu", 6}, {"balloon", 1}};
  s.counters.reconnects = 2;
  return s;
}

TEST(Metrics, RendersGoldenText) {
  const std::string actual = render_metrics(sample_snapshot(), "1.2.3");
  const std::string path = std::string(LLMORCH_GOLDEN_DIR) + "/metrics.prom";
  const char* update = std::getenv("LLMORCH_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    std::ofstream(path) << actual;
    GTEST_SKIP() << "rewrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path << " is missing; run with LLMORCH_UPDATE_GOLDEN=1 to create it";
  EXPECT_EQ(actual, read_file(path)) << "rendered metrics differ from " << path
                                     << "; if intended, rerun with LLMORCH_UPDATE_GOLDEN=1";
}

TEST(Metrics, EscapesLabelValues) {
  EXPECT_EQ(escape_label_value("plain-name_1.x"), "plain-name_1.x");
  EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
  EXPECT_EQ(escape_label_value("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(escape_label_value("two\nlines"), "two\\nlines");
  EXPECT_EQ(escape_label_value("tab\tand ünïcode"), "tab\tand ünïcode");  // the spec escapes only those three
  const std::string text = render_metrics(sample_snapshot(), "v\"1");
  EXPECT_NE(text.find("llmorch_vm_weight{vm=\"we\\\"ird\\\\vm\\nname\"} 0.2895\n"), std::string::npos) << text;
  EXPECT_NE(text.find("llmorch_build_info{version=\"v\\\"1\"} 1\n"), std::string::npos) << text;
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Histogram h({0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 1.0, 5.0, 50.0, 60.0}) h.observe(v);
  // Per bucket: (..0.1] 2 (0.1 is on the bound), (0.1..1] 2, (1..10] 1, above 10: 2.
  EXPECT_EQ(h.counts(), (std::vector<std::uint64_t>{2, 2, 1, 2}));
  EXPECT_EQ(h.count(), 7u);
  EXPECT_DOUBLE_EQ(h.sum(), 116.65);
  MetricsSnapshot s;
  s.counters.tick_seconds = h;
  const std::string text = render_metrics(s, "x");
  const std::string expected =
      "# HELP llmorch_tick_duration_seconds Duration of one reconcile of the whole host.\n"
      "# TYPE llmorch_tick_duration_seconds histogram\n"
      "llmorch_tick_duration_seconds_bucket{le=\"0.1\"} 2\n"
      "llmorch_tick_duration_seconds_bucket{le=\"1\"} 4\n"
      "llmorch_tick_duration_seconds_bucket{le=\"10\"} 5\n"
      "llmorch_tick_duration_seconds_bucket{le=\"+Inf\"} 7\n"
      "llmorch_tick_duration_seconds_sum 116.65\n"
      "llmorch_tick_duration_seconds_count 7\n";
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_THROW(Histogram({1, 1}), std::invalid_argument);
  EXPECT_THROW(Histogram({2, 1}), std::invalid_argument);
}

TEST(Metrics, UnknownValuesHaveNoSeriesButEveryFamilyHasHelpAndType) {
  MetricsSnapshot s;
  VmMetrics v;
  v.name = "bare";
  v.priority_source = "template";
  s.vms = {v};
  const std::string text = render_metrics(s, "x");
  for (const char* family :
       {"llmorch_vm_vcpus_online", "llmorch_vm_cpu_seconds_total", "llmorch_vm_balloon_actual_bytes",
        "llmorch_vm_balloon_target_bytes", "llmorch_vm_agent_report_age_seconds"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
    EXPECT_NE(text.find(std::string("# HELP ") + family + " "), std::string::npos) << family;
    EXPECT_EQ(text.find(std::string(family) + "{vm=\"bare\"}"), std::string::npos) << family << " has a sample";
  }
  EXPECT_NE(text.find("llmorch_vm_hostile{vm=\"bare\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("llmorch_libvirt_up 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("llmorch_vm_priority{vm=\"bare\",source=\"template\"} 1\n"), std::string::npos) << text;
}

TEST(Metrics, VmMetricsComeFromTheStatusFile) {
  StatusFile f;
  StatusFileVm a;
  a.name = "a";
  a.effective_priority = 2;
  a.priority_source = "stale";
  a.weight = 0.25;
  a.cpu_shares = 512;
  a.vcpus_online = 3;
  a.report_age_s = 7.5;
  a.balloon.actual_mib = 100;
  a.balloon.floor_mib = 50;
  StatusFileVm b;
  b.name = "b";
  f.vms = {a, b};
  f.vms[0].cpu_time_s = 12.5;
  f.problems = {{"b", "unresponsive", "libvirt did not return", "2026-01-01T00:00:00.000Z"},
                {"a", "channel_held", "held", "2026-01-01T00:00:00.000Z"}};
  const std::vector<VmMetrics> m = vm_metrics(f);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].priority, 2);
  EXPECT_EQ(m[0].priority_source, "stale");
  EXPECT_EQ(m[0].cpu_shares, 512);
  EXPECT_EQ(m[0].vcpus_online, 3);
  EXPECT_EQ(m[0].cpu_seconds, 12.5);
  EXPECT_EQ(m[0].balloon_actual_bytes, 100ull << 20);
  EXPECT_FALSE(m[0].balloon_target_bytes);
  EXPECT_EQ(m[0].balloon_floor_bytes, 50ull << 20);
  EXPECT_EQ(m[0].report_age_seconds, 7.5);
  EXPECT_FALSE(m[0].unresponsive);
  EXPECT_TRUE(m[1].unresponsive);
  EXPECT_FALSE(m[1].cpu_seconds);
}

TEST(Metrics, ParsesListenAddresses) {
  EXPECT_EQ(parse_listen_address("127.0.0.1:9477").host, "127.0.0.1");
  EXPECT_EQ(parse_listen_address("127.0.0.1:9477").port, 9477);
  EXPECT_EQ(parse_listen_address("[::1]:80").host, "::1");
  EXPECT_EQ(parse_listen_address("localhost:1").port, 1);
  for (const char* bad : {"9477", ":9477", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "::1:9477", "[::1:9477",
                          "host:12x", "host:-1"}) {
    try {
      parse_listen_address(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("use e.g. 127.0.0.1:9477"), std::string::npos) << e.what();
    }
  }
}

// The text is rendered on the tick thread: what that costs for a large host.
TEST(Metrics, RenderCostFor1000Vms) {
  MetricsSnapshot s = sample_snapshot();
  const VmMetrics model = s.vms[0];
  s.vms.clear();
  for (int i = 0; i < 1000; ++i) {
    s.vms.push_back(model);
    s.vms.back().name = "llm-" + std::to_string(i);
  }
  constexpr int kRounds = 20;
  std::size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) bytes = render_metrics(s, "x").size();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() /
                    kRounds;
  std::printf("render_metrics, 1,000 VMs: %.2f ms, %zu bytes\n", ms, bytes);
  EXPECT_GT(bytes, 1000u * 13 * 20);  // every VM in every family
  EXPECT_LT(ms, 100.0);               // a sanity bound, not a benchmark (sanitizers are slower)
}

// promtool (Debian package prometheus) parses and lints the text as Prometheus itself would.
TEST(Metrics, PromtoolAcceptsTheOutput) {
  char path[] = "/tmp/llmorch-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << render_metrics(sample_snapshot(), "1.2.3");
  FILE* p = ::popen((std::string("promtool check metrics < ") + path + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 256> buf{};
  while (std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int status = ::pclose(p);
  ::unlink(path);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  ASSERT_NE(WEXITSTATUS(status), 127) << "promtool not found: install Debian's prometheus package (tools/deps)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_EQ(out, "") << "promtool has remarks";
}

}  // namespace
}  // namespace llmorch::orch
