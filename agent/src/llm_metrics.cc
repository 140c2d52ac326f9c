#include "llm_metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "llmorch/protocol/messages.h"
#include "util.h"

namespace llmorch::agent {

std::optional<HttpUrl> parse_http_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) return std::nullopt;
  url.remove_prefix(scheme.size());
  std::size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  HttpUrl out;
  out.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  std::size_t colon = authority.find(':');
  std::string_view host = authority.substr(0, colon);
  if (colon != std::string_view::npos) {
    auto port = parse_u64(authority.substr(colon + 1));
    if (!port || *port == 0 || *port > 65535) return std::nullopt;
    out.port = static_cast<std::uint16_t>(*port);
  }
  out.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  in_addr addr{};
  if (::inet_pton(AF_INET, out.host.c_str(), &addr) != 1) return std::nullopt;
  for (char c : out.path)
    if (c <= 0x20 || c >= 0x7f) return std::nullopt;  // keeps the request line well-formed
  return out;
}

void PrometheusQueueParser::line(std::string_view line) {
  line = trim(line);
  if (line.empty() || line[0] == '#') return;
  std::size_t name_end = line.find_first_of("{ ");
  if (name_end == std::string_view::npos) return;
  std::string_view name = line.substr(0, name_end);
  double* target = nullptr;
  if (name == "llamacpp:requests_processing" || name == "vllm:num_requests_running") target = &running_;
  if (name == "llamacpp:requests_deferred" || name == "vllm:num_requests_waiting") target = &waiting_;
  if (!target) return;
  // The value follows the labels; a timestamp may follow the value.
  std::size_t value_start = line[name_end] == '{' ? line.find('}', name_end) : name_end;
  if (value_start == std::string_view::npos) return;
  std::string_view rest = trim(line.substr(value_start + 1));
  auto value = parse_double(rest.substr(0, rest.find(' ')));
  if (!value || *value < 0) return;
  *target = std::min(*target + *value, static_cast<double>(protocol::kMaxLlmRequests));
  seen_ = true;
}

std::optional<LlmQueue> PrometheusQueueParser::queue() const {
  if (!seen_) return std::nullopt;
  return LlmQueue{static_cast<std::uint64_t>(std::llround(running_)),
                  static_cast<std::uint64_t>(std::llround(waiting_))};
}

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` until the deadline; false on timeout or error.
bool wait_for(int fd, short events, std::int64_t deadline_ms) {
  for (;;) {
    std::int64_t left = deadline_ms - monotonic_ms();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    return r > 0 && (p.revents & (events | POLLHUP)) != 0;
  }
}

constexpr std::size_t kMaxResponseBytes = 4 * 1024 * 1024;  // vLLM's page is tens of KiB
constexpr std::size_t kMaxLineBytes = 4096;

}  // namespace

std::optional<LlmQueue> scrape_llm_queue(const HttpUrl& url, int timeout_ms) {
  const std::int64_t deadline = monotonic_ms() + timeout_ms;
  Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(url.port);
  ::inet_pton(AF_INET, url.host.c_str(), &addr.sin_addr);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS)
    return std::nullopt;
  if (!wait_for(sock.get(), POLLOUT, deadline)) return std::nullopt;
  int so_error = 0;
  socklen_t len = sizeof so_error;
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) < 0 || so_error != 0) return std::nullopt;

  std::string request = "GET " + url.path + " HTTP/1.0\r\nHost: " + url.host + "\r\nAccept: text/plain\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    if (!wait_for(sock.get(), POLLOUT, deadline)) return std::nullopt;
    ssize_t n = ::send(sock.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return std::nullopt;
    if (n > 0) sent += static_cast<std::size_t>(n);
  }

  // Stream the response line by line: status line, headers, blank line, body.
  PrometheusQueueParser parser;
  std::string pending;
  std::size_t received = 0;
  bool status_ok = false, in_body = false, first = true;
  auto handle = [&](std::string_view line) {
    if (first) {
      first = false;
      status_ok = line.size() >= 12 && line.substr(0, 5) == "HTTP/" && line.substr(9, 3) == "200";
    } else if (!in_body) {
      in_body = trim(line).empty();
    } else if (status_ok) {
      parser.line(line);
    }
  };
  char buf[2048];
  for (;;) {
    if (!wait_for(sock.get(), POLLIN, deadline)) return std::nullopt;
    ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    received += static_cast<std::size_t>(n);
    if (received > kMaxResponseBytes) return std::nullopt;
    for (char c : std::string_view(buf, static_cast<std::size_t>(n))) {
      if (c == '\n') {
        handle(pending);
        pending.clear();
      } else if (pending.size() < kMaxLineBytes) {
        pending += c;  // longer lines are truncated; no metric we want is that long
      }
    }
  }
  if (!pending.empty()) handle(pending);
  if (!status_ok) return std::nullopt;
  return parser.queue();
}

}  // namespace llmorch::agent
