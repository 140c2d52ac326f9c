#include "agent.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "llmorch/protocol/codec.h"
#include "util.h"

namespace llmorch::agent {
namespace {

constexpr int kLlmScrapeTimeoutMs = 300;
// Probes of a channel nobody listens on: 250 ms after it closes (a daemon restart), doubling to 2 s.
// SIGIO wakes the agent at once when the host end opens; the probes are the fallback.
constexpr std::int64_t kProbeFirstMs = 250;
constexpr std::int64_t kProbeMaxMs = 2000;
// The shortest window a report's cpu_pct is measured over (/proc/stat counts in 10 ms ticks): the first
// report after the host appears waits for it if the last CPU sample is more recent.
constexpr std::int64_t kMinCpuWindowMs = 200;

Settings load_settings(const AgentOptions& options, const ProcSampler& sampler, FileSettings* file) {
  std::vector<std::string> warnings;
  CmdlineSettings cmdline = parse_cmdline(sampler.cmdline(), &warnings);
  if (auto text = read_file(options.config_path)) *file = parse_config_file(*text, &warnings);
  for (const std::string& w : warnings) log("%s", w.c_str());
  return Settings(std::move(cmdline), file->layer);
}

void sleep_ms(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
  while (::nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

// Blocks SIGIO and returns a signalfd that becomes readable when it is raised; -1 if that fails.
int open_sigio_fd() {
  sigset_t set;
  ::sigemptyset(&set);
  ::sigaddset(&set, SIGIO);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return -1;
  return ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

}  // namespace

Agent::Agent(AgentOptions options)
    : options_(std::move(options)),
      sampler_(options_.proc_root),
      cpus_(options_.sysfs_root),
      settings_(CmdlineSettings{}, Layer{}),
      started_ms_(monotonic_ms()),
      port_(options_.sysfs_root, options_.dev_root, options_.port_name),
      link_(started_ms_, 1000, Backoff(kProbeFirstMs, kProbeMaxMs)) {
  FileSettings file;
  settings_ = load_settings(options_, sampler_, &file);
  interval_ms_ = options_.interval_ms.value_or(file.interval_ms.value_or(1000));
  interval_ms_ = std::clamp(interval_ms_, protocol::kMinIntervalMs, protocol::kMaxIntervalMs);
  link_.set_interval(static_cast<std::int64_t>(interval_ms_));
  if (auto url = options_.llm_metrics ? options_.llm_metrics : file.llm_metrics) {
    llm_url_ = parse_http_url(*url);
    if (!llm_url_) log("ignoring LLM metrics URL '%s': use http://127.0.0.1:PORT/metrics", url->c_str());
  }
}

Agent::~Agent() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Agent::prime_cpu() {
  if (auto cpu = sampler_.sample().cpu) {
    last_cpu_ = cpu;
    last_cpu_ms_ = monotonic_ms();
  }
}

protocol::Report Agent::build_report() {
  settings_.advance(static_cast<double>(monotonic_ms() - started_ms_) / 1000.0);
  ProcSample s = sampler_.sample();
  protocol::Report r;
  r.seq = seq_++;
  r.priority = settings_.priority();
  r.floor_mib = std::min(settings_.floor_mib(), protocol::kMaxFloorMib);
  const std::int64_t now = monotonic_ms();
  if (s.cpu && last_cpu_) r.cpu_pct = cpu_percent(*last_cpu_, *s.cpu);
  if (s.cpu) {
    last_cpu_ = s.cpu;
    last_cpu_ms_ = now;
  }
  r.psi_cpu_some10 = s.psi_cpu_some10;
  r.psi_mem_some10 = s.psi_mem_some10;
  r.runnable = std::min(s.procs_running.value_or(0), protocol::kMaxRunnable);
  auto online = cpus_.online();
  std::uint64_t ncpu = online && !online->empty() ? online->size() : s.cpus_in_stat;
  r.ncpu_online = std::clamp<std::uint64_t>(ncpu, 1, protocol::kMaxCpus);
  if (s.mem) {
    r.mem_total_kib = std::min(s.mem->total_kib, protocol::kMaxMemKib);
    r.mem_avail_kib = std::min(s.mem->available_kib, r.mem_total_kib);
  }
  if (llm_url_) {
    if (auto q = scrape_llm_queue(*llm_url_, kLlmScrapeTimeoutMs)) {
      r.llm_running = std::min(q->running, protocol::kMaxLlmRequests);
      r.llm_waiting = std::min(q->waiting, protocol::kMaxLlmRequests);
    }
  }
  r.interval_ms = interval_ms_;
  return r;
}

void Agent::handle_host_bytes(std::string_view bytes) {
  for (const protocol::Frame& frame : decoder_.feed(bytes)) {
    if (frame.oversized) {
      log("ignoring an oversized frame from the host");
      continue;
    }
    auto command = protocol::parse_host_command(frame.line);
    if (!command) {
      log("ignoring a host frame: %s", command.error().c_str());
      continue;
    }
    handle_command(command.value());
  }
}

void Agent::handle_command(const protocol::HostCommand& command) {
  if (const auto* config = std::get_if<protocol::ConfigCommand>(&command)) {
    interval_ms_ = config->interval_ms;
    link_.set_interval(static_cast<std::int64_t>(interval_ms_));
    return;
  }
  int want = static_cast<int>(std::get<protocol::VcpusCommand>(command).online);
  for (const std::string& error : cpus_.set_online(want)) log("%s", error.c_str());
}

int Agent::run_once(int window_ms) {
  build_report();  // primes the CPU counters
  sleep_ms(window_ms);
  seq_ = 0;
  std::string frame = protocol::encode(build_report());
  return ::write(1, frame.data(), frame.size()) == static_cast<ssize_t>(frame.size()) ? 0 : 1;
}

void Agent::report(std::int64_t now_ms) {
  link_.reported(now_ms);
  if (!port_.is_open()) return host_gone(now_ms, "the port closed");
  std::string frame = protocol::encode(build_report());
  // Wait for room at most half an interval; a stale report is worth less than the next fresh one.
  switch (port_.send(frame, static_cast<int>(std::min<std::uint64_t>(interval_ms_ / 2, 500)))) {
    case Port::Sent::Yes:
    case Port::Sent::Dropped: break;
    case Port::Sent::NoHost: return host_gone(now_ms, "no host process holds the channel");
    case Port::Sent::Lost: return host_gone(now_ms, "the port went away");
  }
}

void Agent::host_gone(std::int64_t now_ms, const char* why) {
  if (link_.host_absent(now_ms))
    log("stopped reporting: %s (llmorchd stopped or restarting?); will report again as soon as a host "
        "process connects (%schecked at least every %lld ms)",
        why, wake_fd_ >= 0 ? "woken by SIGIO, " : "", static_cast<long long>(kProbeMaxMs));
}

void Agent::probe(std::int64_t now_ms) {
  if (!port_.ensure_open()) return link_.probed_absent(now_ms);
  switch (classify_port_events(port_.poll_now())) {
    case PortEvent::Broken: port_.close(); return link_.probed_absent(now_ms);
    case PortEvent::HostAbsent:
      read_port();  // what the host sent before it left; read() also finds an unplugged port
      prime_cpu();  // so the first report after the host comes back measures recent CPU use
      if (!reported_before_ && !said_waiting_)
        log("no host process holds the channel yet (llmorchd not running?); will report as soon as one "
            "connects (%schecked at least every %lld ms)",
            wake_fd_ >= 0 ? "woken by SIGIO, " : "", static_cast<long long>(kProbeMaxMs));
      said_waiting_ = true;
      signalled_ = false;
      return link_.probed_absent(now_ms);
    case PortEvent::Readable:
    case PortEvent::None:
      if (reported_before_)
        log("host is back after %.1f s (noticed by %s); reporting every %llu ms",
            static_cast<double>(now_ms - link_.absent_since_ms()) / 1000.0, signalled_ ? "SIGIO" : "a probe",
            static_cast<unsigned long long>(interval_ms_));
      else
        log("host is listening (noticed by %s); reporting every %llu ms", signalled_ ? "SIGIO" : "a probe",
            static_cast<unsigned long long>(interval_ms_));
      reported_before_ = true;
      signalled_ = false;
      return link_.host_present(now_ms, last_cpu_ms_ + kMinCpuWindowMs);
  }
}

void Agent::read_port() {
  std::string bytes;
  bool open = port_.receive(&bytes);
  if (!bytes.empty()) handle_host_bytes(bytes);
  if (!open) host_gone(monotonic_ms(), "the port went away");
}

void Agent::wait(std::int64_t now_ms) {
  pollfd fds[3];
  nfds_t n = 0;
  int control_index = -1, wake_index = -1, port_index = -1;
  if (control_.fd() >= 0) {
    control_index = static_cast<int>(n);
    fds[n++] = {control_.fd(), POLLIN, 0};
  }
  if (wake_fd_ >= 0) {
    wake_index = static_cast<int>(n);
    fds[n++] = {wake_fd_, POLLIN, 0};
  }
  // Only while the host listens: without one the port is always "ready" (POLLHUP) and poll would spin.
  if (link_.host_listening() && port_.is_open()) {
    port_index = static_cast<int>(n);
    fds[n++] = {port_.fd(), POLLIN, 0};
  }
  int timeout = static_cast<int>(std::clamp<std::int64_t>(link_.wake_at() - now_ms, 0, 60'000));
  if (::poll(fds, n, timeout) <= 0) return;
  now_ms = monotonic_ms();
  if (control_index >= 0 && (fds[control_index].revents & POLLIN)) {
    if (auto request = control_.serve_one()) {
      if (const auto* p = std::get_if<SetPriority>(&*request)) settings_.set_runtime_priority(p->priority);
      if (const auto* f = std::get_if<SetFloor>(&*request)) settings_.set_runtime_floor(f->floor_mib);
    }
  }
  if (wake_index >= 0 && (fds[wake_index].revents & POLLIN)) {
    signalfd_siginfo info[4];
    while (::read(wake_fd_, info, sizeof info) > 0) {
    }
    if (!link_.host_listening()) signalled_ = true;
    link_.probe_now(now_ms);  // the host end may have opened: find out now
  }
  if (port_index >= 0) {
    switch (classify_port_events(fds[port_index].revents)) {
      case PortEvent::None: break;
      case PortEvent::Readable: read_port(); break;
      case PortEvent::HostAbsent:
        read_port();
        host_gone(now_ms, "the host closed the channel");
        break;
      case PortEvent::Broken:
        port_.close();
        host_gone(now_ms, "the port failed");
        break;
    }
  }
}

int Agent::run() {
  if (std::string error = control_.listen(options_.control_path); !error.empty())
    log("%s; set-priority and set-floor will not work", error.c_str());
  wake_fd_ = open_sigio_fd();
  if (wake_fd_ < 0)
    log("cannot receive SIGIO (%s); a host connecting is noticed by probing, up to %lld ms late", std::strerror(errno),
        static_cast<long long>(kProbeMaxMs));
  port_.set_connect_signal(wake_fd_ >= 0);
  build_report();  // primes the CPU counters
  seq_ = 0;
  for (;;) {
    const std::int64_t now = monotonic_ms();
    switch (link_.due(now)) {
      case HostLink::Due::Probe: probe(now); break;
      case HostLink::Due::Report: report(now); break;
      case HostLink::Due::Nothing: wait(now); break;
    }
  }
}

}  // namespace llmorch::agent
