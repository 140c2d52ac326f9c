#include "e2e_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace llmorch::e2e {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// Reads both pipes until they close or the deadline passes.
bool drain(int out_fd, int err_fd, std::string& out, std::string& err, Clock::time_point deadline) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&out, &err};
  int open = 2;
  while (open > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left <= 0ms) return false;
    if (poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) return false;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open;
      }
    }
  }
  return true;
}

std::optional<std::string> virsh_field(const std::vector<std::string>& args, const std::string& key) {
  std::vector<std::string> argv = {"virsh", "-c", kUri};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult r = run_command(argv, 20s);
  if (r.exit_code != 0) return std::nullopt;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const auto sep = line.find_first_of("=:");
    if (sep == std::string::npos) continue;
    std::string k = line.substr(0, sep), v = line.substr(sep + 1);
    auto trim = [](std::string& s) {
      s.erase(0, s.find_first_not_of(" \t"));
      s.erase(s.find_last_not_of(" \t") + 1);
    };
    trim(k);
    trim(v);
    if (k == key) return v;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> to_u64(const std::optional<std::string>& s) {
  if (!s || s->empty()) return std::nullopt;
  try {
    return std::stoull(*s);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The environment for llmorchd: ours, with a small ASan quarantine. ASan keeps freed memory in a
// quarantine (256 MiB by default) to catch use after free; in the sanitized suite that shows up as RSS
// growth and would hide what the hostile-guest test measures (growth that is llmorch's own). Recent
// frees are still checked. Ignored by builds without ASan.
std::vector<std::string> daemon_environment() {
  std::vector<std::string> env;
  std::string asan = "ASAN_OPTIONS=";
  for (char** e = environ; *e; ++e) {
    const std::string var = *e;
    if (var.starts_with("ASAN_OPTIONS=")) asan = var + ":";
    else env.push_back(var);
  }
  env.push_back(asan + "quarantine_size_mb=" + std::to_string(kDaemonAsanQuarantineMib) +
                ":thread_local_quarantine_size_kb=256");
  return env;
}

}  // namespace

std::string sanitizer_report(const std::string& output) {
  for (const char* marker :
       {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:"}) {
    const auto at = output.find(marker);
    if (at == std::string::npos) continue;
    const auto begin = output.rfind('\n', at);
    return output.substr(begin == std::string::npos ? 0 : begin + 1, 4000);
  }
  return {};
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  auto args = c_argv(argv);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s\n", args[0]);
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  CommandResult r;
  r.timed_out = !drain(out_pipe[0], err_pipe[0], r.out, r.err, Clock::now() + timeout);
  if (r.timed_out) kill(pid, SIGKILL);
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = !r.timed_out && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (const std::string report = sanitizer_report(r.err); !report.empty())
    ADD_FAILURE() << "sanitizer report from " << argv[0] << ":\n" << report;
  return r;
}

std::string libvirt_problem() {
  const CommandResult r = run_command({"virsh", "-c", kUri, "version"}, 20s);
  if (r.exit_code == 0) return {};
  return std::string("libvirtd does not answer on ") + kUri + " (" + r.err + "); start it with tools/libvirtd-up";
}

std::string guest_dir() {
  const char* dir = std::getenv("LLMORCH_GUEST_DIR");
  return dir && *dir ? dir : "/var/lib/libvirt/images/llmorch";
}

std::vector<std::string> guest_image_overrides() {
  const std::string dir = guest_dir();
  return {"kernel=" + dir + "/vmlinuz", "initrd=" + dir + "/initrd.gz"};
}

std::string guest_problem() {
  const std::string dir = guest_dir();
  for (const std::string& f : {dir + "/vmlinuz", dir + "/initrd.gz"}) {
    if (fs::exists(f)) continue;
    const bool custom = std::getenv("LLMORCH_GUEST_DIR") && *std::getenv("LLMORCH_GUEST_DIR");
    return f + " is missing; build the test guest with " + (custom ? "LLMORCH_GUEST_DIR=" + dir + " " : std::string()) +
           "tools/build-test-guest";
  }
  return {};
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "llmorch-e2e.XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path write_host_config(const fs::path& dir, const HostConfigOptions& o) {
  const fs::path p = dir / "llmorch.conf";
  std::ofstream f(p);
  f << "domain_type = qemu\n"
    << "shared_cpus = " << o.shared_cpus << "\n"
    << "reserved_cpus = " << o.reserved_cpus << "\n"
    << "memory_reserve_mib = " << o.memory_reserve_mib << "\n"
    << "interval_ms = " << o.interval_ms << "\n"
    << "alpha = " << o.alpha << "\n";
  if (!f) throw std::runtime_error("cannot write " + p.string());
  return p;
}

std::string domain_name(const std::string& stem) {
  return std::string(kE2ePrefix) + stem + "-" + std::to_string(getpid());
}

Guests::Guests(fs::path host_config, fs::path state_dir)
    : config_(std::move(host_config)), state_dir_(std::move(state_dir)) {}

Guests::~Guests() {
  for (const auto& n : names_) remove_domain(n);
}

CommandResult Guests::place(const std::string& name, const std::vector<std::string>& overrides) {
  std::vector<std::string> argv = {LLMORCH_CLI,   "place",
                                   "--connect",   kUri,
                                   "--config",    config_.string(),
                                   "--state-dir", state_dir_.string(),
                                   "--template",  std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf",
                                   "--name",      name};
  // The image first: a test's own kernel= or initrd= comes later and wins.
  std::vector<std::string> all = guest_image_overrides();
  all.insert(all.end(), overrides.begin(), overrides.end());
  for (const auto& o : all) {
    argv.push_back("--set");
    argv.push_back(o);
  }
  names_.push_back(name);  // before running: a half-done place still needs cleaning up
  return run_command(argv, 90s);
}

void remove_domain(const std::string& name) {
  run_command({"virsh", "-c", kUri, "destroy", name}, 30s);
  run_command({"virsh", "-c", kUri, "undefine", "--nvram", name}, 30s);
  run_command({"virsh", "-c", kUri, "undefine", name}, 30s);
}

std::vector<std::string> remove_leftover_domains(const std::string& prefix) {
  const CommandResult r = run_command({"virsh", "-c", kUri, "list", "--all", "--name"}, 20s);
  std::vector<std::string> removed;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    remove_domain(line);
    removed.push_back(line);
  }
  return removed;
}

void SuiteDomains::SetUp() {
  remove_leftover_domains(prefix_);
  ASSERT_EQ(libvirt_problem(), "");
  ASSERT_EQ(guest_problem(), "");
}

void SuiteDomains::TearDown() {
  std::string names;
  for (const auto& n : remove_leftover_domains(prefix_)) names += " " + n;
  EXPECT_EQ(names, "") << "domains left behind by the tests (removed now)";
}

std::string kernel_args(const std::string& words) { return "kernel_args=console=ttyS0 quiet panic=-1 psi=1 " + words; }

std::string serial_log(const std::string& name) { return read_file("/var/log/libvirt/qemu/" + name + "-serial.log"); }

bool wait_for_console(const std::string& name, const std::string& marker, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (serial_log(name).find(marker) != std::string::npos) return true;
    std::this_thread::sleep_for(200ms);
  }
  return false;
}

std::optional<std::uint64_t> cpu_time_ns(const std::string& name) {
  return to_u64(virsh_field({"domstats", "--cpu-total", name}, "cpu.time"));
}

std::optional<std::uint64_t> cpu_shares(const std::string& name) {
  return to_u64(virsh_field({"schedinfo", name}, "cpu_shares"));
}

DaemonProcess::DaemonProcess(const fs::path& host_config, const fs::path& state_dir,
                             const std::vector<std::string>& extra_args)
    : state_dir_(state_dir) {
  std::vector<std::string> argv = {LLMORCH_DAEMON, "--connect",       kUri, "--config", host_config.string(),
                                   "--state-dir",  state_dir.string()};
  // A test may narrow the prefix further (its own VMs only); otherwise every e2e VM.
  if (std::find(extra_args.begin(), extra_args.end(), "--domain-prefix") == extra_args.end())
    argv.insert(argv.end(), {"--domain-prefix", kE2ePrefix});
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto args = c_argv(argv);
  const std::vector<std::string> env_strings = daemon_environment();
  auto env = c_argv(env_strings);
  const std::string log_path = (state_dir / "llmorchd.log").string();
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
}

DaemonProcess::~DaemonProcess() { stop(); }

bool DaemonProcess::running() {
  if (pid_ < 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return false;
  }
  return true;
}

int DaemonProcess::stop() {
  if (running()) {
    kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + 10s;
    while (running() && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
    if (pid_ >= 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      exit_status_ = -1;
    }
  }
  if (!log_checked_) {
    log_checked_ = true;
    if (const std::string report = sanitizer_report(log()); !report.empty())
      ADD_FAILURE() << "sanitizer report in llmorchd's log:\n" << report;
  }
  return exit_status_;
}

std::optional<long> DaemonProcess::rss_kib() const {
  if (pid_ < 0) return std::nullopt;
  std::istringstream lines(read_file("/proc/" + std::to_string(pid_) + "/status"));
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return std::nullopt;
}

std::optional<nlohmann::json> DaemonProcess::status() const {
  const fs::path p = state_dir_ / "status.json";
  if (!fs::exists(p)) return std::nullopt;
  auto j = nlohmann::json::parse(read_file(p), nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::optional<nlohmann::json> DaemonProcess::wait_for_tick(const std::string& after,
                                                           std::chrono::seconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto s = status();
    if (s && s->contains("last_tick_at") && (*s)["last_tick_at"].is_string() &&
        (*s)["last_tick_at"].get<std::string>() != after)
      return s;
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

std::string DaemonProcess::log() const { return read_file(state_dir_ / "llmorchd.log"); }

const nlohmann::json* find_vm(const nlohmann::json& status, const std::string& name) {
  if (!status.contains("vms") || !status["vms"].is_array()) return nullptr;
  for (const auto& vm : status["vms"])
    if (vm.value("name", "") == name) return &vm;
  return nullptr;
}

std::optional<double> parse_iso8601(const std::string& text) {
  std::tm tm{};
  double frac = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &consumed) != 6)
    return std::nullopt;
  std::string rest = text.substr(static_cast<std::size_t>(consumed));
  if (!rest.empty() && rest[0] == '.') {
    const auto z = rest.find('Z');
    frac = std::stod("0" + rest.substr(0, z));
    rest = rest.substr(z == std::string::npos ? rest.size() : z);
  }
  if (rest != "Z") return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<double>(timegm(&tm)) + frac;
}

void figure(const std::string& name, double value) { std::printf("FIGURE %s=%.4f\n", name.c_str(), value); }

double now_s() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

}  // namespace llmorch::e2e
