// One llmorchd per libvirt connection: two daemons on the same host would fight over every VM's
// levers, and the second would get no agent reports at all (a guest's channel takes one client). The
// lock is flock(2) on STATE_DIR/llmorchd.<URI as a file name>.lock, held for the daemon's lifetime
// (the kernel drops it when the process dies, however it dies), and the file holds the holder's pid,
// start time and URI so that the one refused can name it. The file stays after exit: only the flock
// counts, and removing the file would let a third daemon lock a new one while the first still runs.
#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

namespace llmorch::orch {

// The lock file's name for a connection URI: "llmorchd." + the URI with every character other than
// [A-Za-z0-9._-] replaced by '_' + "." + 8 hex digits of a hash of the whole URI (so that URIs that
// differ only in such characters get different files) + ".lock". At most 200 characters.
std::string service_lock_name(const std::string& uri);

// Another llmorchd holds the lock. what(): a sentence naming it (pid, started at, URI, the lock file)
// and what to do.
class ServiceLockHeld : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Who holds the lock for uri in state_dir, if anyone: "pid P, started_at T, uri U" (as the refusal
// names it), or nullopt when no process holds it. Creates nothing (a missing directory or lock file is
// "nobody") and takes no lock that a starting llmorchd could trip over beyond the instant of the check.
// For llmorchd --dry-run, which applies nothing and so runs beside the service instead of excluding it.
std::optional<std::string> service_lock_holder(const std::string& state_dir, const std::string& uri);

class ServiceLock {
 public:
  // Takes the lock for uri in state_dir (checked and created as open_state_dir does) without waiting,
  // and writes pid, started_at (ISO 8601) and uri into it. Throws ServiceLockHeld when another process
  // holds it, std::runtime_error naming the file when it cannot be created or locked.
  ServiceLock(const std::string& state_dir, const std::string& uri, int pid,
              std::chrono::system_clock::time_point started_at);
  ~ServiceLock();
  ServiceLock(const ServiceLock&) = delete;
  ServiceLock& operator=(const ServiceLock&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace llmorch::orch
