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

#include "llmorch/orch/libvirt_hypervisor.h"
#include "llmorch/orch/place_vm.h"
#include "llmorch/orch/po_error.h"
#include "llmorch/orch/status_file.h"
#include "llmorch/orch/template.h"
#include "llmorch/orch/topology.h"

namespace llmorch::cli {

namespace po = boost::program_options;

void add_common_options(po::options_description& options, CommonOptions& common) {
  options.add_options()("help,h", po::bool_switch(&common.help), "explain this command")(
      "connect,c", po::value<std::string>()->notifier([&common](const std::string& uri) { common.connect = uri; }),
      "libvirt URI")("config", po::value<std::string>(&common.config), "host config file")(
      "state-dir", po::value<std::string>(&common.state_dir), "llmorchd's state directory");
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

std::shared_ptr<orch::Hypervisor> connect(const CommonOptions& common, const Io& io) {
  const std::string uri = orch::resolve_uri(common.connect);
  if (io.hypervisors) return io.hypervisors(uri);
  return orch::connect_libvirt(uri);
}

orch::HostSnapshot read_host(const std::shared_ptr<orch::Hypervisor>& hv, std::ostream& warn) {
  return orch::read_host(hv, kCliCallTimeout, warn);
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

const orch::StatusFileVm* DaemonView::vm(const std::string& name) const { return status ? status->vm(name) : nullptr; }

DaemonView read_daemon_view(const std::string& state_dir, double now_unix_s) {
  DaemonView view;
  const std::string path = state_dir + "/status.json";
  try {
    view.status = orch::status_from_json(orch::read_status_file(state_dir));
  } catch (const std::runtime_error& e) {  // missing, not JSON, or not what llmorchd writes
    view.why_not = e.what();
    return view;
  }
  if (auto tick = parse_iso8601(view.status->last_tick_at)) view.age_s = now_unix_s - *tick;
  const int pid = view.status->pid;
  const double interval_s = view.status->interval_ms / 1000.0;
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

orch::Plan offline_plan(orch::Hypervisor& hypervisor, const std::vector<orch::ManagedDomain>& domains,
                        const orch::HostConfig& config) {
  const policy::HostTopology topology = orch::parse_capabilities(hypervisor.capabilities_xml());
  return orch::offline_plan(domains, topology, config);
}

const orch::VmPlan* find_vm(const orch::Plan& plan, const std::string& name) {
  for (const auto& v : plan.vms)
    if (v.name == name) return &v;
  return nullptr;
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
