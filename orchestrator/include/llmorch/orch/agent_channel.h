// Host end of one guest's agent channel: the AF_UNIX socket libvirt binds for the virtio-serial port
// (ManagedDomain::channel_path; QEMU accepts one client at a time). Non-blocking throughout, so one
// guest can never stall the daemon or another guest: reads are bounded per wakeup and per second, writes that do not
// fit the socket buffer are dropped, and the AgentSession validates, clamps and rate-limits what arrives.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llmorch/orch/agent_session.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/protocol/messages.h"

namespace llmorch::orch {

inline constexpr std::size_t kMaxReadPerWakeup = 64 * 1024;
inline constexpr std::size_t kMaxPendingWrite = 4 * 1024;
// Each channel's reads are bounded by a byte budget: kReadBytesPerSecond, up to kReadBurstBytes saved.
// An agent sends ~250 bytes a second; a guest that floods its port costs llmorchd at most this much
// parsing, and its socket is not even polled while less than kMinReadBytes of budget is left (the
// guest's writes then wait in the virtio-serial queue, not in llmorchd).
inline constexpr std::size_t kReadBytesPerSecond = 16 * 1024;
inline constexpr std::size_t kReadBurstBytes = kMaxReadPerWakeup;
inline constexpr std::size_t kMinReadBytes = 4 * 1024;
// QEMU accepts a channel's client from its main loop: give it this long before asking whether it did.
inline constexpr std::chrono::milliseconds kHeldCheckAfter{1000};

AgentSessionLimits limits_for(const VmFacts& facts);

class AgentChannel {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  AgentChannel(std::string path, AgentSessionLimits limits, TimePoint now);
  ~AgentChannel();
  AgentChannel(const AgentChannel&) = delete;
  AgentChannel& operator=(const AgentChannel&) = delete;

  // Connects when not connected (one non-blocking attempt). True when connected afterwards.
  bool connect(TimePoint now);
  int fd() const { return fd_; }
  bool connected() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

  // Reads what is available, at most max_bytes and at most the byte budget left; returns the valid
  // reports it completed. Closes the socket on end of file or error (the next connect() reconnects).
  std::vector<protocol::Report> read_available(TimePoint now, std::size_t max_bytes = kMaxReadPerWakeup);
  // Connected, and at least kMinReadBytes of read budget: worth polling for input.
  bool wants_read(TimePoint now) const;
  std::uint64_t bytes_read() const { return bytes_read_; }
  // Queues a command and writes what the socket takes now. False when it was dropped (not connected, or
  // the pending buffer is full).
  bool send(const protocol::HostCommand& command);
  void flush();
  bool wants_write() const { return !pending_.empty(); }

  // A fresh session (the guest restarted): forgets reports, counters and partial frames.
  void reset(AgentSessionLimits limits, TimePoint now);
  AgentState state(TimePoint now) const;
  std::uint64_t dropped_writes() const { return dropped_writes_; }
  // Another process holds the channel (QEMU takes one client; the others wait in its listen queue,
  // unaccepted, and get nothing): a sentence saying so, else nullopt. Seen when the last connect failed
  // because that queue is full, or when llmorchd's connection, made kHeldCheckAfter ago or more, has
  // read nothing and the kernel says (sock_diag) that QEMU has not accepted it. Once the other client
  // lets go, QEMU accepts the waiting connection and reports flow.
  std::optional<std::string> held_by_another(TimePoint now) const;

 private:
  void close_socket();
  double budget(TimePoint now) const;

  std::string path_;
  AgentSessionLimits limits_;
  AgentSession session_;
  int fd_ = -1;
  std::string pending_;
  std::optional<protocol::Report> last_report_;
  TimePoint last_report_at_{};
  std::uint64_t dropped_writes_ = 0;
  double read_budget_ = kReadBurstBytes;  // bytes, as of budget_at_
  TimePoint budget_at_{};
  std::uint64_t bytes_read_ = 0;
  TimePoint connected_at_{};
  int connect_errno_ = 0;               // of the last failed connect
  std::uint64_t bytes_at_connect_ = 0;  // bytes_read_ when this connection was made
  mutable bool seen_accepted_ = false;  // this connection was accepted: no need to ask the kernel again
};

// One channel per active managed VM, kept in step with the domain list.
class AgentChannels {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Opens channels for new active VMs, closes those of VMs that stopped or vanished, and resets a VM's
  // session when its uuid or channel path changed (domain redefined or restarted). Then tries to
  // (re)connect every channel that is not connected.
  void sync(const std::vector<ManagedDomain>& domains, TimePoint now);
  // The guest restarted (lifecycle event): start its session afresh and reconnect.
  void restart(const std::string& vm, TimePoint now);

  AgentChannel* find(const std::string& vm);
  AgentState state(const std::string& vm, TimePoint now) const;
  std::map<std::string, AgentChannel*> all();
  // VM -> AgentChannel::held_by_another, for the channels another process holds.
  std::map<std::string, std::string> held_by_another(TimePoint now) const;

 private:
  struct Entry {
    std::string uuid;
    AgentSessionLimits limits;
    std::unique_ptr<AgentChannel> channel;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace llmorch::orch
