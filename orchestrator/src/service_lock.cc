#include "llmorch/orch/service_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

#include "llmorch/orch/status_file.h"

namespace llmorch::orch {

std::string service_lock_name(const std::string& uri) {
  std::uint32_t hash = 2166136261u;  // FNV-1a
  for (unsigned char c : uri) hash = (hash ^ c) * 16777619u;
  std::string safe;
  for (char c : uri.substr(0, 160)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    safe += ok ? c : '_';
  }
  return fmt::format("llmorchd.{}.{:08x}.lock", safe, hash);
}

namespace {

std::string read_holder(int fd) {
  std::string text(512, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  // "pid 123\nstarted_at ...\nuri ...\n" -> "pid 123, started_at ..., uri ..."
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::string out;
  for (char c : text) out += c == '\n' ? std::string(", ") : std::string(1, c);
  return out.empty() ? "a process that has not written its pid yet" : out;
}

}  // namespace

std::optional<std::string> service_lock_holder(const std::string& state_dir, const std::string& uri) {
  const std::string path = state_dir + "/" + service_lock_name(uri);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;  // no lock file: no llmorchd ever ran on this URI with this state dir
  std::optional<std::string> holder;
  // Shared and non-blocking: fails only while a holder has it exclusively; released at once.
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) holder = read_holder(fd);
  } else {
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
  return holder;
}

ServiceLock::ServiceLock(const std::string& state_dir, const std::string& uri, int pid,
                         std::chrono::system_clock::time_point started_at) {
  const int dir = open_state_dir(state_dir);
  const std::string name = service_lock_name(uri);
  path_ = state_dir + "/" + name;
  fd_ = ::openat(dir, name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  const int open_errno = errno;
  ::close(dir);
  if (fd_ < 0)
    throw std::runtime_error(
        fmt::format("cannot open llmorchd's lock file {}: {}; check that {} is llmorchd's "
                    "state directory and writable by this user",
                    path_, std::strerror(open_errno), state_dir));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    const std::string holder = e == EWOULDBLOCK ? read_holder(fd_) : "";
    ::close(fd_);
    fd_ = -1;
    if (e == EWOULDBLOCK)
      throw ServiceLockHeld(fmt::format(
          "another llmorchd already manages {} ({}; lock {}); stop it first (systemctl stop llmorchd, or kill "
          "that pid): two daemons would fight over the VMs' CPUs and the second would get no agent reports",
          uri, holder, path_));
    throw std::runtime_error(fmt::format("cannot lock {}: {}", path_, std::strerror(e)));
  }
  const std::string text = fmt::format("pid {}\nstarted_at {}\nuri {}\n", pid, iso8601(started_at), uri);
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error(fmt::format("cannot write llmorchd's pid into {}: {}", path_, std::strerror(e)));
  }
}

ServiceLock::~ServiceLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace llmorch::orch
