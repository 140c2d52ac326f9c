#include "llmorch/orch/agent_channel.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "llmorch/protocol/codec.h"

namespace llmorch::orch {

AgentSessionLimits limits_for(const VmFacts& facts) {
  AgentSessionLimits l;
  l.priority_min = facts.priority_min;
  l.priority_max = facts.priority_max;
  l.floor_max_mib = floor_claim_cap(facts);
  return l;
}

AgentChannel::AgentChannel(std::string path, AgentSessionLimits limits, TimePoint now)
    : path_(std::move(path)), limits_(limits), session_(limits, now), budget_at_(now) {}

AgentChannel::~AgentChannel() { close_socket(); }

void AgentChannel::close_socket() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  pending_.clear();
}

bool AgentChannel::connect(TimePoint now) {
  if (fd_ >= 0) return true;
  sockaddr_un addr{};
  if (path_.empty() || path_.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS) {
    connect_errno_ = errno;
    ::close(fd);
    return false;
  }
  connect_errno_ = 0;
  connected_at_ = now;
  seen_accepted_ = false;
  bytes_at_connect_ = bytes_read_;
  fd_ = fd;
  return true;
}

namespace {

// Whether the listener at the other end has accept()ed our connected AF_UNIX stream socket, from
// sock_diag (what `ss -x` shows): until it has, our peer is an embryo socket with no inode, so
// UNIX_DIAG_PEER is 0. nullopt when the kernel does not say (no sock_diag).
std::optional<bool> peer_accepted(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::nullopt;
  const int nl = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return std::nullopt;
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_ino = static_cast<std::uint32_t>(st.st_ino);
  msg.req.udiag_show = UDIAG_SHOW_PEER;
  msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0u;  // INET_DIAG_NOCOOKIE
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<bool> result;
  alignas(nlmsghdr) char buf[1024];
  if (::sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(sizeof msg)) {
    const ssize_t n = ::recv(nl, buf, sizeof buf, 0);
    const auto* h = reinterpret_cast<const nlmsghdr*>(buf);
    if (n > 0 && NLMSG_OK(h, static_cast<std::size_t>(n)) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
      const auto* diag = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *diag));
      result = false;  // no UNIX_DIAG_PEER attribute: no peer at all
      for (auto* a = reinterpret_cast<const rtattr*>(diag + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type != UNIX_DIAG_PEER) continue;
        std::uint32_t peer = 0;
        std::memcpy(&peer, RTA_DATA(a), sizeof peer);
        result = peer != 0;
      }
    }
  }
  ::close(nl);
  return result;
}

}  // namespace

std::optional<std::string> AgentChannel::held_by_another(TimePoint now) const {
  if (fd_ < 0) {
    if (connect_errno_ != EAGAIN) return std::nullopt;
    return "agent channel " + path_ +
           " is held by another process: QEMU's queue of clients waiting for the channel is full (it takes one "
           "client at a time); find the holder with `ss -xp | grep " +
           path_ + "` and stop it";
  }
  if (seen_accepted_ || bytes_read_ != bytes_at_connect_ || now - connected_at_ < kHeldCheckAfter) return std::nullopt;
  const std::optional<bool> accepted = peer_accepted(fd_);  // one netlink round trip, until accepted
  if (accepted != false) {
    seen_accepted_ = accepted.has_value();
    return std::nullopt;
  }
  return "agent channel " + path_ +
         " is held by another process: QEMU has not accepted llmorchd's connection (it takes one client at a time), "
         "so no reports arrive; find the holder with `ss -xp | grep " +
         path_ + "` and stop it";
}

double AgentChannel::budget(TimePoint now) const {
  const double elapsed_s = std::max(0.0, std::chrono::duration<double>(now - budget_at_).count());
  return std::min<double>(kReadBurstBytes, read_budget_ + elapsed_s * kReadBytesPerSecond);
}

bool AgentChannel::wants_read(TimePoint now) const { return fd_ >= 0 && budget(now) >= kMinReadBytes; }

