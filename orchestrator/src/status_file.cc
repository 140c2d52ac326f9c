#include "llmorch/orch/status_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace llmorch::orch {

namespace fs = std::filesystem;

std::string iso8601(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::time_point_cast<std::chrono::milliseconds>(t);
  const std::time_t secs = std::chrono::system_clock::to_time_t(ms);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", tm, ms.time_since_epoch().count() % 1000);
}

namespace {

template <typename T>
nlohmann::json opt(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

nlohmann::json balloon_to_json(const VmMemoryPlan* m, const LastChange* change) {
  nlohmann::json j;
  j["actual_mib"] = m ? opt(m->actual_mib) : nlohmann::json(nullptr);
  j["target_mib"] = m ? opt(m->target_mib) : nlohmann::json(nullptr);
  j["floor_mib"] = m ? m->floor_mib : 0;
  j["max_mib"] = m ? m->max_mib : 0;
  j["left_alone"] = m ? m->left_alone : true;
  j["reason"] = m ? m->reason : "not planned";
  j["last_change_at"] = change ? nlohmann::json(iso8601(change->at)) : nlohmann::json(nullptr);
  j["last_change_reason"] = change ? nlohmann::json(change->what) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json vm_to_json(const VmPlan& p, const AgentState& a, const LastChange* change) {
  nlohmann::json j;
  j["name"] = p.name;
  j["effective_priority"] = p.priority;
  j["priority_source"] = std::string(to_string(p.source));
  j["template_priority"] = p.template_priority;
  j["reported_priority"] = opt(p.reported_priority);
  j["report"] = a.last_report ? report_to_json(*a.last_report) : nlohmann::json(nullptr);
  j["report_age_s"] = a.last_report ? nlohmann::json(a.last_report_age_s) : nlohmann::json(nullptr);
  j["report_fresh"] = a.fresh;
  j["agent"] = {{"connected", a.connected},       {"ok", a.counters.frames_ok},
                {"malformed", a.counters.malformed}, {"oversized", a.counters.oversized},
                {"rate_limited", a.counters.rate_limited}, {"unknown_keys", a.counters.unknown_keys},
                {"clamped", a.counters.clamped},   {"hostile", a.hostile},
                {"last_error", a.last_error}};
  j["hostile"] = a.hostile;
  j["flapping"] = p.flapping;
  j["demand_cpus"] = p.demand_cpus;
  j["weight"] = p.weight;
  j["cpu_shares"] = p.cpu_shares;
  j["cpus"] = p.cpus;
  j["vcpus_online"] = opt(p.vcpus_online);
  j["reason"] = p.reason;
  j["last_change_at"] = change ? nlohmann::json(iso8601(change->at)) : nlohmann::json(nullptr);
  j["last_change"] = change ? nlohmann::json(change->what) : nlohmann::json(nullptr);
  return j;
}

}  // namespace

nlohmann::json report_to_json(const protocol::Report& r) {
  return {{"seq", r.seq},
          {"prio", opt(r.priority)},
          {"cpu_pct", r.cpu_pct},
          {"psi_cpu_some10", opt(r.psi_cpu_some10)},
          {"runnable", r.runnable},
          {"ncpu_online", r.ncpu_online},
          {"mem_total_kib", r.mem_total_kib},
          {"mem_avail_kib", r.mem_avail_kib},
          {"psi_mem_some10", opt(r.psi_mem_some10)},
          {"floor_mib", r.floor_mib},
          {"llm_running", opt(r.llm_running)},
          {"llm_waiting", opt(r.llm_waiting)},
          {"interval_ms", r.interval_ms}};
}

std::string health(const DaemonStatus& s) {
  if (!s.connected) return "disconnected";
  for (const auto& [vm, problems] : s.problems)
    if (!problems.empty()) return "degraded";
  return "ok";
}

nlohmann::json status_to_json(const DaemonStatus& s) {
  nlohmann::json j;
  j["version"] = kStatusVersion;
  j["pid"] = s.pid;
  j["started_at"] = iso8601(s.started_at);
  j["last_tick_at"] = iso8601(s.last_tick_at);
  j["alpha"] = s.alpha;
  j["interval_ms"] = s.interval_ms;
  j["dry_run"] = s.dry_run;
  j["connected"] = s.connected;
  j["health"] = health(s);
  j["problems"] = nlohmann::json::array();
  for (const auto& [vm, problems] : s.problems)  // std::map: sorted by VM
    for (const VmProblem& p : problems)
      j["problems"].push_back({{"vm", vm}, {"kind", p.kind}, {"detail", p.detail}, {"since", iso8601(p.since)}});
  const LatencySummary& l = s.report_to_apply_ms;
  j["daemon"]["report_to_apply_ms"] = {{"n", l.n}, {"p50", opt(l.p50)}, {"p99", opt(l.p99)}, {"max", opt(l.max)}};
  std::vector<const VmPlan*> vms;
  for (const VmPlan& p : s.plan.vms) vms.push_back(&p);
  std::sort(vms.begin(), vms.end(), [](const VmPlan* a, const VmPlan* b) { return a->name < b->name; });
  j["vms"] = nlohmann::json::array();
  for (const VmPlan* p : vms) {
    auto a = s.agents.find(p->name);
    auto c = s.last_change.find(p->name);
    j["vms"].push_back(vm_to_json(*p, a == s.agents.end() ? AgentState{} : a->second,
                                  c == s.last_change.end() ? nullptr : &c->second));
    auto b = s.balloon_change.find(p->name);
    j["vms"].back()["balloon"] =
        balloon_to_json(s.plan.memory.find(p->name), b == s.balloon_change.end() ? nullptr : &b->second);
  }
  return j;
}

void write_status_file(const std::string& dir, const DaemonStatus& status) {
  std::error_code ec;
  if (!fs::exists(dir)) {
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot create the state directory " + dir + ": " + ec.message());
    ::chmod(dir.c_str(), 0755);
  }
  const std::string path = dir + "/status.json";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << status_to_json(status).dump(2) << '\n';
    if (!out) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  }
  ::chmod(tmp.c_str(), 0644);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot replace " + path + ": " + std::strerror(errno));
}

nlohmann::json read_status_file(const std::string& dir) {
  const std::string path = dir + "/status.json";
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path +
                             ": is llmorchd running? (start it, or pass the --state-dir it uses)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + " is not valid JSON (" + e.what() + ")");
  }
}

}  // namespace llmorch::orch
