// Reads the guest's load and memory from /proc (root injectable for tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace llmorch::agent {

struct MemInfo {
  std::uint64_t total_kib = 0;
  std::uint64_t available_kib = 0;
};

struct CpuTimes {  // aggregate "cpu" line of /proc/stat, in ticks
  std::uint64_t total = 0;
  std::uint64_t idle = 0;  // idle + iowait
};

struct ProcSample {
  std::optional<MemInfo> mem;
  std::optional<CpuTimes> cpu;
  std::optional<std::uint64_t> procs_running;
  std::uint64_t cpus_in_stat = 0;        // "cpuN" lines: the online CPUs, if sysfs says nothing
  std::optional<double> psi_cpu_some10;  // absent when the kernel has no PSI (Debian: boot with psi=1)
  std::optional<double> psi_mem_some10;
};

std::optional<MemInfo> parse_meminfo(const std::string& text);
// Returns the "some" line's avg10 of a /proc/pressure/* file.
std::optional<double> parse_psi_some10(const std::string& text);
// Fills cpu and procs_running from /proc/stat.
void parse_stat(const std::string& text, ProcSample* sample);
// Busy percentage between two samples of the same machine, in [0, 100]; 0 when no time passed.
double cpu_percent(const CpuTimes& before, const CpuTimes& after);

class ProcSampler {
 public:
  explicit ProcSampler(std::string proc_root) : root_(std::move(proc_root)) {}
  ProcSample sample() const;
  // The kernel command line, or "" when unreadable.
  std::string cmdline() const;

 private:
  std::string root_;
};

}  // namespace llmorch::agent
