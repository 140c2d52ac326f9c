#include "agent.h"

#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "llmorch/protocol/codec.h"
#include "util.h"

namespace llmorch::agent {
namespace {

constexpr int kLlmScrapeTimeoutMs = 300;

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

}  // namespace

Agent::Agent(AgentOptions options)
    : options_(std::move(options)),
      sampler_(options_.proc_root),
      cpus_(options_.sysfs_root),
      settings_(CmdlineSettings{}, Layer{}),
      started_ms_(monotonic_ms()),
      port_(options_.sysfs_root, options_.dev_root, options_.port_name) {
  FileSettings file;
  settings_ = load_settings(options_, sampler_, &file);
  interval_ms_ = options_.interval_ms.value_or(file.interval_ms.value_or(1000));
  interval_ms_ = std::clamp(interval_ms_, protocol::kMinIntervalMs, protocol::kMaxIntervalMs);
  if (auto url = options_.llm_metrics ? options_.llm_metrics : file.llm_metrics) {
    llm_url_ = parse_http_url(*url);
    if (!llm_url_) log("ignoring LLM metrics URL '%s': use http://127.0.0.1:PORT/metrics", url->c_str());
  }
}

protocol::Report Agent::build_report() {
  settings_.advance(static_cast<double>(monotonic_ms() - started_ms_) / 1000.0);
  ProcSample s = sampler_.sample();
  protocol::Report r;
  r.seq = seq_++;
  r.priority = settings_.priority();
  r.floor_mib = std::min(settings_.floor_mib(), protocol::kMaxFloorMib);
  if (s.cpu && last_cpu_) r.cpu_pct = cpu_percent(*last_cpu_, *s.cpu);
  if (s.cpu) last_cpu_ = s.cpu;
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

void Agent::report_tick() {
  host_listening_ = true;
  if (!port_.ensure_open()) return;
  std::string frame = protocol::encode(build_report());
  // Wait for room at most half an interval; a stale report is worth less than the next fresh one.
  port_.send(frame, static_cast<int>(std::min<std::uint64_t>(interval_ms_ / 2, 500)));
}

void Agent::poll_once(std::int64_t until_ms, bool watch_port) {
  pollfd fds[2];
  nfds_t n = 0;
  if (control_.fd() >= 0) fds[n++] = {control_.fd(), POLLIN, 0};
  int port_index = -1;
  if (watch_port && port_.is_open()) {
    port_index = static_cast<int>(n);
    fds[n++] = {port_.fd(), POLLIN, 0};
  }
  int timeout = static_cast<int>(std::max<std::int64_t>(0, until_ms - monotonic_ms()));
  if (::poll(fds, n, timeout) <= 0) return;
  if (control_.fd() >= 0 && (fds[0].revents & POLLIN)) {
    if (auto request = control_.serve_one()) {
      if (const auto* p = std::get_if<SetPriority>(&*request)) settings_.set_runtime_priority(p->priority);
      if (const auto* f = std::get_if<SetFloor>(&*request)) settings_.set_runtime_floor(f->floor_mib);
    }
  }
  if (port_index >= 0) {
    short ev = fds[port_index].revents;
    if (ev & POLLIN) {
      std::string bytes;
      if (port_.receive(&bytes)) handle_host_bytes(bytes);
    } else if (ev & (POLLHUP | POLLERR)) {
      host_listening_ = false;  // virtio-serial says POLLHUP while no host holds the socket
    }
  }
}

int Agent::run() {
  if (std::string error = control_.listen(options_.control_path); !error.empty())
    log("%s; set-priority and set-floor will not work", error.c_str());
  build_report();  // primes the CPU counters so the first real report has a utilisation
  seq_ = 0;
  std::int64_t next = monotonic_ms() + static_cast<std::int64_t>(interval_ms_);
  for (;;) {
    std::int64_t now = monotonic_ms();
    if (now >= next) {
      report_tick();
      // After a suspend or a stall, do not burst to catch up: report fresh state from now on.
      next += static_cast<std::int64_t>(interval_ms_);
      if (next <= now) next = now + static_cast<std::int64_t>(interval_ms_);
    }
    poll_once(next, host_listening_);
  }
}

}  // namespace llmorch::agent
