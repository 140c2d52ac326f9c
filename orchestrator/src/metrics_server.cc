// /metrics over HTTP with cpp-httplib (Debian 12: libcpp-httplib-dev 0.11.4). Why it and not civetweb:
// it is packaged in Debian 12, small, a C++ API with a threaded server whose task queue we can replace
// (below: a bounded one), and we need one GET. Debian builds it split: a header plus libcpp-httplib.so
// (with OpenSSL, zlib and brotli enabled; pkg-config's cflags say so and must match the library's ABI),
// so only this file includes it, and only llmorchd links it (library llmorch_metrics_http).
#include "llmorch/orch/metrics_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

namespace llmorch::orch {
namespace {

// Connections are served by kWorkers threads; at most kQueued more wait for one. When that many are
// waiting, the accept thread waits too, and further connections wait in the kernel's listen backlog:
// a flood of scrapers costs a bounded number of threads and file descriptors (which llmorchd's agent
// channels and libvirt connection share), never the tick loop.
constexpr std::size_t kWorkers = 2;
constexpr std::size_t kQueued = 8;
constexpr int kTimeoutSeconds = 2;  // read, write and keep-alive idle time per connection

class BoundedQueue : public httplib::TaskQueue {
 public:
  BoundedQueue() {
    for (std::size_t i = 0; i < kWorkers; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    // Waits for room (a connection takes at most a few timeouts to serve); the job always goes in, or
    // its socket would never be closed.
    room_.wait(lock, [this] { return jobs_.size() < kQueued || shutdown_; });
    jobs_.push_back(std::move(fn));
    lock.unlock();
    work_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
    }
    work_.notify_all();
    room_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        work_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down, nothing left to close
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      room_.notify_one();
      fn();
    }
  }
  std::mutex mu_;
  std::condition_variable work_, room_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

struct MetricsServer::Impl {
  httplib::Server server;
  std::mutex mu;
  std::shared_ptr<const std::string> text;  // null until the first publish
  std::thread thread;
};

MetricsServer::MetricsServer(const ListenAddress& at) : impl_(std::make_unique<Impl>()) {
  httplib::Server& s = impl_->server;
  s.new_task_queue = [] { return new BoundedQueue; };
  s.set_read_timeout(kTimeoutSeconds, 0);
  s.set_write_timeout(kTimeoutSeconds, 0);
  s.set_keep_alive_timeout(kTimeoutSeconds);
  s.set_keep_alive_max_count(10);
  s.set_payload_max_length(4096);  // a GET has no body; anything bigger is not a scrape
  // httplib's default also sets SO_REUSEPORT, with which a second llmorchd would share the port
  // silently (the kernel splits connections between them). SO_REUSEADDR only: a port in use fails.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  Impl* impl = impl_.get();
  s.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const std::string> text;
    {
      std::lock_guard lock(impl->mu);
      text = impl->text;
    }
    if (!text) {
      res.status = 503;
      res.set_content("llmorchd has not completed a tick yet; scrape again\n", "text/plain; charset=utf-8");
      return;
    }
    res.set_content(*text, kMetricsContentType);  // copies: the shared text is never written in place
  });
  const std::string where = at.host.find(':') == std::string::npos ? at.host + ":" + std::to_string(at.port)
                                                                   : "[" + at.host + "]:" + std::to_string(at.port);
  errno = 0;
  if (!s.bind_to_port(at.host, at.port)) {
    const int err = errno;
    throw MetricsListenError("cannot listen for metrics on " + where +
                             (err ? std::string(" (") + std::strerror(err) + ")" : "") +
                             ": another process (a second llmorchd, an exporter) may use that port, or the address "
                             "is not one of this host's; choose another with --metrics-listen or metrics_listen in "
                             "the config, or stop that process");
  }
  impl_->thread = std::thread([impl] {
    if (!impl->server.listen_after_bind()) spdlog::error("metrics server stopped serving: accept failed");
  });
  // stop() is a no-op before the server runs: wait until it does, so that the destructor always ends it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!s.is_running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  spdlog::info("serving Prometheus metrics on http://{}/metrics", where);
}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void MetricsServer::publish(std::string text) {
  auto next = std::make_shared<const std::string>(std::move(text));
  std::lock_guard lock(impl_->mu);
  impl_->text.swap(next);  // the old text is freed outside the lock, when `next` goes
}

}  // namespace llmorch::orch
