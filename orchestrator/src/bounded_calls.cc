#include "llmorch/orch/bounded_calls.h"

#include <system_error>
#include <thread>
#include <utility>

namespace llmorch::orch {

// One call: what to run and its outcome, shared by the waiting caller and the worker (which may
// outlive the wait).
struct BoundedCalls::Call {
  std::string key;
  std::function<void()> fn;
  bool done = false;
  std::exception_ptr error;
};

BoundedCalls::BoundedCalls(std::function<void(const std::string&)> on_timeout)
    : shared_(std::make_shared<Shared>()), on_timeout_(std::move(on_timeout)) {}

BoundedCalls::~BoundedCalls() {
  {
    std::lock_guard lock(shared_->mu);
    shared_->stopping = true;
  }
  shared_->work.notify_all();
}

// A worker: takes queued calls until the pool stops (and the queue is empty), or until it finishes a
// call while kSpareWorkers others are idle. Detached: it owns a share of the pool's state.
void BoundedCalls::work(std::shared_ptr<Shared> shared) {
  std::unique_lock lock(shared->mu);
  for (;;) {
    shared->work.wait(lock, [&] { return !shared->queue.empty() || shared->stopping; });
    if (shared->queue.empty()) break;  // stopping
    std::shared_ptr<Call> call = std::move(shared->queue.front());
    shared->queue.pop_front();
    std::function<void()> fn = std::move(call->fn);
    lock.unlock();
    std::exception_ptr error;
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
    fn = nullptr;  // what it captured is released before the caller hears that it is done
    lock.lock();
    call->done = true;
    call->error = std::move(error);
    shared->running.erase(call->key);
    call.reset();
    shared->cv.notify_all();
    if (shared->stopping && shared->queue.empty()) break;
    if (shared->spare >= kSpareWorkers) break;  // enough wait already
    ++shared->spare;
  }
  // (Counts stay exact while the pool runs: spare + queued calls = idle + starting workers.)
  --shared->workers;
  shared->cv.notify_all();
}

BoundedCalls::Result BoundedCalls::run(const std::string& key, std::chrono::milliseconds deadline,
                                       std::function<void()> fn) {
  auto call = std::make_shared<Call>();
  call->key = key;
  call->fn = std::move(fn);
  {
    std::lock_guard lock(shared_->mu);
    if (!shared_->running.emplace(key, std::chrono::steady_clock::now()).second) return {Status::Busy, nullptr};
    shared_->queue.push_back(call);
    if (shared_->spare > 0) {
      --shared_->spare;  // an idle (or starting) worker takes it
    } else {
      // Every worker is in a call (perhaps stuck in a QEMU that stopped answering): start one more.
      try {
        std::thread(&BoundedCalls::work, shared_).detach();
      } catch (const std::system_error&) {
        shared_->queue.pop_back();
        shared_->running.erase(key);
        throw;
      }
      ++shared_->workers;
    }
  }
  shared_->work.notify_one();
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

std::size_t BoundedCalls::workers() const {
  std::lock_guard lock(shared_->mu);
  return shared_->workers;
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
