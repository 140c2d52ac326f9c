// Hypervisor calls with a deadline, so that one guest's stuck QEMU cannot hold llmorchd's loop or a CLI
// command. libvirt calls cannot be cancelled: a call that misses its deadline keeps running on its own
// thread, and its key (a VM's name, or a host-level name such as "list") stays busy until it returns.
// A call for a busy key is refused at once (Status::Busy), so at most one thread per key is ever stuck,
// and a VM rejoins by itself when its call returns.
//
// Calls run on a small pool of worker threads: a worker that finishes a call waits for the next one
// (up to kSpareWorkers wait; more finish). A worker stuck in a call is simply not idle: the next call
// starts a new worker, so a stuck libvirt call never starves the others, and the stuck worker rejoins
// the pool (or finishes) when its call returns. Steady state: no thread is created per call.
//
// The function runs on another thread: it must own (or share) everything it writes, since the caller
// may have stopped waiting. What it calls (the Hypervisor) must outlive every call: drain() at shutdown
// says whether any is still running.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace llmorch::orch {

class BoundedCalls {
 public:
  enum class Status {
    Ok,        // returned in time
    Error,     // threw in time; `error` holds the exception
    TimedOut,  // still running after the deadline; its key stays busy until it returns
    Busy,      // refused: an earlier call for the same key has not returned yet
  };
  struct Result {
    Status status = Status::Ok;
    std::exception_ptr error;
    bool ok() const { return status == Status::Ok; }
  };

  // Idle workers kept for the next calls; a worker that finishes a call while this many wait ends.
  static constexpr std::size_t kSpareWorkers = 4;

  // on_timeout(key) runs on the caller's thread each time a call misses its deadline (the daemon and
  // the CLI give the hypervisor a fresh connection then: see Hypervisor::abandon_connection).
  explicit BoundedCalls(std::function<void(const std::string& key)> on_timeout = {});
  ~BoundedCalls();  // does not wait: calls still running finish on their own threads; idle workers end
  BoundedCalls(const BoundedCalls&) = delete;
  BoundedCalls& operator=(const BoundedCalls&) = delete;

  // Runs fn() on a worker thread and waits at most `deadline` for it. Throws std::system_error only when
  // no worker is idle and no thread can be started (the key is free again then).
  Result run(const std::string& key, std::chrono::milliseconds deadline, std::function<void()> fn);

  // Runs fn() and returns its value, or nullopt with `result` saying why not.
  template <typename T>
  std::optional<T> get(const std::string& key, std::chrono::milliseconds deadline, std::function<T()> fn,
                       Result& result) {
    auto out = std::make_shared<std::optional<T>>();
    result = run(key, deadline, [out, fn = std::move(fn)] { *out = fn(); });
    if (!result.ok()) return std::nullopt;
    return std::move(*out);
  }

  bool busy(const std::string& key) const;
  // Worker threads alive now (idle or in a call); for tests and the benchmark.
  std::size_t workers() const;
  // Keys whose calls are running, with how long each has run.
  std::map<std::string, std::chrono::milliseconds> running() const;
  // Waits up to `grace` for running calls to return; returns how many still run.
  std::size_t drain(std::chrono::milliseconds grace);

 private:
  struct Call;
  struct Shared {
    mutable std::mutex mu;
    std::condition_variable cv;                                            // a call finished
    std::condition_variable work;                                          // a call was queued, or the pool stops
    std::map<std::string, std::chrono::steady_clock::time_point> running;  // key -> started
    std::deque<std::shared_ptr<Call>> queue;                               // calls no worker has taken yet
    std::size_t spare = 0;    // workers that will take a queued call without a new one: idle or starting
    std::size_t workers = 0;  // alive
    bool stopping = false;    // the BoundedCalls is gone: idle workers end, busy ones after their call
  };
  static void work(std::shared_ptr<Shared> shared);
  std::shared_ptr<Shared> shared_;
  std::function<void(const std::string&)> on_timeout_;
};

}  // namespace llmorch::orch
