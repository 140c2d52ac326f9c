// Messages between the in-guest agent and the host, and the limits every field must respect.
// The wire format is documented in agent/protocol/PROTOCOL.md; keep the two in step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <variant>

namespace llmorch::protocol {

inline constexpr char kMagic[] = "LLMO1";            // protocol name + version, first word of a frame
inline constexpr std::size_t kMaxFrameBytes = 1024;  // excluding the terminating '\n'

// Field limits (inclusive). Anything outside is a malformed frame, never silently trusted.
inline constexpr double kMaxPriority = 1e6;
inline constexpr double kMaxPercent = 100.0;
inline constexpr std::uint64_t kMaxRunnable = 1'000'000;
inline constexpr std::uint64_t kMaxCpus = 8192;
inline constexpr std::uint64_t kMaxMemKib = std::uint64_t{1} << 50;  // 1 EiB
inline constexpr std::uint64_t kMaxFloorMib = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kMaxLlmRequests = 1'000'000;
inline constexpr std::uint64_t kMinIntervalMs = 100;
inline constexpr std::uint64_t kMaxIntervalMs = 60'000;

// Guest -> host, once per interval.
struct Report {
  std::uint64_t seq = 0;                 // increments per report; restarts at 0 with the agent
  std::optional<double> priority;        // 1 = most important; absent: the guest states none
  double cpu_pct = 0;                    // CPU utilisation of the whole guest over the last interval
  std::optional<double> psi_cpu_some10;  // /proc/pressure/cpu some avg10; absent without PSI
  std::uint64_t runnable = 0;            // runnable tasks (procs_running)
  std::uint64_t ncpu_online = 1;
  std::uint64_t mem_total_kib = 0;
  std::uint64_t mem_avail_kib = 0;           // <= mem_total_kib
  std::optional<double> psi_mem_some10;      // /proc/pressure/memory some avg10; absent without PSI
  std::uint64_t floor_mib = 0;               // memory the guest's workload needs resident; 0: none
  std::optional<std::uint64_t> llm_running;  // local LLM server queue; absent when not configured
  std::optional<std::uint64_t> llm_waiting;
  std::uint64_t interval_ms = 1000;  // the agent's current report interval

  bool operator==(const Report&) const = default;
};

// Host -> guest.
struct ConfigCommand {  // "config interval_ms=N"
  std::uint64_t interval_ms = 1000;
  bool operator==(const ConfigCommand&) const = default;
};
struct VcpusCommand {  // "vcpus online=N": keep N CPUs online (cpu0 always)
  std::uint64_t online = 1;
  bool operator==(const VcpusCommand&) const = default;
};
using HostCommand = std::variant<ConfigCommand, VcpusCommand>;

}  // namespace llmorch::protocol
