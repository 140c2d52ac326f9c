#include "cli_common.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <set>
#include <sstream>

#include "llmorch/orch/bounded_calls.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "llmorch/orch/po_error.h"
#include "llmorch/orch/status_file.h"
#include "llmorch/orch/template.h"
#include "llmorch/orch/topology.h"

namespace llmorch::cli {

namespace po = boost::program_options;

void add_common_options(po::options_description& options, CommonOptions& common) {
  options.add_options()
      ("help,h", po::bool_switch(&common.help), "explain this command")
      ("connect,c", po::value<std::string>()->notifier([&common](const std::string& uri) { common.connect = uri; }),
       "libvirt URI")
      ("config", po::value<std::string>(&common.config), "host config file")
      ("state-dir", po::value<std::string>(&common.state_dir), "llmorchd's state directory");
}

po::variables_map parse_args(const std::vector<std::string>& args, const po::options_description& options,
                             const po::positional_options_description& positional) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(orch::program_options_message(e));
  }
  return vm;
}

VmArgs parse_vm_args(const std::vector<std::string>& args, const po::options_description& extra) {
  VmArgs parsed;
  po::options_description options;
  add_common_options(options, parsed.common);
  options.add(extra);
  options.add_options()("name", po::value<std::string>(&parsed.name), "VM name");
  po::positional_options_description positional;
  positional.add("name", 1);
  parse_args(args, options, positional);
  return parsed;
}

orch::HostConfig load_host_config(const CommonOptions& common) { return orch::load_config(common.config); }

namespace {
HypervisorFactory& factory() {
  static HypervisorFactory f;
  return f;
}
}  // namespace

void set_hypervisor_factory(HypervisorFactory f) { factory() = std::move(f); }

std::unique_ptr<orch::Hypervisor> connect(const CommonOptions& common) {
  const std::string uri = orch::resolve_uri(common.connect);
  if (factory()) return factory()(uri);
  return orch::connect_libvirt(uri);
}

namespace {
// One bounded read; a call that does not return in time is an error that says so.
template <typename T>
T bounded_read(orch::BoundedCalls& calls, const std::string& what, std::function<T()> fn) {
  orch::BoundedCalls::Result r;
  auto value = calls.get<T>(what, kCliCallTimeout, std::move(fn), r);
  if (value) return std::move(*value);
  if (r.status == orch::BoundedCalls::Status::Error) std::rethrow_exception(r.error);
  throw orch::HypervisorError(orch::HypervisorError::Kind::Connection, "cannot read " + what,
                              "libvirt did not answer within " + std::to_string(kCliCallTimeout.count()) + " s",
                              "is libvirtd overloaded or stuck? Check `virsh list`, then try again");
}
}  // namespace

orch::HostSnapshot read_host(const std::shared_ptr<orch::Hypervisor>& hv, std::ostream& warn) {
  orch::BoundedCalls calls([hv](const std::string&) { hv->abandon_connection(); });
  orch::HostSnapshot host;
  host.topology = orch::parse_capabilities(
      bounded_read<std::string>(calls, "the host capabilities", [hv] { return hv->capabilities_xml(); }));
  host.domains = bounded_read<std::vector<orch::ManagedDomain>>(calls, "the domain list", [hv] { return hv->list_managed(); });
  // A VM whose llmorch metadata is bad says nothing usable about what it holds (llmorchd reports it).
  std::erase_if(host.domains, [](const orch::ManagedDomain& d) { return d.metadata_error.has_value(); });
  host.free_mib = bounded_read<std::map<policy::NodeId, std::uint64_t>>(calls, "the free memory per node",
                                                                        [hv] { return hv->free_memory_mib(); });
  orch::BoundedCalls::Result r;
  auto stats = calls.get<std::map<std::string, orch::DomainStats>>("stats", kCliCallTimeout, [hv] { return hv->domain_stats(); }, r);
  if (r.status == orch::BoundedCalls::Status::TimedOut) {
    warn << "warning: libvirt did not return the VMs' statistics within " << kCliCallTimeout.count()
         << " s (a VM's QEMU may not be answering: `virsh domcontrol NAME` shows which); their balloon sizes "
            "stand in for their resident memory\n";
  }
  // An error (a VM stopped meanwhile, no stats): balloon sizes stand in too (host_state.h).
  if (stats) {
    for (const auto& d : host.domains) {
      auto it = stats->find(d.name);
      if (d.active() && it != stats->end() && it->second.memory.rss_kib)
        host.resident_mib[d.name] = *it->second.memory.rss_kib / 1024;
    }
  }
  return host;
}

