// bench_tick: what one llmorchd tick (orch::Daemon::tick) costs as the number of VMs grows. See kHelp.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fake_hypervisor.h"
#include "hostgen.h"
#include "llmorch/orch/daemon.h"
#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "llmorch/protocol/codec.h"

namespace {

using namespace llmorch;
using orch::ManagedDomain;

constexpr const char* kHelp = R"(usage: bench_tick [--backend fake|test|both] [--vms N,N,...] [--mode dry|apply|both]
                  [--ticks K] [--cli] [--log-level L]

Runs llmorchd's tick (orch::Daemon::tick) on a generated host with N VMs and prints, per run:
CPU per tick (the whole process: the loop and BoundedCalls' workers; median and max of the measured
ticks), wall time per tick, libvirt lever calls per measured tick (0: steady state), agents with a
fresh report, RSS (VmRSS and peak VmHWM of the run's
own process) and the size of status.json. No figure is asserted: it prints.

The host: 8 NUMA nodes; per node a shared pool of 16 CPUs and 2 dedicated CPUs per dedicated VM. VM i
lives on node i % 8; every 4th VM of a node is dedicated (2 vCPUs, up to 4; rebalanced within its node), the rest
shared (2 vCPUs over their node's pool). Every VM carries llmorch metadata (priority 1..10, 2 GiB,
floor 512 MiB) and an agent: a real AF_UNIX socket per VM (as QEMU binds it) on which the benchmark
writes a report per VM once a second (priority, load, memory), read by the daemon's own poll loop
between ticks (not counted in the tick). Balloon statistics are fresh each tick; every 10th VM reports
memory pressure while already at its maximum (the rule looks at it and changes nothing).

Backends:
  fake  tests/orchestrator/fake_hypervisor.h (the project's one fake): listing is a copy of the
        generated domains, statistics a map. What the tick costs in llmorch's own code.
  test  libvirt's test driver, test:///DIR/node.xml, holding the N generated domains (rendered by
        render_domain_xml, type 'test'). llmorchd's real libvirt backend lists them every tick (domain
        XML, state, scheduler, pins per domain) and reads their statistics in bulk. libvirt 9.0's test
        driver reports no NUMA cells, an 8-CPU map, no cpu_shares and no balloon statistics, and
        refuses pins above CPU 7, so a thin shim stands in for those: the capabilities, free memory and
        balloon statistics come from the generator, cpu_shares/pins/vCPUs/balloon/metadata levers are
        recorded by the shim (not sent to libvirt) and laid over what libvirt lists. What it measures
        is llmorch's code plus the libvirt client, RPC-free (the test driver runs in process).
  remote  the same test driver and shim, but hosted by the running libvirtd (test+unix:///DIR/node.xml):
        every libvirt call is a round trip to another process, as on a real host, and the driver's own
        work (formatting each domain's XML) is libvirtd's CPU, not the tick's. Needs libvirtd running
        (tools/libvirtd-up) and able to read /tmp.

Modes: dry (--dry-run: plan and log, apply nothing) and apply (levers called; measured after warm-up
ticks, so steady state: a converged host needs no lever calls).

Options:
  --backend B     fake, test, remote, both (fake and test) or all (default both)
  --vms LIST      VM counts (default 10,100,1000,5000)
  --mode M        dry, apply or both (default both)
  --ticks K       measured ticks per run (default 20; at most 5 above 1000 VMs)
  --cli           also time `llmorch status`, `list` and `host` after each test/remote run: the CLI's
                  own code (llmorch::cli::run, in this process) over the same shim, since `status` and
                  `host` need the NUMA cells the test driver does not report; and, for scale, the
                  start of the real binary (`llmorch --version`)
  --log-level L   llmorchd's log level in the runs (default warn)
Each run is a child process of its own, so RSS is that run's.
)";

struct Options {
  std::vector<std::string> backends{"fake", "test"};
  std::vector<std::size_t> vms{10, 100, 1000, 5000};
  std::vector<bool> dry{true, false};
  int ticks = 20;
  bool cli = false;
  std::string log_level = "warn";
};

constexpr int kNodes = 8;
constexpr int kPool = 16;  // shared CPUs per node
constexpr int kDedicatedEvery = 4;
constexpr std::uint64_t kVmMib = 2048;

// --- the generated host -------------------------------------------------------------------------

struct Generated {
  int cores_per_node = 0;
  std::string caps;
  std::vector<ManagedDomain> domains;
  std::vector<orch::DomainSpec> specs;
};

std::string vm_name(std::size_t i) {
  const std::string number = std::to_string(i);
  return "bench-" + std::string(number.size() < 5 ? 5 - number.size() : 0, '0') + number;
}

// Every 4th VM of each node (VM i is on node i % 8).
bool is_dedicated(std::size_t i) { return (i / kNodes) % kDedicatedEvery == 0; }

double priority_of(std::size_t i) { return static_cast<double>(1 + (i * 7) % 10); }

Generated generate(std::size_t n) {
  Generated g;
  std::vector<int> per_node(kNodes, 0);
  for (std::size_t i = 0; i < n; ++i) per_node[i % kNodes] += is_dedicated(i) ? 1 : 0;
  const int dedicated_per_node = *std::max_element(per_node.begin(), per_node.end());
  g.cores_per_node = kPool + 2 * dedicated_per_node;
  tools::HostSpec spec;
  spec.name = "bench";
  spec.nodes_per_socket = kNodes;
  spec.cores_per_node = g.cores_per_node;
  spec.numbering = tools::HostSpec::Numbering::Adjacent;
  spec.memory_kib = {std::uint64_t{1} << 30};  // 1 TiB per node: never short
  g.caps = tools::render_capabilities(spec);

  std::vector<int> next_dedicated(kNodes, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const int node = static_cast<int>(i % kNodes);
    const int base = node * g.cores_per_node;
    const bool dedicated = is_dedicated(i);
    orch::DomainSpec s;
    s.name = vm_name(i);
    s.template_path = "/etc/llmorch/templates/bench.conf";
    s.tmpl.vcpus = 2;
    s.tmpl.max_vcpus = dedicated ? 4 : 2;
    s.tmpl.memory_mib = kVmMib;
    s.tmpl.max_memory_mib = kVmMib;
    s.tmpl.memory_floor_mib = 512;
    s.tmpl.cpu_policy = dedicated ? policy::CpuPolicy::Dedicated : policy::CpuPolicy::Shared;
    s.tmpl.priority = priority_of(i);
    s.tmpl.priority_min = 1;
    s.tmpl.priority_max = 10;
    s.tmpl.kernel = "/var/lib/libvirt/images/bench-vmlinuz";
    s.tmpl.initrd = "/var/lib/libvirt/images/bench-initrd.gz";
    std::vector<policy::CpuId> cpus;
    if (dedicated) {
      const int at = base + kPool + 2 * next_dedicated[static_cast<std::size_t>(node)]++;
      cpus = {at, at + 1};
    } else {
      for (int c = 0; c < kPool; ++c) cpus.push_back(base + c);
    }
    s.placement = {.name = s.name,
                   .nodes = {node},
                   .cpus = cpus,
                   .memory_mib_per_node = {{node, kVmMib}},
                   .cells = {{node, {0, 1}, kVmMib}},
                   .cpu_policy = s.tmpl.cpu_policy,
                   .hugepage_kib = 0,
                   .vcpus = 2};
    s.domain_type = "qemu";

    ManagedDomain d;
    d.name = s.name;
    d.uuid = "00000000-0000-4000-8000-" + [&] {
      char buf[24];
      std::snprintf(buf, sizeof buf, "%012zx", i + 1);
      return std::string(buf);
    }();
    d.state = orch::DomainState::Running;
    d.facts = orch::make_facts(s.template_path, s.tmpl, s.placement);
    d.vcpus_current = 2;
    d.vcpus_max = s.tmpl.max_vcpus;
    for (int v = 0; v < d.vcpus_max; ++v)
      d.vcpu_pins.push_back(dedicated && v < 2 ? std::vector<policy::CpuId>{cpus[static_cast<std::size_t>(v)]} : cpus);
    d.emulator_pins = cpus;
    d.cpu_shares = 1024;
    d.memory_actual_kib = kVmMib * 1024;
    d.memory_max_kib = kVmMib * 1024;
    g.domains.push_back(std::move(d));
    g.specs.push_back(std::move(s));
  }
  return g;
}

orch::MemoryStats balloon_stats(std::size_t i, std::uint64_t actual_kib, std::uint64_t now_s) {
  orch::MemoryStats m;
  m.actual_kib = actual_kib;
  const bool pressure = i % 10 == 5;  // at its max already: looked at, left as it is
  m.usable_kib = pressure ? actual_kib / 20 : actual_kib / 2;
  m.available_kib = actual_kib;
  m.unused_kib = m.usable_kib;
  m.swap_in_kib = 0;
  m.major_faults = 0;
  m.rss_kib = actual_kib;
  m.last_update_s = now_s;
  return m;
}

std::uint64_t wall_s() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

// --- the test-driver shim ------------------------------------------------------------------------

// libvirt's test driver for listing and bulk statistics; the generator for what that driver lacks.
class TestDriverShim : public orch::Hypervisor {
 public:
  TestDriverShim(std::unique_ptr<orch::Hypervisor> real, const Generated& g) : real_(std::move(real)), caps_(g.caps) {
    for (std::size_t i = 0; i < g.domains.size(); ++i) {
      Overlay& o = overlay_[g.domains[i].name];
      o.index = i;
      o.d = g.domains[i];
    }
  }
  std::size_t levers() const { return levers_; }

  std::string capabilities_xml() override { return caps_; }
  std::map<policy::NodeId, std::uint64_t> free_memory_mib() override {
    std::map<policy::NodeId, std::uint64_t> out;
    for (int n = 0; n < kNodes; ++n) out[n] = std::uint64_t{512} << 10;
    return out;
  }
  std::vector<ManagedDomain> list_managed(std::string_view name_prefix = {}) override {
    std::vector<ManagedDomain> out = real_->list_managed(name_prefix);
    std::lock_guard lock(mu_);
    for (ManagedDomain& d : out) lay_over(d);
    return out;
  }
  std::optional<ManagedDomain> find_managed(const std::string& name) override {
    auto d = real_->find_managed(name);
    std::lock_guard lock(mu_);
    if (d) lay_over(*d);
    return d;
  }
  void define_and_start(const std::string& xml) override { real_->define_and_start(xml); }
  bool destroy_and_undefine_uuid(const std::string& uuid) override { return real_->destroy_and_undefine_uuid(uuid); }
  void set_cpu_shares(const std::string& name, std::uint64_t shares, Scope) override { at(name).d.cpu_shares = shares; }
  void pin_vcpu(const std::string& name, int vcpu, const std::vector<policy::CpuId>& cpus) override {
    auto& pins = at(name).d.vcpu_pins;
    if (pins.size() <= static_cast<std::size_t>(vcpu)) pins.resize(static_cast<std::size_t>(vcpu) + 1);
    pins[static_cast<std::size_t>(vcpu)] = cpus;
  }
  void pin_emulator(const std::string& name, const std::vector<policy::CpuId>& cpus) override {
    at(name).d.emulator_pins = cpus;
  }
  void set_vcpus(const std::string& name, int count) override { at(name).d.vcpus_current = count; }
  void set_memory_mib(const std::string& name, std::uint64_t mib) override {
    at(name).d.memory_actual_kib = mib * 1024;
  }
  void set_metadata(const std::string& name, const orch::VmFacts& facts) override { at(name).d.facts = facts; }
  std::map<std::string, orch::DomainStats> domain_stats() override {
    std::map<std::string, orch::DomainStats> out;
    try {
      out = real_->domain_stats();  // the bulk read's own cost; its memory figures are replaced below
    } catch (const orch::HypervisorError& e) {
      spdlog::debug("test driver statistics: {}", e.what());
    }
    const std::uint64_t now = wall_s();
    std::lock_guard lock(mu_);
    for (const auto& [name, o] : overlay_) {
      orch::DomainStats& st = out[name];
      st.memory = balloon_stats(o.index, o.d.memory_actual_kib, now);
      st.memory_complete = true;
    }
    return out;
  }
  orch::ControlInfo control_info(const std::string&) override { return {}; }
  void set_lifecycle_callback(orch::LifecycleCallback cb) override { real_->set_lifecycle_callback(std::move(cb)); }
  void ensure_connected() override { real_->ensure_connected(); }

 private:
  struct Overlay {
    std::size_t index = 0;
    ManagedDomain d;  // the generated values, changed by the levers
  };
  Overlay& at(const std::string& name) {
    std::lock_guard lock(mu_);
    ++levers_;
    auto it = overlay_.find(name);
    if (it == overlay_.end())
      throw orch::HypervisorError(orch::HypervisorError::Kind::NoDomain, "lever on " + name, "no such domain", "");
    return it->second;
  }
  // What the test driver lacks or refuses, from the overlay; the rest (name, uuid, state, metadata as
  // parsed from the domain XML) stays libvirt's.
  void lay_over(ManagedDomain& d) const {
    auto it = overlay_.find(d.name);
    if (it == overlay_.end()) return;
    const ManagedDomain& o = it->second.d;
    d.cpu_shares = o.cpu_shares;
    d.cpu_shares_unreadable = false;
    d.vcpu_pins = o.vcpu_pins;
    d.emulator_pins = o.emulator_pins;
    d.vcpus_current = o.vcpus_current;
    d.vcpus_max = o.vcpus_max;
    d.memory_actual_kib = o.memory_actual_kib;
    d.channel_path = o.channel_path;           // the agents' sockets are the benchmark's
    if (!d.metadata_error) d.facts = o.facts;  // set_metadata is the shim's
  }

  std::unique_ptr<orch::Hypervisor> real_;
  std::string caps_;
  std::mutex mu_;  // levers run on BoundedCalls' workers
  std::map<std::string, Overlay> overlay_;
  std::size_t levers_ = 0;
};

std::string node_xml(const Generated& g) {
  std::string out = "<node>\n";
  for (const orch::DomainSpec& s : g.specs) {
    std::string xml = orch::render_domain_xml(s);
    const auto at = xml.find("type=\"qemu\"");
    if (at != std::string::npos) xml.replace(at, std::strlen("type=\"qemu\""), "type=\"test\"");
    const auto at2 = xml.find("type='qemu'");
    if (at2 != std::string::npos) xml.replace(at2, std::strlen("type='qemu'"), "type='test'");
    out += xml;
    out += "\n";
  }
  return out + "</node>\n";
}

// --- agents: one listening socket per VM, as QEMU binds the channel --------------------------------

class Agents {
 public:
  Agents(const std::string& dir, const Generated& g) {
    for (std::size_t i = 0; i < g.domains.size(); ++i) {
      Agent a;
      a.path = dir + "/" + std::to_string(i);
      a.listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (a.path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: " + a.path);
      std::memcpy(addr.sun_path, a.path.c_str(), a.path.size() + 1);
      if (a.listen_fd < 0 || ::bind(a.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
          ::listen(a.listen_fd, 4) != 0)
        throw std::runtime_error("cannot listen on " + a.path + ": " + std::strerror(errno) +
                                 " (raise the open-file limit: ulimit -n)");
      a.report.priority = priority_of(i);
      a.report.cpu_pct = 40 + static_cast<double>(i % 5) * 10;
      a.report.runnable = 1;
      a.report.ncpu_online = 2;
      a.report.mem_total_kib = kVmMib * 1024;
      a.report.mem_avail_kib = kVmMib * 512;
      a.report.floor_mib = 512;
      agents_.push_back(std::move(a));
    }
  }
  ~Agents() {
    for (Agent& a : agents_) {
      if (a.fd >= 0) ::close(a.fd);
      if (a.listen_fd >= 0) ::close(a.listen_fd);
    }
  }
  std::string path(std::size_t i) const { return agents_[i].path; }
  // Accepts the daemon's connections and writes one report each, at most once a second (an agent's
  // pace; faster would look like a flood to AgentSession).
  void report_if_due() {
    const auto now = std::chrono::steady_clock::now();
    if (sent_ && now - last_ < std::chrono::seconds(1)) return;
    sent_ = true;
    last_ = now;
    for (Agent& a : agents_) {
      if (a.fd < 0) a.fd = ::accept4(a.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (a.fd < 0) continue;
      ++a.report.seq;
      const std::string frame = protocol::encode(a.report);
      [[maybe_unused]] const ssize_t n = ::write(a.fd, frame.data(), frame.size());
      char sink[512];  // commands from the daemon ("vcpus online=N"): read and drop
      while (::read(a.fd, sink, sizeof sink) > 0) {
      }
    }
  }

 private:
  struct Agent {
    std::string path;
    int listen_fd = -1, fd = -1;
    protocol::Report report;
  };
  std::vector<Agent> agents_;
  bool sent_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// --- measuring ---------------------------------------------------------------------------------------

double process_cpu_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

std::uint64_t proc_status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10);
  return 0;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string temp_dir() {
  char tmpl[] = "/tmp/lbench-XXXXXX";
  if (!::mkdtemp(tmpl))
    throw std::runtime_error(std::string("cannot create a temporary directory: ") + std::strerror(errno));
  return tmpl;
}

// Runs a command, returns wall ms and the child's CPU ms (-1, -1 when it failed).
std::pair<double, double> time_command(const std::vector<std::string>& args) {
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  rusage ru{};
  ::wait4(pid, &status, 0, &ru);
  const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                     static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return {-1, -1};
  return {wall, cpu};
}

// The CLI's status, list and host at this run's size: llmorch::cli::run in this process, reaching
// libvirt through a fresh connection and shim per command (as the binary connects per command), with
// --json so that the figures include building the output a script reads. Plus the binary's start.
void time_cli(const std::string& uri, const std::string& state_dir, const Generated& g) {
  std::ostringstream out, err;
  const cli::Io io{
      .out = out, .err = err, .hypervisors = [&g](const std::string& u) -> std::shared_ptr<orch::Hypervisor> {
        return std::make_shared<TestDriverShim>(orch::connect_libvirt(u), g);
      }};
  for (const std::string cmd : {"status", "list", "host"}) {
    std::vector<std::string> argv{"llmorch", cmd, "-c", uri};
    if (cmd != "list") argv.emplace_back("--json");  // list has no --json (it prints a table)
    if (cmd == "status") argv.insert(argv.end(), {"--state-dir", state_dir});
    out.str("");
    err.str("");
    const double c0 = process_cpu_ms();
    const auto w0 = std::chrono::steady_clock::now();
    const int rc = cli::run(argv, io);
    const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count();
    const double cpu = process_cpu_ms() - c0;
    if (rc != 0)
      std::printf("      llmorch %-6s at %zu VMs: failed (exit %d): %s\n", cmd.c_str(), g.domains.size(), rc,
                  err.str().c_str());
    else
      std::printf("      llmorch %-6s at %zu VMs: %.0f ms wall, %.0f ms CPU (in process, %zu KB out)\n", cmd.c_str(),
                  g.domains.size(), wall, cpu, out.str().size() / 1024);
  }
  const auto [w, c] = time_command({LLMORCH_CLI_PATH, "--version"});
  std::printf("      llmorch binary start (--version): %.0f ms wall, %.0f ms CPU\n", w, c);
  std::fflush(stdout);
}

int run_one(const std::string& backend, std::size_t n, bool dry, const Options& opt) {
  spdlog::set_level(spdlog::level::from_str(opt.log_level));
  const std::string dir = temp_dir();
  std::filesystem::create_directories(dir + "/s");
  std::filesystem::create_directories(dir + "/state");
  Generated g = generate(n);
  Agents agents(dir + "/s", g);
  for (std::size_t i = 0; i < n; ++i) g.domains[i].channel_path = agents.path(i);

  std::unique_ptr<orch::testing::FakeHypervisor> fake;
  std::unique_ptr<TestDriverShim> shim;
  orch::Hypervisor* hv = nullptr;
  std::string uri;
  if (backend == "fake") {
    fake = std::make_unique<orch::testing::FakeHypervisor>();
    fake->domains = g.domains;
    fake->caps = g.caps;
    fake->free_mib.clear();
    for (int node = 0; node < kNodes; ++node) fake->free_mib[node] = std::uint64_t{512} << 10;
    hv = fake.get();
  } else {
    {
      std::ofstream out(dir + "/node.xml");
      out << node_xml(g);
    }
    uri = (backend == "remote" ? "test+unix://" : "test://") + dir + "/node.xml";
    shim = std::make_unique<TestDriverShim>(orch::connect_libvirt(uri), g);
    hv = shim.get();
  }
  orch::SystemClock clock;
  orch::DaemonOptions options;
  options.dry_run = dry;
  options.state_dir = dir + "/state";
  options.config.interval_ms = 1000;
  orch::Daemon daemon(*hv, clock, options);

  auto refresh_stats = [&] {
    if (!fake) return;
    const std::uint64_t now = wall_s();
    for (std::size_t i = 0; i < n; ++i)
      fake->memory[g.domains[i].name] = balloon_stats(i, fake->domains[i].memory_actual_kib, now);
  };
  auto read_reports = [&] {
    agents.report_if_due();
    for (int k = 0; k < 4; ++k) daemon.poll_once(std::chrono::milliseconds(k == 0 ? 20 : 0));
  };
  auto lever_calls = [&]() -> std::size_t { return fake ? fake->calls.size() : shim->levers(); };

  const auto setup_start = std::chrono::steady_clock::now();
  // Warm-up: connect the channels, read the first reports, apply until converged.
  // At least 5 ticks and 6 s: past the reconciler's min_dwell (5 s), so that the dedicated VMs'
  // re-division is applied before measuring; then until a tick calls no lever (at most 30 ticks).
  refresh_stats();
  daemon.tick();
  for (int w = 1; w < 30; ++w) {
    const std::size_t before = lever_calls();
    read_reports();
    refresh_stats();
    daemon.tick();
    const bool settled = w >= 5 && std::chrono::steady_clock::now() - setup_start >= std::chrono::seconds(6);
    if (settled && lever_calls() == before) break;
  }
  const double warmup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count();

  const int ticks = n > 1000 ? std::min(opt.ticks, 5) : opt.ticks;
  std::vector<double> cpu, wall;
  const std::size_t levers_before = lever_calls();
  for (int t = 0; t < ticks; ++t) {
    read_reports();
    refresh_stats();
    const double c0 = process_cpu_ms();
    const auto w0 = std::chrono::steady_clock::now();
    daemon.tick();
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count());
    cpu.push_back(process_cpu_ms() - c0);
  }
  const double levers_per_tick = static_cast<double>(lever_calls() - levers_before) / ticks;
  std::size_t agents_fresh = 0;
  for (const auto& [name, a] : daemon.status().agents) agents_fresh += a.fresh ? 1 : 0;
  const auto status_bytes = std::filesystem::file_size(dir + "/state/status.json");
  std::printf("%-5s %6zu %-5s %5d %9.2f %9.2f %9.2f %8.1f %8.1f %9.1f %6zu %7.1f\n", backend.c_str(), n,
              dry ? "dry" : "apply", ticks, median(cpu), *std::max_element(cpu.begin(), cpu.end()), median(wall),
              static_cast<double>(proc_status_kib("VmRSS:")) / 1024.0,
              static_cast<double>(proc_status_kib("VmHWM:")) / 1024.0, static_cast<double>(status_bytes) / 1024.0,
              agents_fresh, levers_per_tick);
  std::fflush(stdout);
  spdlog::debug("warm-up {:.1f} s", warmup_s);

  if (opt.cli && !uri.empty()) time_cli(uri, dir + "/state", g);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--help" || a == "-h") {
        std::fputs(kHelp, stdout);
        return 0;
      } else if (a == "--backend") {
        const std::string b = value();
        opt.backends = b == "both"  ? std::vector<std::string>{"fake", "test"}
                       : b == "all" ? std::vector<std::string>{"fake", "test", "remote"}
                                    : std::vector<std::string>{b};
        if (b != "both" && b != "all" && b != "fake" && b != "test" && b != "remote")
          throw std::invalid_argument("--backend is fake, test, remote, both or all");
      } else if (a == "--vms") {
        opt.vms.clear();
        for (const std::string& v : split(value())) opt.vms.push_back(std::stoul(v));
      } else if (a == "--mode") {
        const std::string m = value();
        if (m == "dry") opt.dry = {true};
        else if (m == "apply") opt.dry = {false};
        else if (m == "both") opt.dry = {true, false};
        else throw std::invalid_argument("--mode is dry, apply or both");
      } else if (a == "--ticks") {
        opt.ticks = std::max(1, std::stoi(value()));
      } else if (a == "--cli") {
        opt.cli = true;
      } else if (a == "--log-level") {
        opt.log_level = value();
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tick: %s; see bench_tick --help\n", e.what());
    return 2;
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {  // two sockets per VM
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  std::printf("%-5s %6s %-5s %5s %9s %9s %9s %8s %8s %9s %6s %7s\n", "back", "VMs", "mode", "ticks", "cpu_ms",
              "cpu_max", "wall_ms", "rss_MiB", "hwm_MiB", "status_KB", "agents", "levers");
  int rc = 0;
  for (const std::string& backend : opt.backends)
    for (std::size_t n : opt.vms)
      for (bool dry : opt.dry) {
        std::fflush(stdout);
        const pid_t pid = ::fork();  // a fresh process per run: its RSS is its own
        if (pid == 0) {
          try {
            ::_exit(run_one(backend, n, dry, opt));
          } catch (const std::exception& e) {
            std::fprintf(stderr, "bench_tick: %s run with %zu VMs failed: %s\n", backend.c_str(), n, e.what());
            ::_exit(1);
          }
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
      }
  return rc;
}
