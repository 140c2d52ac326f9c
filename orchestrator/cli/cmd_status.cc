// llmorch status: every VM llmorch manages, with libvirt's live values and what llmorchd last decided.
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;
using nlohmann::ordered_json;

constexpr const char* kHelp = R"(usage: llmorch status [NAME] [--json] [-c URI] [--config FILE] [--state-dir DIR]

Shows every VM llmorch manages (or only NAME): libvirt's live values plus what the in-guest agent
reported and what llmorchd decided, from llmorchd's status file DIR/status.json (default /run/llmorch).

Per VM: state; NUMA nodes; host CPUs it holds (dedicated) or floats over (shared); vCPUs present/max;
cpu_shares (live); memory actual (balloon now) / max / floor in MiB; priority: template, reported by the
agent, effective (what the weights use); load (agent's cpu_pct, runnable tasks, CPUs online, LLM
requests running/waiting); age of the agent's last report; weight among the running VMs; hostile
(the agent sent garbage or flooded and is ignored).

When llmorchd is not running (no status file, its process is gone, or the file is stale), the weights
are computed here from the template priorities with the daemon's own plan (make_plan), and the
output says so; reported priority, load and report age are then unknown.

  --json             one JSON object:
                     {"vms": [{"name", "state", "active", "policy", "nodes", "cpus", "cpu_shares",
                       "priority", "weight", "weight_source" ("daemon"|"computed"|null), "vcpus",
                       "max_vcpus", "memory_actual_mib", "memory_max_mib", "memory_floor_mib",
                       "priority_template", "priority_reported", "priority_source", "load",
                       "report_age_s", "hostile", "problems", "reason"}],
                      "daemon": {"running": bool, "why_not": str|null, "pid", "last_tick_age_s",
                       "alpha", "dry_run", "health"}}
                     problems: what llmorchd works around for that VM, [{"kind", "detail", "since"}]
                     (kinds: unresponsive, flapping, bad_metadata, plan_error, ...); health: "ok",
                     "degraded" (some VM has a problem) or "disconnected" (libvirt unreachable).
                     Unknown values are null; a VM that is not running has weight null.
  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE      host config; its alpha is used when the daemon is not running
  --state-dir DIR    llmorchd's state directory (default /run/llmorch)

Exit status: 0 shown; 1 libvirt failed, or no VM named NAME is managed by llmorch; 2 bad arguments.
)";

template <typename T>
ordered_json opt(const std::optional<T>& v) {
  return v ? ordered_json(*v) : ordered_json(nullptr);
}

ordered_json load_of(const orch::StatusFileVm* dv) {
  if (!dv || !dv->report) return nullptr;
  const protocol::Report& r = *dv->report;
  ordered_json load;
  load["cpu_pct"] = r.cpu_pct;
  load["runnable"] = r.runnable;
  load["ncpu_online"] = r.ncpu_online;
  load["psi_cpu_some10"] = opt(r.psi_cpu_some10);
  load["mem_avail_kib"] = r.mem_avail_kib;
  load["llm_running"] = opt(r.llm_running);
  load["llm_waiting"] = opt(r.llm_waiting);
  load["demand_cpus"] = dv->demand_cpus;
  return load;
}

