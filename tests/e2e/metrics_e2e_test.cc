// End-to-end (issue 14, Prometheus metrics): a real Prometheus server (Debian package prometheus) scrapes
// the real llmorchd's /metrics (--metrics-listen on a free loopback port) every second. Two shared guests
// with template priorities 1 and 3 and no agent (their weights come from the templates alone, so they do
// not move during the test). Once Prometheus has scraped llmorchd at least twice and the target is up,
// its HTTP API's llmorch_vm_weight for each guest must equal that guest's weight in `llmorch status
// --json`. Prometheus and llmorchd are stopped with SIGTERM (SIGKILL after 10 s), the guests removed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "llmorch-e2e-prom-";

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

// A loopback TCP port free right now (the kernel's pick; closed again for the server to take).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot find a free loopback port");
  ::close(fd);
  return ntohs(a.sin_port);
}

// `prometheus` on 127.0.0.1:port with its own TSDB under dir, scraping llmorchd every second; logs to
// dir/prometheus.log. Stopped (SIGTERM, SIGKILL after 10 s) on destruction.
class PrometheusProcess {
 public:
  PrometheusProcess(const std::filesystem::path& dir, int port, int target_port) : dir_(dir), port_(port) {
    const auto config = dir / "prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                          << "scrape_configs:\n  - job_name: llmorchd\n    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    const std::vector<std::string> argv = {
        "prometheus", "--config.file=" + config.string(), "--storage.tsdb.path=" + (dir / "tsdb").string(),
        "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"};
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const std::string log = (dir / "prometheus.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~PrometheusProcess() { stop(); }
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  // Its exit status (-1: killed, or already reaped).
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (auto until = SteadyClock::now() + 10s; SteadyClock::now() < until; std::this_thread::sleep_for(50ms)) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }
  std::string log() const {
    std::ifstream in(dir_ / "prometheus.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // GET /api/v1/query?query=...: the "result" vector, or nullopt while Prometheus does not answer.
  std::optional<json> query(const std::string& promql) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(1);
    c.set_read_timeout(2);
    auto res = c.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
    if (!res || res->status != 200) return std::nullopt;
    json j = json::parse(res->body, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return std::nullopt;
    return j["data"]["result"];
  }

 private:
  std::filesystem::path dir_;
  int port_;
  pid_t pid_ = -1;
};

// The value of a query's sample whose labels hold label=value (or the only sample when label is empty).
std::optional<double> sample_value(const json& result, const std::string& label = "", const std::string& value = "") {
  for (const json& s : result) {
    if (!label.empty() && s["metric"].value(label, "") != value) continue;
    return std::stod(s["value"][1].get<std::string>());
  }
  return std::nullopt;
}

TEST(MetricsE2e, PrometheusScrapesTheWeightsLlmorchStatusShows) {
  const auto test_start = SteadyClock::now();
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(dir.path(), {.shared_cpus = "1", .reserved_cpus = "", .interval_ms = 1000});
  Guests guests(config, state);
  const std::string high = domain_name("prom-a"), low = domain_name("prom-b");
  for (const auto& [name, prio] : {std::pair{high, "1"}, std::pair{low, "3"}}) {
    const CommandResult r = guests.place(name, {std::string("priority=") + prio, kernel_args("llmorch.agent=off")});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  const int metrics_port = free_port();
  DaemonProcess daemon(config, state,
                       {"--domain-prefix", kPrefix, "--metrics-listen", "127.0.0.1:" + std::to_string(metrics_port)});
  PrometheusProcess prometheus(dir.path(), free_port(), metrics_port);
  const auto started = SteadyClock::now();

  // Two scrapes of an up target (up is written per scrape, 1 when /metrics answered and parsed).
  std::optional<double> scrapes, up;
  for (auto until = SteadyClock::now() + 25s; SteadyClock::now() < until; std::this_thread::sleep_for(250ms)) {
    const auto count = prometheus.query("count_over_time(up{job=\"llmorchd\"}[1m])");
    const auto last = prometheus.query("up{job=\"llmorchd\"}");
    scrapes = count ? sample_value(*count) : std::nullopt;
    up = last ? sample_value(*last) : std::nullopt;
    if (scrapes >= 2.0 && up == 1.0) break;
  }
  ASSERT_TRUE(scrapes >= 2.0 && up == 1.0) << "scrapes " << scrapes.value_or(-1) << ", up " << up.value_or(-1) << "\n"
                                           << prometheus.log() << daemon.log();
  figure("prometheus_two_scrapes_after_s", std::chrono::duration<double>(SteadyClock::now() - started).count());

  // Both VMs planned: their weights in `llmorch status --json` and what Prometheus holds now. The weights
  // come from the templates alone (no agent), so one scrape and one status read agree exactly.
  const auto weights = prometheus.query("llmorch_vm_weight");
  ASSERT_TRUE(weights) << prometheus.log();
  const CommandResult r = run_command(
      {LLMORCH_CLI, "status", "--json", "--connect", kUri, "--config", config.string(), "--state-dir", state.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json status = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(status.is_discarded()) << r.out;
  for (const std::string& vm : {high, low}) {
    const json* v = nullptr;
    for (const json& e : status["vms"])
      if (e.value("name", "") == vm) v = &e;
    ASSERT_TRUE(v) << vm << " missing from llmorch status --json:\n" << status.dump(2);
    const std::optional<double> scraped = sample_value(*weights, "vm", vm);
    ASSERT_TRUE(scraped) << vm << " has no llmorch_vm_weight in Prometheus: " << weights->dump();
    EXPECT_DOUBLE_EQ(*scraped, v->value("weight", -1.0)) << vm;
  }
  EXPECT_NEAR(*sample_value(*weights, "vm", high), 0.7105, 1e-3);  // priorities 1 and 3, alpha 0.8
  EXPECT_NEAR(*sample_value(*weights, "vm", low), 0.2895, 1e-3);

  EXPECT_EQ(prometheus.stop(), 0) << prometheus.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
  figure("metrics_e2e_s", std::chrono::duration<double>(SteadyClock::now() - test_start).count());
}

}  // namespace
}  // namespace llmorch::e2e
