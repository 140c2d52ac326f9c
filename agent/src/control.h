// Local control socket: `llmorch-agent set-priority P` / `set-floor M` inside the guest talk to the
// running agent over a unix stream socket. One request line, one reply line ("ok" or "error: ...").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace llmorch::agent {

inline constexpr char kDefaultControlSocket[] = "/run/llmorch-agent.sock";

struct SetPriority {
  double priority;
};
struct SetFloor {
  std::uint64_t floor_mib;
};
using ControlRequest = std::variant<SetPriority, SetFloor>;

// "set-priority 2.5" / "set-floor 512"; nothing when malformed or out of range.
std::optional<ControlRequest> parse_control_request(std::string_view line);

class ControlServer {
 public:
  ControlServer() = default;
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Replaces a stale socket file. Returns an error sentence or "".
  std::string listen(const std::string& path);
  int fd() const { return fd_; }
  // Accepts one client, reads its request (bounded in size and time), replies. Returns the request
  // if it was valid.
  std::optional<ControlRequest> serve_one();

 private:
  int fd_ = -1;
  std::string path_;
};

// Client side: sends `line`, returns the agent's reply line or an error sentence (prefixed "error:").
std::string send_control_request(const std::string& path, const std::string& line);

}  // namespace llmorch::agent
