// Queue length of a local LLM server, scraped from its Prometheus text endpoint with a minimal,
// bounded HTTP/1.0 GET over loopback TCP (no small static HTTP client exists in Debian).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmorch::agent {

struct LlmQueue {
  std::uint64_t running = 0;
  std::uint64_t waiting = 0;
};

struct HttpUrl {
  std::string host;  // dotted IPv4 ("localhost" becomes 127.0.0.1)
  std::uint16_t port = 80;
  std::string path;
};

// Accepts http://IPV4[:PORT][/PATH] and http://localhost[:PORT][/PATH]; nothing else.
std::optional<HttpUrl> parse_http_url(std::string_view url);

// Incremental Prometheus text parser: feed lines, read the queue. Recognises llama.cpp
// (llamacpp:requests_processing / llamacpp:requests_deferred) and vLLM (vllm:num_requests_running /
// vllm:num_requests_waiting); samples of one metric with several label sets are summed.
class PrometheusQueueParser {
 public:
  void line(std::string_view line);
  // Nothing unless at least one of the metrics was seen.
  std::optional<LlmQueue> queue() const;

 private:
  double running_ = 0, waiting_ = 0;
  bool seen_ = false;
};

// GET url with an overall deadline; parses the body as it streams, so memory stays bounded whatever
// the server sends. Nothing on any failure.
std::optional<LlmQueue> scrape_llm_queue(const HttpUrl& url, int timeout_ms);

}  // namespace llmorch::agent
