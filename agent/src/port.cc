#include "port.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sysfs.h"
#include "util.h"

namespace llmorch::agent {

Port::Port(std::string sysfs_root, std::string dev_root, std::string name)
    : sysfs_root_(std::move(sysfs_root)), dev_root_(std::move(dev_root)), name_(std::move(name)) {}

Port::~Port() { close(); }

void Port::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Port::ensure_open() {
  if (fd_ >= 0) return true;
  auto path = find_port(sysfs_root_, dev_root_, name_);
  if (!path) {
    if (!warned_missing_) log("no virtio-serial port named %s yet; will keep looking", name_.c_str());
    warned_missing_ = true;
    return false;
  }
  fd_ = ::open(path->c_str(), O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd_ < 0) {
    if (!warned_missing_ || *path != path_) log("cannot open %s: %s", path->c_str(), std::strerror(errno));
    warned_missing_ = true;
    path_ = *path;
    return false;
  }
  if (signal_ && (::fcntl(fd_, F_SETOWN, ::getpid()) < 0 || ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_ASYNC) < 0))
    log("cannot get SIGIO from %s (%s); will notice a host connecting by probing only", path->c_str(),
        std::strerror(errno));
  log("opened %s", path->c_str());
  path_ = *path;
  warned_missing_ = false;
  resync_ = true;  // whatever a previous agent left half-written, end it
  return true;
}

Port::Sent Port::send(std::string_view frame, int timeout_ms) {
  if (fd_ < 0) return Sent::Dropped;
  std::string data = resync_ ? "\n" + std::string(frame) : std::string(frame);
  std::string_view rest = data;
  std::int64_t deadline = monotonic_ms() + timeout_ms;
  bool no_host = false;
  while (!rest.empty()) {
    ssize_t n = ::write(fd_, rest.data(), rest.size());
    if (n > 0) {
      rest.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) {
      log("port %s failed (%s); rescanning", path_.c_str(), std::strerror(errno));
      close();
      return Sent::Lost;
    }
    // Full, or no host connected (then poll reports POLLHUP at once: drop without waiting).
    std::int64_t left = deadline - monotonic_ms();
    pollfd p{fd_, POLLOUT, 0};
    int ready = left <= 0 ? 0 : ::poll(&p, 1, static_cast<int>(left));
    no_host = ready > 0 && (p.revents & POLLHUP);
    if (ready <= 0 || (p.revents & POLLOUT) == 0) break;
  }
  // Only a frame cut in the middle needs a resync; one never started leaves the stream clean.
  if (rest.empty()) resync_ = false;
  else if (rest.size() != data.size()) resync_ = true;
  if (rest.empty()) return Sent::Yes;
  return no_host ? Sent::NoHost : Sent::Dropped;
}

short Port::poll_now() const {
  if (fd_ < 0) return POLLNVAL;
  pollfd p{fd_, POLLIN | POLLOUT, 0};
  return ::poll(&p, 1, 0) < 0 ? 0 : p.revents;
}

bool Port::receive(std::string* out) {
  if (fd_ < 0) return false;
  char buf[1024];
  for (int i = 0; i < 16; ++i) {  // bounded per call so a chatty host cannot starve the reports
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n > 0) {
      out->append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || errno == EAGAIN) return true;  // 0: the host is not connected; the port stays
    log("port %s failed (%s); rescanning", path_.c_str(), std::strerror(errno));
    close();
    return false;
  }
  return true;
}

}  // namespace llmorch::agent
