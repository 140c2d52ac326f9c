// llmorchd's /metrics endpoint (--metrics-listen): a small HTTP server on its own threads that serves
// the exposition text the daemon published last (render_metrics, metrics.h). It never calls libvirt
// and never takes a lock the tick loop waits on for longer than swapping a pointer: a slow or hostile
// scraper costs at most its own connection's thread, bounded by read/write timeouts.
// GET /metrics: 200 with that text (text/plain; version=0.0.4), 503 before the first publish(); any
// other path: 404.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "llmorch/orch/metrics.h"

namespace llmorch::orch {

// The address cannot be listened on (in use, not local, no permission). what() says what to do.
struct MetricsListenError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class MetricsServer {
 public:
  // Binds `at` now (throws MetricsListenError) and serves from then on; until the first publish(),
  // GET /metrics answers 503 ("no tick yet").
  explicit MetricsServer(const ListenAddress& at);
  ~MetricsServer();  // stops serving and joins its threads (at most a few seconds with a stuck scraper)
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Makes `text` what GET /metrics answers. Cheap: a pointer swap under a mutex.
  void publish(std::string text);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmorch::orch
