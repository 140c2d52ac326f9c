#include "llmorch/orch/agent_channel.h"

#include <fcntl.h>
#include <sys/socket.h>
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

bool AgentChannel::connect() {
  if (fd_ >= 0) return true;
  sockaddr_un addr{};
  if (path_.empty() || path_.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS) {
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
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
  for (auto& [name, e] : entries_) e.channel->connect();
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
