#include "llmorch/orch/bounded_calls.h"

#include <thread>

namespace llmorch::orch {

namespace {
// One call's outcome, shared by the waiting caller and the worker (which may outlive the wait).
struct Call {
  bool done = false;
  std::exception_ptr error;
};
}  // namespace

BoundedCalls::BoundedCalls(std::function<void(const std::string&)> on_timeout)
    : shared_(std::make_shared<Shared>()), on_timeout_(std::move(on_timeout)) {}
BoundedCalls::~BoundedCalls() = default;

BoundedCalls::Result BoundedCalls::run(const std::string& key, std::chrono::milliseconds deadline,
                                       std::function<void()> fn) {
  auto call = std::make_shared<Call>();
  {
    std::lock_guard lock(shared_->mu);
    if (!shared_->running.emplace(key, std::chrono::steady_clock::now()).second) return {Status::Busy, nullptr};
  }
  // A thread per call: calls are few per tick (the reads are bulk), and a stuck one must not hold a
  // pool worker that others need. It is detached: a call that never returns costs one blocked thread.
  std::thread([shared = shared_, call, key, fn = std::move(fn)] {
    std::exception_ptr error;
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard lock(shared->mu);
      call->done = true;
      call->error = error;
      shared->running.erase(key);
    }
    shared->cv.notify_all();
  }).detach();
  {
    std::unique_lock lock(shared_->mu);
    if (shared_->cv.wait_for(lock, deadline, [&] { return call->done; }))
      return call->error ? Result{Status::Error, call->error} : Result{Status::Ok, nullptr};
  }
  if (on_timeout_) on_timeout_(key);
  return {Status::TimedOut, nullptr};
}

bool BoundedCalls::busy(const std::string& key) const {
  std::lock_guard lock(shared_->mu);
  return shared_->running.count(key) != 0;
}

std::map<std::string, std::chrono::milliseconds> BoundedCalls::running() const {
  const auto now = std::chrono::steady_clock::now();
  std::map<std::string, std::chrono::milliseconds> out;
  std::lock_guard lock(shared_->mu);
  for (const auto& [key, started] : shared_->running)
    out[key] = std::chrono::duration_cast<std::chrono::milliseconds>(now - started);
  return out;
}

std::size_t BoundedCalls::drain(std::chrono::milliseconds grace) {
  std::unique_lock lock(shared_->mu);
  shared_->cv.wait_for(lock, grace, [&] { return shared_->running.empty(); });
  return shared_->running.size();
}

}  // namespace llmorch::orch