int guarded(const std::string& command, Io io, const std::function<int()>& body) {
  const std::string prefix = "llmorch " + command + ": ";
  try {
    return body();
  } catch (const UsageError& e) {
    io.err << prefix << e.what() << "; 'llmorch " << command << " --help' explains\n";
    return kExitUsage;
  } catch (const orch::ConfigError& e) {
    io.err << prefix << e.what() << "\n";
    return kExitUsage;
  } catch (const orch::TemplateError& e) {
    io.err << prefix << e.what() << "\n";
    return kExitUsage;
  } catch (const orch::HypervisorError& e) {
    io.err << prefix << e.what() << "\n";
    return kExitFailure;
  } catch (const orch::CapabilitiesError& e) {
    io.err << prefix << "libvirt's host capabilities are unusable: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    io.err << prefix << e.what() << "\n";
    return kExitFailure;
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon's status file.

std::optional<double> parse_iso8601(const std::string& text) {
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  if (in.fail()) return std::nullopt;
  double frac = 0;
  if (in.peek() == '.') {
    std::string digits;
    in.get();
    while (std::isdigit(in.peek())) digits += static_cast<char>(in.get());
    if (!digits.empty()) frac = std::stod("0." + digits);
  }
  if (in.get() != 'Z') return std::nullopt;
  return static_cast<double>(timegm(&tm)) + frac;
}

double now_unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string json_string(const nlohmann::json& j, const char* key, const std::string& fallback) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return fallback;
  return j[key].get<std::string>();
}

double json_number(const nlohmann::json& j, const char* key, double fallback) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return fallback;
  return j[key].get<double>();
}

const nlohmann::json* DaemonView::vm(const std::string& name) const {
  if (!status.is_object() || !status.contains("vms") || !status["vms"].is_array()) return nullptr;
  for (const auto& v : status["vms"])
    if (json_string(v, "name", "") == name) return &v;
  return nullptr;
}

DaemonView read_daemon_view(const std::string& state_dir, double now_unix_s) {
  DaemonView view;
  const std::string path = state_dir + "/status.json";
  try {
    view.status = orch::read_status_file(state_dir);
  } catch (const std::runtime_error& e) {
    view.why_not = e.what();
    return view;
  }
  if (!view.status.is_object()) {
    view.status = nullptr;
    view.why_not = path + " is not a JSON object";
    return view;
  }
  if (auto tick = parse_iso8601(json_string(view.status, "last_tick_at", ""))) view.age_s = now_unix_s - *tick;
  const int pid = static_cast<int>(json_number(view.status, "pid", 0));
  const double interval_s = json_number(view.status, "interval_ms", 1000) / 1000.0;
  if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
    view.why_not = "llmorchd (process " + std::to_string(pid) + ") is not running; " + path + " is left over";
  } else if (view.age_s < 0) {
    view.why_not = path + " has no readable last_tick_at";
  } else if (view.age_s > 3 * interval_s + 5) {
    view.why_not = path + " was last written " + fixed(view.age_s, 0) + " s ago (llmorchd stuck or stopped)";
  } else {
    view.running = true;
  }
  return view;
}

policy::CpuPlan offline_plan(const std::vector<orch::ManagedDomain>& domains, double alpha) {
  std::vector<policy::VmCpuInput> inputs;
  for (const auto& d : domains) {
    if (!d.active()) continue;
    const auto& p = d.facts.placement;
    inputs.push_back({d.name, p.cpu_policy, p.nodes, p.cpus, 1, std::max(1, d.facts.max_vcpus), d.facts.priority, -1.0,
                      d.vcpu_pins});
  }
  return policy::plan_cpus(inputs, alpha);
}

// ---------------------------------------------------------------------------------------------
// Formatting.

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> width;
  for (const auto& r : rows_) {
    width.resize(std::max(width.size(), r.size()));
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows_) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string cpu_list(const std::vector<policy::CpuId>& cpus) {
  if (cpus.empty()) return "-";
  return orch::format_cpu_list({cpus.begin(), cpus.end()});
}

std::string fixed(double value, int decimals) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << value;
  return s.str();
}

}  // namespace llmorch::cli
