// Prometheus text exposition of llmorchd's state (metrics.h). Hand-written: prometheus-cpp is not in
// Debian 12, and the format needs no more than this file.
#include "llmorch/orch/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace llmorch::orch {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end())
    throw std::invalid_argument("histogram bounds must be strictly ascending");
}

void Histogram::observe(double value) {
  // Prometheus buckets are "less than or equal": a value on a bound counts in that bound's bucket.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

std::string action_kind(const Action& action) {
  return std::visit(Overloaded{
                        [](const SetCpuShares&) { return "cpu_shares"; },
                        [](const SetVcpus&) { return "vcpus"; },
                        [](const PinVcpu&) { return "pin_vcpu"; },
                        [](const PinEmulator&) { return "pin_emulator"; },
                        [](const SetMetadata&) { return "metadata"; },
                        [](const SetMemory&) { return "balloon"; },
                        [](const SendVcpusOnline&) { return "vcpus_online"; },
                    },
                    action.change);
}

std::vector<VmMetrics> vm_metrics(const StatusFile& status) {
  constexpr std::uint64_t kMiB = 1024 * 1024;
  std::vector<VmMetrics> out;
  out.reserve(status.vms.size());
  for (const StatusFileVm& v : status.vms) {
    VmMetrics m;
    m.name = v.name;
    m.priority = v.effective_priority;
    m.priority_source = v.priority_source;
    m.weight = v.weight;
    m.cpu_shares = v.cpu_shares;
    m.vcpus_online = v.vcpus_online;
    m.cpu_seconds = v.cpu_time_s;
    if (v.balloon.actual_mib) m.balloon_actual_bytes = *v.balloon.actual_mib * kMiB;
    if (v.balloon.target_mib) m.balloon_target_bytes = *v.balloon.target_mib * kMiB;
    m.balloon_floor_bytes = v.balloon.floor_mib * kMiB;
    m.report_age_seconds = v.report_age_s;
    m.hostile = v.hostile;
    m.flapping = v.flapping;
    out.push_back(std::move(m));
  }
  for (const StatusFileProblem& p : status.problems) {
    if (p.kind != "unresponsive") continue;
    auto it = std::lower_bound(out.begin(), out.end(), p.vm,
                               [](const VmMetrics& m, const std::string& name) { return m.name < name; });
    if (it != out.end() && it->name == p.vm) it->unresponsive = true;
  }
  return out;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {

// A sample value: integers without a fraction, others in the shortest form that reads back exactly.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

class Exposition {
 public:
  explicit Exposition(std::string& out) : out_(out) {}

  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  // name{labels} value; labels already rendered ("" for none).
  void sample(std::string_view name, std::string_view labels, std::string_view value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(std::string_view name, std::string_view labels, double value) { sample(name, labels, number(value)); }
  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    sample(name, labels, std::to_string(value));
  }

  void histogram(std::string_view name, std::string_view help, const Histogram& h) {
    family(name, "histogram", help);
    const std::string bucket = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += h.counts()[i];
      sample(bucket, "le=\"" + number(h.bounds()[i]) + "\"", cumulative);
    }
    cumulative += h.counts().back();
    sample(bucket, "le=\"+Inf\"", cumulative);
    sample(std::string(name) + "_sum", "", h.sum());
    sample(std::string(name) + "_count", "", h.count());
  }

 private:
  std::string& out_;
};

}  // namespace

std::string render_metrics(const MetricsSnapshot& s, std::string_view version) {
  std::string out;
  out.reserve(1024 + s.vms.size() * 900);
  Exposition e(out);
  std::vector<std::string> vm_label;  // vm="NAME", escaped once
  vm_label.reserve(s.vms.size());
  for (const VmMetrics& v : s.vms) vm_label.push_back("vm=\"" + escape_label_value(v.name) + "\"");

  // One family per VM figure: HELP, TYPE, then a sample for each VM that has a value.
  auto per_vm = [&](std::string_view name, std::string_view type, std::string_view help, auto value_of) {
    e.family(name, type, help);
    for (std::size_t i = 0; i < s.vms.size(); ++i)
      if (const std::optional<double> v = value_of(s.vms[i])) e.sample(name, vm_label[i], *v);
  };
  using Opt = std::optional<double>;
  auto flag = [](bool b) { return Opt(b ? 1.0 : 0.0); };

  e.family("llmorch_vm_priority", "gauge",
           "Effective priority of the VM (what its weight uses); source: agent, template, stale or hostile.");
  for (std::size_t i = 0; i < s.vms.size(); ++i)
    e.sample("llmorch_vm_priority", vm_label[i] + ",source=\"" + escape_label_value(s.vms[i].priority_source) + "\"",
             s.vms[i].priority);
  per_vm("llmorch_vm_weight", "gauge", "The VM's planned share of its node's CPU time, 0 to 1.",
         [](const VmMetrics& v) { return Opt(v.weight); });
  per_vm("llmorch_vm_cpu_shares", "gauge", "The VM's planned cgroup cpu.shares.",
         [](const VmMetrics& v) { return Opt(v.cpu_shares); });
  per_vm("llmorch_vm_vcpus_online", "gauge", "vCPUs the plan keeps online, for VMs whose count llmorchd manages.",
         [](const VmMetrics& v) { return v.vcpus_online ? Opt(*v.vcpus_online) : std::nullopt; });
  per_vm("llmorch_vm_cpu_seconds_total", "counter", "CPU time used by all of the VM's threads, as libvirt measures it.",
         [](const VmMetrics& v) { return v.cpu_seconds; });
  per_vm("llmorch_vm_balloon_actual_bytes", "gauge", "The VM's memory balloon now.", [](const VmMetrics& v) {
    return v.balloon_actual_bytes ? Opt(double(*v.balloon_actual_bytes)) : std::nullopt;
  });
  per_vm("llmorch_vm_balloon_target_bytes", "gauge",
         "This tick's balloon target; no sample while the balloon is left where it is.", [](const VmMetrics& v) {
           return v.balloon_target_bytes ? Opt(double(*v.balloon_target_bytes)) : std::nullopt;
         });
  per_vm("llmorch_vm_balloon_floor_bytes", "gauge", "The least llmorchd shrinks the VM's balloon to.",
         [](const VmMetrics& v) { return Opt(double(v.balloon_floor_bytes)); });
  per_vm("llmorch_vm_agent_report_age_seconds", "gauge", "Age of the newest valid report from the VM's agent.",
         [](const VmMetrics& v) { return v.report_age_seconds; });
  per_vm("llmorch_vm_hostile", "gauge", "1 while the VM's agent is treated as hostile (its reports are ignored).",
         [&](const VmMetrics& v) { return flag(v.hostile); });
  per_vm("llmorch_vm_flapping", "gauge", "1 while the VM's priority keeps flipping and is held.",
         [&](const VmMetrics& v) { return flag(v.flapping); });
  per_vm("llmorch_vm_unresponsive", "gauge", "1 while libvirt does not answer for the VM and llmorchd skips it.",
         [&](const VmMetrics& v) { return flag(v.unresponsive); });

  const DaemonCounters& c = s.counters;
  e.histogram("llmorch_tick_duration_seconds", "Duration of one reconcile of the whole host.", c.tick_seconds);
  e.histogram("llmorch_report_to_applied_seconds",
              "From reading an agent report that changes the plan to the return of the last libvirt call applying it.",
              c.report_to_applied_seconds);
  e.family("llmorch_actions_applied_total", "counter", "Changes llmorchd applied, by kind (dry runs apply none).");
  for (const auto& [kind, n] : c.actions_applied)
    e.sample("llmorch_actions_applied_total", "kind=\"" + escape_label_value(kind) + "\"", n);
  e.family("llmorch_libvirt_up", "gauge", "1 when libvirt answered during the last tick.");
  e.sample("llmorch_libvirt_up", "", std::uint64_t{s.libvirt_up ? 1u : 0u});
  e.family("llmorch_libvirt_reconnects_total", "counter", "Times the libvirt connection came back after it was lost.");
  e.sample("llmorch_libvirt_reconnects_total", "", c.reconnects);
  e.family("llmorch_build_info", "gauge", "Always 1; the version label says which llmorchd this is.");
  e.sample("llmorch_build_info", "version=\"" + escape_label_value(version) + "\"", std::uint64_t{1});
  return out;
}

ListenAddress parse_listen_address(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("'" + text + "' is not ADDR:PORT (" + why +
                                 "); use e.g. 127.0.0.1:9477, [::1]:9477 or 0.0.0.0:9477");
  };
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad("no address and port separated by ':'");
  ListenAddress a;
  a.host = text.substr(0, colon);
  if (a.host.front() == '[') {
    if (a.host.size() < 3 || a.host.back() != ']') throw bad("an IPv6 address in brackets lacks its ']'");
    a.host = a.host.substr(1, a.host.size() - 2);
  } else if (a.host.find(':') != std::string::npos) {
    throw bad("an IPv6 address must be in brackets");
  }
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw bad("the port must be a number");
  a.port = std::stoi(port);
  if (a.port < 1 || a.port > 65535) throw bad("the port must be 1 to 65535");
  return a;
}

}  // namespace llmorch::orch
