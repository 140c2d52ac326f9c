#include "control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "settings.h"
#include "util.h"

namespace llmorch::agent {
namespace {

constexpr int kIoTimeoutMs = 1000;
constexpr std::size_t kMaxRequestBytes = 256;

bool make_address(const std::string& path, sockaddr_un* addr) {
  if (path.size() >= sizeof addr->sun_path) return false;
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Reads one '\n'-terminated line (without it) within the deadline; bounded.
std::optional<std::string> read_line(int fd) {
  std::string line;
  std::int64_t deadline = monotonic_ms() + kIoTimeoutMs;
  char buf[128];
  while (line.size() <= kMaxRequestBytes) {
    std::int64_t left = deadline - monotonic_ms();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return std::nullopt;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return line.empty() ? std::nullopt : std::optional(line);
    line.append(buf, static_cast<std::size_t>(n));
    if (std::size_t nl = line.find('\n'); nl != std::string::npos) return line.substr(0, nl);
  }
  return std::nullopt;
}

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

std::optional<ControlRequest> parse_control_request(std::string_view line) {
  line = trim(line);
  std::size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  std::string_view verb = line.substr(0, sp), arg = line.substr(sp + 1);
  if (verb == "set-priority") {
    if (auto p = parse_priority(arg)) return SetPriority{*p};
  } else if (verb == "set-floor") {
    if (auto f = parse_floor(arg)) return SetFloor{*f};
  }
  return std::nullopt;
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

std::string ControlServer::listen(const std::string& path) {
  sockaddr_un addr;
  if (!make_address(path, &addr)) return "control socket path " + path + " is too long";
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return std::string("cannot create control socket: ") + std::strerror(errno);
  ::unlink(path.c_str());     // a previous agent's socket; nobody listens on it any more
  mode_t old = ::umask(077);  // only root in the guest may change the priority
  int r = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (r < 0 || ::listen(fd_, 4) < 0) {
    std::string error = "cannot listen on " + path + ": " + std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    return error;
  }
  path_ = path;
  return {};
}

std::optional<ControlRequest> ControlServer::serve_one() {
  int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (client < 0) return std::nullopt;
  std::optional<ControlRequest> request;
  if (auto line = read_line(client)) request = parse_control_request(*line);
  write_all(client, request ? "ok\n" : "error: expected 'set-priority P' (0 < P <= 1000000) or 'set-floor MIB'\n");
  ::close(client);
  return request;
}

std::string send_control_request(const std::string& path, const std::string& line) {
  sockaddr_un addr;
  if (!make_address(path, &addr)) return "error: control socket path " + path + " is too long";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("error: cannot create socket: ") + std::strerror(errno);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    std::string error = "error: cannot reach the agent at " + path + " (" + std::strerror(errno) +
                        "); is llmorch-agent running?";
    ::close(fd);
    return error;
  }
  write_all(fd, line + "\n");
  auto reply = read_line(fd);
  ::close(fd);
  return reply ? *reply : "error: the agent did not reply";
}

}  // namespace llmorch::agent