ordered_json vm_json(const orch::ManagedDomain& d, const DaemonView& daemon, const orch::Plan& offline) {
  const auto& p = d.facts.placement;
  const orch::StatusFileVm* dv = daemon.running ? daemon.vm(d.name) : nullptr;
  const orch::VmPlan* computed = find_vm(offline, d.name);
  ordered_json j;
  j["name"] = d.name;
  j["state"] = std::string(orch::to_string(d.state));
  j["active"] = d.active();
  j["policy"] = policy::to_string(p.cpu_policy);
  j["nodes"] = p.nodes;
  j["cpus"] = p.cpus;
  j["cpu_shares"] = opt(d.cpu_shares);
  j["priority"] = dv ? dv->effective_priority : d.facts.priority;
  if (dv) {
    j["weight"] = dv->weight;
    j["weight_source"] = "daemon";
  } else if (computed) {
    j["weight"] = computed->weight;
    j["weight_source"] = "computed";
  } else {
    j["weight"] = nullptr;
    j["weight_source"] = nullptr;
  }
  j["vcpus"] = d.vcpus_current;
  j["max_vcpus"] = d.vcpus_max;
  j["memory_actual_mib"] = d.memory_actual_kib / 1024;
  j["memory_max_mib"] = d.memory_max_kib / 1024;
  j["memory_floor_mib"] = d.facts.memory_floor_mib;
  j["priority_template"] = d.facts.priority;
  j["priority_reported"] = dv ? opt(dv->reported_priority) : ordered_json(nullptr);
  j["priority_source"] = dv ? dv->priority_source : "template";
  j["load"] = load_of(dv);
  j["report_age_s"] = dv ? opt(dv->report_age_s) : ordered_json(nullptr);
  j["hostile"] = dv && dv->hostile;
  j["problems"] = ordered_json::array();
  if (daemon.running)
    for (const auto& problem : daemon.status->problems)
      if (problem.vm == d.name)
        j["problems"].push_back({{"kind", problem.kind}, {"detail", problem.detail}, {"since", problem.since}});
  j["reason"] = dv ? ordered_json(dv->reason) : ordered_json(nullptr);
  j["balloon"] = dv ? ordered_json(orch::to_json(dv->balloon)) : ordered_json(nullptr);  // llmorchd's view, or null
  return j;
}

ordered_json daemon_json(const DaemonView& daemon) {
  ordered_json j;
  j["running"] = daemon.running;
  j["why_not"] = daemon.running ? ordered_json(nullptr) : ordered_json(daemon.why_not);
  const orch::StatusFile* s = daemon.status ? &*daemon.status : nullptr;
  j["pid"] = s ? ordered_json(s->pid) : ordered_json(nullptr);
  j["last_tick_age_s"] = daemon.age_s >= 0 ? ordered_json(daemon.age_s) : ordered_json(nullptr);
  j["alpha"] = s ? ordered_json(s->alpha) : ordered_json(nullptr);
  j["dry_run"] = s ? ordered_json(s->dry_run) : ordered_json(nullptr);
  j["health"] = daemon.running ? ordered_json(s->health) : ordered_json(nullptr);
  return j;
}