std::vector<protocol::Report> AgentChannel::read_available(TimePoint now, std::size_t max_bytes) {
  std::vector<protocol::Report> reports;
  char buf[4096];
  std::size_t total = 0;
  read_budget_ = budget(now);
  budget_at_ = std::max(budget_at_, now);
  max_bytes = std::min(max_bytes, static_cast<std::size_t>(read_budget_));
  while (fd_ >= 0 && total < max_bytes) {
    const ssize_t n = ::recv(fd_, buf, std::min(sizeof buf, max_bytes - total), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      close_socket();  // guest side went away (QEMU stopped, or another client); reconnect later
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    total += static_cast<std::size_t>(n);
    read_budget_ -= static_cast<double>(n);
    bytes_read_ += static_cast<std::uint64_t>(n);
    for (auto& r : session_.feed(std::string_view(buf, static_cast<std::size_t>(n)), now)) {
      last_report_ = r;
      last_report_at_ = now;
      reports.push_back(std::move(r));
    }
  }
  return reports;
}

bool AgentChannel::send(const protocol::HostCommand& command) {
  const std::string frame = protocol::encode(command);
  if (fd_ < 0 || pending_.size() + frame.size() > kMaxPendingWrite) {
    ++dropped_writes_;
    return false;
  }
  pending_ += frame;
  flush();
  return true;
}

void AgentChannel::flush() {
  while (fd_ >= 0 && !pending_.empty()) {
    const ssize_t n = ::send(fd_, pending_.data(), pending_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      pending_.erase(0, static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) close_socket();
      return;  // full: the rest goes when the socket is writable again
    }
  }
}

void AgentChannel::reset(AgentSessionLimits limits, TimePoint now) {
  close_socket();
  limits_ = limits;
  session_ = AgentSession(limits, now);
  last_report_.reset();
}

AgentState AgentChannel::state(TimePoint now) const {
  AgentState s;
  s.last_report = last_report_;
  if (last_report_) s.last_report_age_s = std::chrono::duration<double>(now - last_report_at_).count();
  s.fresh = session_.latest(now).has_value();
  s.connected = fd_ >= 0;
  s.counters = session_.counters();
  s.hostile = session_.hostile(now);
  s.last_error = session_.last_error();
  return s;
}

void AgentChannels::sync(const std::vector<ManagedDomain>& domains, TimePoint now) {
  std::set<std::string> seen;
  for (const ManagedDomain& d : domains) {
    if (!d.active() || d.channel_path.empty()) continue;
    seen.insert(d.name);
    const AgentSessionLimits limits = limits_for(d.facts);
    auto it = entries_.find(d.name);
    if (it == entries_.end()) {
      entries_.emplace(d.name, Entry{d.uuid, limits, std::make_unique<AgentChannel>(d.channel_path, limits, now)});
    } else if (it->second.uuid != d.uuid || it->second.channel->path() != d.channel_path) {
      it->second = Entry{d.uuid, limits, std::make_unique<AgentChannel>(d.channel_path, limits, now)};
    }
  }
  std::erase_if(entries_, [&](const auto& e) { return !seen.count(e.first); });
  for (auto& [name, e] : entries_) e.channel->connect(now);
}

std::map<std::string, std::string> AgentChannels::held_by_another(TimePoint now) const {
  std::map<std::string, std::string> held;
  for (const auto& [name, e] : entries_)
    if (auto why = e.channel->held_by_another(now)) held[name] = std::move(*why);
  return held;
}

void AgentChannels::restart(const std::string& vm, TimePoint now) {
  auto it = entries_.find(vm);
  if (it != entries_.end()) it->second.channel->reset(it->second.limits, now);
}

AgentChannel* AgentChannels::find(const std::string& vm) {
  auto it = entries_.find(vm);
  return it == entries_.end() ? nullptr : it->second.channel.get();
}

AgentState AgentChannels::state(const std::string& vm, TimePoint now) const {
  auto it = entries_.find(vm);
  return it == entries_.end() ? AgentState{} : it->second.channel->state(now);
}

std::map<std::string, AgentChannel*> AgentChannels::all() {
  std::map<std::string, AgentChannel*> out;
  for (auto& [name, e] : entries_) out[name] = e.channel.get();
  return out;
}

}  // namespace llmorch::orch
