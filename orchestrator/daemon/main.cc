// llmorchd: options, wiring (libvirt backend, system clock, signals), run. The loop is in daemon.cc.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>
#include <boost/program_options.hpp>

#include "llmorch/orch/config.h"
#include "llmorch/orch/daemon.h"
#include "llmorch/orch/journal_log.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "llmorch/orch/metrics.h"
#include "llmorch/orch/metrics_server.h"
#include "llmorch/orch/notifier.h"
#include "llmorch/orch/po_error.h"
#include "llmorch/orch/service_lock.h"
#include "llmorch/orch/status_file.h"

namespace po = boost::program_options;
using namespace llmorch::orch;

namespace {

Daemon* g_daemon = nullptr;

void on_signal(int sig) {
  if (!g_daemon) return;
  if (sig == SIGHUP) g_daemon->request_reload();
  else g_daemon->request_stop();
}

void install_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc(
      "llmorchd: keeps re-dividing the host's CPUs among llmorch VMs by priority and load.\nOptions");
  std::optional<std::string> uri;
  std::string config_path, state_dir, level, prefix;
  int interval_ms = 0;
  std::string memory_limit, metrics_listen;
  desc.add_options()("help,h", "show this help")("version", "print the version and exit")(
      "connect,c", po::value<std::string>()->notifier([&](const std::string& v) { uri = v; }),
      "libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)")(
      "config", po::value(&config_path), "host config file (default /etc/llmorch/llmorch.conf)")(
      "interval-ms", po::value(&interval_ms), "tick interval in ms (overrides the config's interval_ms)")(
      "dry-run", "log the decisions, apply nothing")("once", "run one tick and exit (1: libvirt unreachable)")(
      "state-dir", po::value(&state_dir)->default_value(kDefaultStateDir),
      "where status.json and the lock that keeps a second llmorchd off the same URI live")(
      "domain-prefix", po::value(&prefix), "manage only domains whose name starts with this")(
      "host-memory-limit-mib", po::value(&memory_limit),
      "most MiB all VMs may hold together, or none (overrides the config's host_memory_limit_mib)")(
      "metrics-listen", po::value(&metrics_listen),
      "serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9477; empty: none (overrides the "
      "config's metrics_listen)")("log-level", po::value(&level)->default_value("info"),
                                  "trace, debug, info, warn, error, off");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "llmorchd: " << llmorch::orch::program_options_message(e) << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "llmorchd " << LLMORCH_VERSION << "\n";
    return 0;
  }
  // spdlog maps a name it does not know to "off": a typo would silence the daemon.
  const auto log_level = spdlog::level::from_str(level);
  if (log_level == spdlog::level::off && level != "off") {
    std::cerr << "llmorchd: --log-level '" << level
              << "' is not a log level; use trace, debug, info, warn, error or off\n";
    return 2;
  }
  // Under systemd with output to the journal: "<N>" priorities, no timestamps (journal_log.h).
  log_to_journal_if_connected();
  spdlog::set_level(log_level);

  std::vector<std::string> overrides;
  if (vm.count("interval-ms")) overrides.push_back("interval_ms=" + std::to_string(interval_ms));
  if (vm.count("host-memory-limit-mib")) overrides.push_back("host_memory_limit_mib=" + memory_limit);
  if (vm.count("metrics-listen")) overrides.push_back("metrics_listen=" + metrics_listen);
  auto load = [config_path, overrides] { return load_config(config_path, overrides); };
  DaemonOptions options;
  try {
    options.config = load();
  } catch (const ConfigError& e) {
    std::cerr << "llmorchd: " << e.what() << "\n";
    return 2;
  }
  options.dry_run = vm.count("dry-run") > 0;
  const std::string resolved = resolve_uri(uri);
  // A dry run applies nothing, so it takes no lock and runs beside a running llmorchd (e.g. the service,
  // to see what a config change would do); it leaves that one's status.json alone.
  if (options.dry_run && !state_dir.empty()) {
    if (const auto holder = service_lock_holder(state_dir, resolved)) {
      spdlog::info(
          "another llmorchd manages {} ({}); this dry run goes on beside it and writes no status.json to {} "
          "(that one's); give it another --state-dir for a status.json of its own",
          resolved, *holder, state_dir);
      state_dir.clear();
    }
  }
  if (!state_dir.empty()) {  // an unsafe state directory stops the daemon now, not a warning every tick
    try {
      ::close(open_state_dir(state_dir));
    } catch (const std::runtime_error& e) {
      spdlog::error("{}", e.what());
      return 1;
    }
  }
  options.state_dir = state_dir;
  options.domain_prefix = prefix;
  options.reload = load;

  // One llmorchd per libvirt connection (and state directory): see service_lock.h.
  std::optional<ServiceLock> lock;
  if (!state_dir.empty() && !options.dry_run) {
    try {
      lock.emplace(state_dir, resolved, static_cast<int>(::getpid()), std::chrono::system_clock::now());
    } catch (const std::runtime_error& e) {
      spdlog::error("{}", e.what());
      return 1;
    }
  }
  // Prometheus metrics (not for --once: one tick is no service). A port that cannot be had is a
  // configuration error, found now rather than by a scraper.
  std::unique_ptr<MetricsServer> metrics;
  if (!vm.count("once") && !options.config.metrics_listen.empty()) {
    try {
      metrics = std::make_unique<MetricsServer>(parse_listen_address(options.config.metrics_listen));
    } catch (const MetricsListenError& e) {
      spdlog::error("{}", e.what());
      return 2;
    }
    options.metrics = [server = metrics.get()](const MetricsSnapshot& snapshot) {
      server->publish(render_metrics(snapshot, LLMORCH_VERSION));
    };
  }
  std::unique_ptr<Hypervisor> hv;
  try {
    // A short reconnect budget: one tick must not block the agent channels for long.
    LibvirtOptions lv;
    lv.reconnect_timeout = std::chrono::milliseconds(std::min(options.config.interval_ms, 500));
    hv = connect_libvirt(resolved, lv);
  } catch (const HypervisorError& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  spdlog::info(
      "llmorchd on {}: alpha {}, interval {} ms, host memory limit {}{}", resolved, options.config.alpha,
      options.config.interval_ms,
      options.config.host_memory_limit_mib ? std::to_string(*options.config.host_memory_limit_mib) + " MiB" : "none",
      options.dry_run ? ", dry run" : "");

  // systemd's notify protocol (Type=notify, WatchdogSec=); sends nothing without $NOTIFY_SOCKET. Not
  // for --once: one tick is no service.
  std::unique_ptr<Notifier> notifier;
  if (!vm.count("once")) {
    notifier = make_sd_notifier();
    options.notifier = notifier.get();
  }
  SystemClock clock;
  Daemon daemon(*hv, clock, std::move(options));
  int rc = 0;
  if (vm.count("once")) {
    rc = daemon.tick() ? 0 : 1;
  } else {
    g_daemon = &daemon;
    install_signals();
    rc = daemon.run();
    g_daemon = nullptr;
  }
  // A libvirt call stuck on a QEMU that never answered still uses the connection: leave without
  // closing it (the kernel does), rather than destroy it under that call.
  if (const std::size_t stuck = daemon.drain_calls(std::chrono::seconds(2)); stuck != 0) {
    spdlog::warn("{} libvirt call(s) still waiting on QEMU at exit; leaving without closing the connection", stuck);
    spdlog::shutdown();
    std::_Exit(rc);
  }
  return rc;
}