std::string text_of(const ordered_json& v, int decimals = -1) {
  if (v.is_null()) return "-";
  if (v.is_number_float() && decimals >= 0) return fixed(v.get<double>(), decimals);
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// What llmorchd works around, one line per VM problem.
void print_problems(std::ostream& out, const ordered_json& doc) {
  bool header = false;
  for (const auto& v : doc["vms"]) {
    for (const auto& p : v["problems"]) {
      if (!header) out << "\nProblems (llmorchd works around them; every other VM is managed as usual):\n";
      header = true;
      out << "  " << v["name"].get<std::string>() << ": " << p.value("kind", "") << " since " << p.value("since", "")
          << ": " << p.value("detail", "") << "\n";
    }
  }
}

// One line per VM the daemon balloons: actual, target, floor and max, and why it last changed.
void print_balloons(std::ostream& out, const ordered_json& doc) {
  bool header = false;
  for (const auto& v : doc["vms"]) {
    const auto& b = v["balloon"];
    if (!b.is_object()) continue;
    if (!header) out << "\nBalloon (MiB actual/target/floor/max):\n";
    header = true;
    out << "  " << v["name"].get<std::string>() << ": " << text_of(b["actual_mib"]) << "/" << text_of(b["target_mib"])
        << "/" << text_of(b["floor_mib"]) << "/" << text_of(b["max_mib"]);
    if (b.value("left_alone", false)) out << ", " << text_of(b["reason"]);
    if (b["last_change_at"].is_null()) {
      out << ", never changed\n";
    } else {
      out << ", last changed " << text_of(b["last_change_at"]) << ": " << text_of(b["last_change_reason"]) << "\n";
    }
  }
}

void print_text(std::ostream& out, const ordered_json& doc) {
  const auto& daemon = doc["daemon"];
  if (daemon["running"].get<bool>()) {
    out << "llmorchd: running (pid " << text_of(daemon["pid"]) << ", last tick "
        << text_of(daemon["last_tick_age_s"], 1) << " s ago, alpha " << text_of(daemon["alpha"]) << ", health "
        << text_of(daemon["health"]) << ")\n\n";
  } else {
    out << "llmorchd: not running: " << daemon["why_not"].get<std::string>()
        << ".\nWeights below are computed here from template priorities; no agent reports are known.\n\n";
  }
  Table t;
  t.row({"NAME", "STATE", "NODES", "CPUS", "VCPUS", "SHARES", "MEMORY MiB act/max/floor", "PRIO tmpl/rep/eff",
         "LOAD cpu%/run", "REPORT AGE", "WEIGHT"});
  for (const auto& v : doc["vms"]) {
    std::vector<int> nodes = v["nodes"], cpus = v["cpus"];
    std::string load = "-";
    if (v["load"].is_object()) load = text_of(v["load"]["cpu_pct"], 0) + "/" + text_of(v["load"]["runnable"]);
    std::string weight = text_of(v["weight"], 4);
    if (v["weight_source"] == "computed") weight += " (computed)";
    if (v["hostile"].get<bool>()) weight += " HOSTILE";
    for (const auto& p : v["problems"]) weight += " " + upper(p.value("kind", ""));
    t.row({v["name"], v["state"], cpu_list(nodes), cpu_list(cpus) + (v["policy"] == "shared" ? " (shared)" : ""),
           text_of(v["vcpus"]) + "/" + text_of(v["max_vcpus"]), text_of(v["cpu_shares"]),
           text_of(v["memory_actual_mib"]) + "/" + text_of(v["memory_max_mib"]) + "/" + text_of(v["memory_floor_mib"]),
           text_of(v["priority_template"]) + "/" + text_of(v["priority_reported"]) + "/" + text_of(v["priority"]), load,
           v["report_age_s"].is_null() ? "-" : text_of(v["report_age_s"], 1) + " s", weight});
  }
  t.print(out);
  if (doc["vms"].empty()) out << "(no VM managed by llmorch)\n";
  print_problems(out, doc);
  print_balloons(out, doc);
}

}  // namespace

int cmd_status(const std::vector<std::string>& args, Io io) {
  return guarded("status", io, [&] {
    bool json = false;
    po::options_description extra;
    extra.add_options()("json", po::bool_switch(&json), "JSON output");
    const auto [common, name] = parse_vm_args(args, extra);
    if (common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    const orch::HostConfig config = load_host_config(common);
    const auto hypervisor = connect(common, io);
    auto domains = hypervisor->list_managed();
    std::erase_if(domains, [](const orch::ManagedDomain& d) { return d.metadata_error.has_value(); });  // see list
    if (!name.empty() && std::none_of(domains.begin(), domains.end(), [&](const auto& d) { return d.name == name; })) {
      io.err << "llmorch status: no VM named '" << name << "' is managed by llmorch; 'llmorch list' shows them\n";
      return kExitFailure;
    }
    const DaemonView daemon = read_daemon_view(common.state_dir, now_unix_seconds());
    const orch::Plan offline = offline_plan(*hypervisor, domains, config);
    ordered_json doc;
    doc["vms"] = ordered_json::array();
    for (const auto& d : domains)
      if (name.empty() || d.name == name) doc["vms"].push_back(vm_json(d, daemon, offline));
    doc["daemon"] = daemon_json(daemon);
    if (json) {
      io.out << doc.dump() << "\n";
    } else {
      print_text(io.out, doc);
    }
    return kExitOk;
  });
}

}  // namespace llmorch::cli
