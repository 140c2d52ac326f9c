#include "llm_metrics.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

namespace llmorch::agent {
namespace {

TEST(LlmMetrics, ParsesUrls) {
  auto u = parse_http_url("http://127.0.0.1:8080/metrics");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->path, "/metrics");
  EXPECT_EQ(parse_http_url("http://localhost")->host, "127.0.0.1");
  EXPECT_EQ(parse_http_url("http://localhost")->path, "/");
  EXPECT_FALSE(parse_http_url("https://127.0.0.1/metrics"));
  EXPECT_FALSE(parse_http_url("http://example.com/metrics"));  // no DNS in the agent
  EXPECT_FALSE(parse_http_url("http://127.0.0.1:0/"));
  EXPECT_FALSE(parse_http_url("http://127.0.0.1:99999/"));
  EXPECT_FALSE(parse_http_url("http://127.0.0.1/a b"));
}

TEST(LlmMetrics, ParsesLlamaCppAndVllmAndSumsLabelSets) {
  PrometheusQueueParser llama;
  for (auto line : {"# HELP llamacpp:requests_processing Number of requests processing.",
                    "# TYPE llamacpp:requests_processing gauge", "llamacpp:requests_processing 2",
                    "llamacpp:requests_deferred 5", "llamacpp:tokens_predicted_total 1000"})
    llama.line(line);
  ASSERT_TRUE(llama.queue());
  EXPECT_EQ(llama.queue()->running, 2u);
  EXPECT_EQ(llama.queue()->waiting, 5u);

  PrometheusQueueParser vllm;
  vllm.line("vllm:num_requests_running{model_name=\"a\"} 3.0");
  vllm.line("vllm:num_requests_running{model_name=\"b\"} 1.0 1700000000000");
  vllm.line("vllm:num_requests_waiting{model_name=\"a\"} 7.0");
  vllm.line("vllm:num_requests_waiting{model_name=\"b\"} -4");  // negative: ignored
  vllm.line("vllm:num_requests_waiting{model_name=\"c\"} NaN");
  EXPECT_EQ(vllm.queue()->running, 4u);
  EXPECT_EQ(vllm.queue()->waiting, 7u);

  PrometheusQueueParser none;
  none.line("process_cpu_seconds_total 5");
  EXPECT_FALSE(none.queue());
}

// A one-shot HTTP server on a loopback port chosen by the kernel.
class OneShotServer {
 public:
  explicit OneShotServer(std::string response) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    ::listen(fd_, 1);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, response] {
      int c = ::accept(fd_, nullptr, nullptr);
      char buf[1024];
      request_.assign(buf, static_cast<std::size_t>(std::max<ssize_t>(0, ::read(c, buf, sizeof buf))));
      if (!response.empty()) [[maybe_unused]]
        auto n = ::write(c, response.data(), response.size());
      ::close(c);
    });
  }
  ~OneShotServer() {
    thread_.join();
    ::close(fd_);
  }
  HttpUrl url() const { return {"127.0.0.1", port_, "/metrics"}; }
  const std::string& request() const { return request_; }

 private:
  int fd_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::string request_;
};

TEST(LlmMetrics, ScrapesOverLoopbackHttp) {
  std::optional<LlmQueue> q;
  {
    OneShotServer server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\r\nllamacpp:requests_deferred 4\n");
    q = scrape_llm_queue(server.url(), 2000);
  }
  ASSERT_TRUE(q);
  EXPECT_EQ(q->running, 1u);
  EXPECT_EQ(q->waiting, 4u);
}

TEST(LlmMetrics, FailsOnErrorStatusOrNoServer) {
  {
    OneShotServer server("HTTP/1.0 404 Not Found\r\n\r\nllamacpp:requests_processing 1\n");
    EXPECT_FALSE(scrape_llm_queue(server.url(), 2000));
  }
  HttpUrl closed{"127.0.0.1", 1, "/metrics"};
  EXPECT_FALSE(scrape_llm_queue(closed, 500));
}

}  // namespace
}  // namespace llmorch::agent
