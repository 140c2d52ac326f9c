#include "sampler.h"

#include <gtest/gtest.h>

#include "fake_root.h"

namespace llmorch::agent {
namespace {

const char kMeminfo[] =
    "MemTotal:         262144 kB\n"
    "MemFree:          100000 kB\n"
    "MemAvailable:     180000 kB\n"
    "Buffers:            1000 kB\n";

const char kStat[] =
    "cpu  100 0 100 700 100 0 0 0 0 0\n"
    "cpu0 50 0 50 350 50 0 0 0 0 0\n"
    "cpu1 50 0 50 350 50 0 0 0 0 0\n"
    "intr 1 2 3\n"
    "procs_running 3\n"
    "procs_blocked 0\n";

const char kPsi[] =
    "some avg10=12.34 avg60=5.00 avg300=1.00 total=12345\n"
    "full avg10=1.00 avg60=0.50 avg300=0.10 total=100\n";

TEST(Sampler, ParsesMeminfo) {
  auto m = parse_meminfo(kMeminfo);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->total_kib, 262144u);
  EXPECT_EQ(m->available_kib, 180000u);
  EXPECT_FALSE(parse_meminfo("MemTotal: 5 kB\n"));  // no MemAvailable
  EXPECT_FALSE(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n"));
  EXPECT_EQ(parse_meminfo("MemTotal: 5 kB\nMemAvailable: 9 kB\n")->available_kib, 5u);  // never above total
}

TEST(Sampler, ParsesPsiSomeAvg10) {
  EXPECT_DOUBLE_EQ(*parse_psi_some10(kPsi), 12.34);
  EXPECT_FALSE(parse_psi_some10("full avg10=1.00 avg60=0 avg300=0 total=0\n"));
  EXPECT_FALSE(parse_psi_some10("some avg10=abc avg60=0\n"));
  EXPECT_FALSE(parse_psi_some10(""));
}

TEST(Sampler, ParsesStatAndComputesUtilisationFromDeltas) {
  ProcSample a;
  parse_stat(kStat, &a);
  ASSERT_TRUE(a.cpu && a.procs_running);
  EXPECT_EQ(a.cpu->total, 1000u);
  EXPECT_EQ(a.cpu->idle, 800u);
  EXPECT_EQ(*a.procs_running, 3u);
  EXPECT_EQ(a.cpus_in_stat, 2u);
  CpuTimes later{a.cpu->total + 200, a.cpu->idle + 50};  // 150 of 200 ticks busy
  EXPECT_DOUBLE_EQ(cpu_percent(*a.cpu, later), 75.0);
  EXPECT_DOUBLE_EQ(cpu_percent(*a.cpu, *a.cpu), 0.0);  // no time passed
  EXPECT_DOUBLE_EQ(cpu_percent(later, *a.cpu), 0.0);   // counters went backwards
}

TEST(Sampler, ReadsAFakeProcTree) {
  FakeRoot root;
  root.write("meminfo", kMeminfo);
  root.write("stat", kStat);
  root.write("pressure/cpu", kPsi);
  root.write("cmdline", "console=ttyS0 llmorch.priority=2\n");
  ProcSampler sampler(root.path());
  ProcSample s = sampler.sample();
  ASSERT_TRUE(s.mem);
  EXPECT_EQ(s.mem->total_kib, 262144u);
  EXPECT_DOUBLE_EQ(*s.psi_cpu_some10, 12.34);
  EXPECT_FALSE(s.psi_mem_some10);  // no /proc/pressure/memory: kernel without PSI
  EXPECT_EQ(*s.procs_running, 3u);
  EXPECT_NE(sampler.cmdline().find("llmorch.priority=2"), std::string::npos);
}

TEST(Sampler, MissingProcGivesEmptySample) {
  ProcSample s = ProcSampler("/nonexistent-llmorch").sample();
  EXPECT_FALSE(s.mem || s.cpu || s.procs_running || s.psi_cpu_some10);
}

}  // namespace
}  // namespace llmorch::agent
