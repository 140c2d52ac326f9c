// The agent's end of the virtio-serial channel. Never blocks: while the host is not listening a
// report is dropped, not queued, so the host always gets fresh state when it connects. How the port
// behaves with and without a host process, and how the agent waits for one: host_link.h.
#pragma once

#include <string>
#include <string_view>

namespace llmorch::agent {

class Port {
 public:
  Port(std::string sysfs_root, std::string dev_root, std::string name);
  ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  // Scans sysfs and opens the port if it is not open. True when open.
  bool ensure_open();
  // With signals on, every port opened from now on raises SIGIO (to this process) when the host end
  // opens or closes, or bytes arrive. The caller must block SIGIO first (its default action kills).
  void set_connect_signal(bool on) { signal_ = on; }
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void close();

  enum class Sent { Yes, Dropped, NoHost, Lost };
  // Writes one frame, waiting at most timeout_ms for room. Dropped: the host is slow. NoHost: no host
  // process holds the channel (returns at once). Lost: the port went away (closed; the next
  // ensure_open rescans).
  Sent send(std::string_view frame, int timeout_ms);
  // poll()'s revents for the port right now (no waiting); POLLNVAL when it is not open.
  short poll_now() const;
  // Appends what is readable now. False when the port went away (closed).
  bool receive(std::string* out);

 private:
  std::string sysfs_root_, dev_root_, name_, path_;
  int fd_ = -1;
  bool resync_ = false;  // a frame was cut short: start the next one with '\n'
  bool warned_missing_ = false;
  bool signal_ = false;
};

}  // namespace llmorch::agent
