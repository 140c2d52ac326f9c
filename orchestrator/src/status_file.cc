#include "llmorch/orch/status_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

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

StatusFileVm::Balloon balloon_of(const VmMemoryPlan* m, const LastChange* change) {
  StatusFileVm::Balloon b;
  if (m) {
    b.actual_mib = m->actual_mib;
    b.target_mib = m->target_mib;
    b.floor_mib = m->floor_mib;
    b.max_mib = m->max_mib;
    b.left_alone = m->left_alone;
    b.reason = m->reason;
  } else {
    b.reason = "not planned";
  }
  if (change) {
    b.last_change_at = iso8601(change->at);
    b.last_change_reason = change->what;
  }
  return b;
}

StatusFileVm vm_of(const VmPlan& p, const AgentState& a, const LastChange* change) {
  StatusFileVm v;
  v.name = p.name;
  v.effective_priority = p.priority;
  v.priority_source = std::string(to_string(p.source));
  v.template_priority = p.template_priority;
  v.reported_priority = p.reported_priority;
  v.report = a.last_report;
  if (a.last_report) v.report_age_s = a.last_report_age_s;
  v.report_fresh = a.fresh;
  v.agent = {.connected = a.connected,
             .ok = a.counters.frames_ok,
             .malformed = a.counters.malformed,
             .oversized = a.counters.oversized,
             .rate_limited = a.counters.rate_limited,
             .unknown_keys = a.counters.unknown_keys,
             .clamped = a.counters.clamped,
             .hostile = a.hostile,
             .last_error = a.last_error};
  v.hostile = a.hostile;
  v.flapping = p.flapping;
  v.demand_cpus = p.demand_cpus;
  v.weight = p.weight;
  v.cpu_shares = p.cpu_shares;
  v.cpus = p.cpus;
  v.vcpus_online = p.vcpus_online;
  v.reason = p.reason;
  if (change) {
    v.last_change_at = iso8601(change->at);
    v.last_change = change->what;
  }
  return v;
}

}  // namespace

nlohmann::json to_json(const StatusFileVm::Balloon& b) {
  nlohmann::json j;
  j["actual_mib"] = opt(b.actual_mib);
  j["target_mib"] = opt(b.target_mib);
  j["floor_mib"] = b.floor_mib;
  j["max_mib"] = b.max_mib;
  j["left_alone"] = b.left_alone;
  j["reason"] = b.reason;
  j["last_change_at"] = opt(b.last_change_at);
  j["last_change_reason"] = opt(b.last_change_reason);
  return j;
}

namespace {

nlohmann::json vm_to_json(const StatusFileVm& v) {
  nlohmann::json j;
  j["name"] = v.name;
  j["effective_priority"] = v.effective_priority;
  j["priority_source"] = v.priority_source;
  j["template_priority"] = v.template_priority;
  j["reported_priority"] = opt(v.reported_priority);
  j["report"] = v.report ? report_to_json(*v.report) : nlohmann::json(nullptr);
  j["report_age_s"] = opt(v.report_age_s);
  j["report_fresh"] = v.report_fresh;
  const StatusFileVm::Agent& a = v.agent;
  j["agent"] = {{"connected", a.connected},       {"ok", a.ok},
                {"malformed", a.malformed},       {"oversized", a.oversized},
                {"rate_limited", a.rate_limited}, {"unknown_keys", a.unknown_keys},
                {"clamped", a.clamped},           {"hostile", a.hostile},
                {"last_error", a.last_error}};
  j["hostile"] = v.hostile;
  j["flapping"] = v.flapping;
  j["demand_cpus"] = v.demand_cpus;
  j["weight"] = v.weight;
  j["cpu_shares"] = v.cpu_shares;
  j["cpu_time_s"] = opt(v.cpu_time_s);
  j["cpus"] = v.cpus;
  j["vcpus_online"] = opt(v.vcpus_online);
  j["reason"] = v.reason;
  j["last_change_at"] = opt(v.last_change_at);
  j["last_change"] = opt(v.last_change);
  j["balloon"] = to_json(v.balloon);
  return j;
}

// Reads one object of status.json, naming fields by their path ("vms[1].balloon.max_mib") in errors.
class Reader {
 public:
  Reader(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail("", "is not a JSON object");
  }

  template <typename T>
  T get(const char* key) const {
    const nlohmann::json& v = field(key);
    if (!fits<T>(v)) fail(key, "is not " + kind<T>());
    return v.get<T>();
  }
  template <typename T>
  std::optional<T> maybe(const char* key) const {
    const nlohmann::json& v = field(key);
    if (v.is_null()) return std::nullopt;
    if (!fits<T>(v)) fail(key, "is neither null nor " + kind<T>());
    return v.get<T>();
  }
  Reader object(const char* key) const { return Reader(field(key), where(key)); }
  bool is_null(const char* key) const { return field(key).is_null(); }
  bool has(const char* key) const { return j_.contains(key); }
  const nlohmann::json& array(const char* key) const {
    const nlohmann::json& v = field(key);
    if (!v.is_array()) fail(key, "is not an array");
    return v;
  }
  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    const std::string name = key.empty() ? (path_.empty() ? "the file" : path_) : where(key);
    throw StatusFileError("status.json: " + name + " " + what +
                          "; was it written by another llmorchd version? Run the llmorch that matches llmorchd, "
                          "or restart llmorchd to rewrite the file");
  }

 private:
  const nlohmann::json& field(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) fail(key, "is missing");
    return *it;
  }
  template <typename T>
  static bool fits(const nlohmann::json& v) {
    if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
    else if constexpr (std::is_same_v<T, std::string>) return v.is_string();
    else if constexpr (std::is_floating_point_v<T>) return v.is_number();
    else if constexpr (std::is_unsigned_v<T>) return v.is_number_unsigned();
    else if constexpr (std::is_integral_v<T>) return v.is_number_integer();
    else if constexpr (std::is_same_v<T, std::vector<policy::CpuId>>)
      return v.is_array() && std::all_of(v.begin(), v.end(), [](const auto& e) { return e.is_number_integer(); });
    else static_assert(sizeof(T) == 0, "a type status.json does not hold");
  }
  template <typename T>
  static std::string kind() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_same_v<T, std::string>) return "a string";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else if constexpr (std::is_unsigned_v<T>) return "a whole number >= 0";
    else if constexpr (std::is_integral_v<T>) return "a whole number";
    else return "an array of CPU numbers";
  }

  const nlohmann::json& j_;
  std::string path_;
};

protocol::Report report_from(const Reader& r) {
  protocol::Report out;
  out.seq = r.get<std::uint64_t>("seq");
  out.priority = r.maybe<double>("prio");
  out.cpu_pct = r.get<double>("cpu_pct");
  out.psi_cpu_some10 = r.maybe<double>("psi_cpu_some10");
  out.runnable = r.get<std::uint64_t>("runnable");
  out.ncpu_online = r.get<std::uint64_t>("ncpu_online");
  out.mem_total_kib = r.get<std::uint64_t>("mem_total_kib");
  out.mem_avail_kib = r.get<std::uint64_t>("mem_avail_kib");
  out.psi_mem_some10 = r.maybe<double>("psi_mem_some10");
  out.floor_mib = r.get<std::uint64_t>("floor_mib");
  out.llm_running = r.maybe<std::uint64_t>("llm_running");
  out.llm_waiting = r.maybe<std::uint64_t>("llm_waiting");
  out.interval_ms = r.get<std::uint64_t>("interval_ms");
  return out;
}

StatusFileVm vm_from(const Reader& r) {
  StatusFileVm v;
  v.name = r.get<std::string>("name");
  v.effective_priority = r.get<double>("effective_priority");
  v.priority_source = r.get<std::string>("priority_source");
  v.template_priority = r.get<double>("template_priority");
  v.reported_priority = r.maybe<double>("reported_priority");
  if (!r.is_null("report")) v.report = report_from(r.object("report"));
  v.report_age_s = r.maybe<double>("report_age_s");
  v.report_fresh = r.get<bool>("report_fresh");
  const Reader a = r.object("agent");
  v.agent = {.connected = a.get<bool>("connected"),
             .ok = a.get<std::uint64_t>("ok"),
             .malformed = a.get<std::uint64_t>("malformed"),
             .oversized = a.get<std::uint64_t>("oversized"),
             .rate_limited = a.get<std::uint64_t>("rate_limited"),
             .unknown_keys = a.get<std::uint64_t>("unknown_keys"),
             .clamped = a.get<std::uint64_t>("clamped"),
             .hostile = a.get<bool>("hostile"),
             .last_error = a.get<std::string>("last_error")};
  v.hostile = r.get<bool>("hostile");
  v.flapping = r.get<bool>("flapping");
  v.demand_cpus = r.get<double>("demand_cpus");
  v.weight = r.get<double>("weight");
  v.cpu_shares = r.get<int>("cpu_shares");
  if (r.has("cpu_time_s")) v.cpu_time_s = r.maybe<double>("cpu_time_s");  // added later in version 1
  v.cpus = r.get<std::vector<policy::CpuId>>("cpus");
  v.vcpus_online = r.maybe<int>("vcpus_online");
  v.reason = r.get<std::string>("reason");
  v.last_change_at = r.maybe<std::string>("last_change_at");
  v.last_change = r.maybe<std::string>("last_change");
  const Reader b = r.object("balloon");
  v.balloon.actual_mib = b.maybe<std::uint64_t>("actual_mib");
  v.balloon.target_mib = b.maybe<std::uint64_t>("target_mib");
  v.balloon.floor_mib = b.get<std::uint64_t>("floor_mib");
  v.balloon.max_mib = b.get<std::uint64_t>("max_mib");
  v.balloon.left_alone = b.get<bool>("left_alone");
  v.balloon.reason = b.get<std::string>("reason");
  v.balloon.last_change_at = b.maybe<std::string>("last_change_at");
  v.balloon.last_change_reason = b.maybe<std::string>("last_change_reason");
  return v;
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

StatusFile status_file_of(const DaemonStatus& s) {
  StatusFile f;
  f.pid = s.pid;
  f.started_at = iso8601(s.started_at);
  f.last_tick_at = iso8601(s.last_tick_at);
  f.alpha = s.alpha;
  f.interval_ms = s.interval_ms;
  f.dry_run = s.dry_run;
  f.connected = s.connected;
  f.health = health(s);
  for (const auto& [vm, problems] : s.problems)  // std::map: sorted by VM
    for (const VmProblem& p : problems) f.problems.push_back({vm, p.kind, p.detail, iso8601(p.since)});
  f.report_to_apply_ms = s.report_to_apply_ms;
  std::vector<const VmPlan*> vms;
  for (const VmPlan& p : s.plan.vms) vms.push_back(&p);
  std::sort(vms.begin(), vms.end(), [](const VmPlan* a, const VmPlan* b) { return a->name < b->name; });
  for (const VmPlan* p : vms) {
    auto a = s.agents.find(p->name);
    auto c = s.last_change.find(p->name);
    f.vms.push_back(
        vm_of(*p, a == s.agents.end() ? AgentState{} : a->second, c == s.last_change.end() ? nullptr : &c->second));
    if (auto t = s.cpu_time_s.find(p->name); t != s.cpu_time_s.end()) f.vms.back().cpu_time_s = t->second;
    auto b = s.balloon_change.find(p->name);
    f.vms.back().balloon = balloon_of(s.plan.memory.find(p->name), b == s.balloon_change.end() ? nullptr : &b->second);
  }
  return f;
}

nlohmann::json to_json(const StatusFile& f) {
  nlohmann::json j;
  j["version"] = f.version;
  j["pid"] = f.pid;
  j["started_at"] = f.started_at;
  j["last_tick_at"] = f.last_tick_at;
  j["alpha"] = f.alpha;
  j["interval_ms"] = f.interval_ms;
  j["dry_run"] = f.dry_run;
  j["connected"] = f.connected;
  j["health"] = f.health;
  j["problems"] = nlohmann::json::array();
  for (const StatusFileProblem& p : f.problems)
    j["problems"].push_back({{"vm", p.vm}, {"kind", p.kind}, {"detail", p.detail}, {"since", p.since}});
  const LatencySummary& l = f.report_to_apply_ms;
  j["daemon"]["report_to_apply_ms"] = {{"n", l.n}, {"p50", opt(l.p50)}, {"p99", opt(l.p99)}, {"max", opt(l.max)}};
  j["vms"] = nlohmann::json::array();
  for (const StatusFileVm& v : f.vms) j["vms"].push_back(vm_to_json(v));
  return j;
}

nlohmann::json status_to_json(const DaemonStatus& s) { return to_json(status_file_of(s)); }

namespace {

// Writes JSON text straight into a buffer, formatted byte for byte as nlohmann::json::dump(2) formats
// the DOM that to_json builds (keys in sorted order, two-space indent, numbers as nlohmann prints them):
// building that DOM for a 1,000-VM host cost more than the tick's planning. A round-trip unit test keeps
// the two equal. Containers nest by open()/close(); inside an object, key() precedes every value.
class JsonText {
 public:
  explicit JsonText(std::string& out) : out_(out) {}

  void open_object() { open('{'); }
  void close_object() { close('}'); }
  void open_array() { open('['); }
  void close_array() { close(']'); }
  // An object member's key; its value follows.
  JsonText& key(std::string_view k) {
    next();
    string_body(k);
    out_ += ": ";
    in_key_ = true;
    return *this;
  }

  void null() {
    element();
    out_ += "null";
  }
  void boolean(bool b) {
    element();
    out_ += b ? "true" : "false";
  }
  template <typename Int>
  requires std::is_integral_v<Int>
  void integer(Int v) {
    element();
    fmt::format_to(std::back_inserter(out_), "{}", v);
  }
  void number(double v) {
    element();
    if (!std::isfinite(v)) {  // as nlohmann does
      out_ += "null";
      return;
    }
    std::array<char, 64> buf{};
    char* end = nlohmann::detail::to_chars(buf.data(), buf.data() + buf.size(), v);
    out_.append(buf.data(), static_cast<std::size_t>(end - buf.data()));
  }
  void string(std::string_view s) {
    element();
    string_body(s);
  }
  template <typename T>
  void maybe(const std::optional<T>& v) {
    if (!v) null();
    else if constexpr (std::is_same_v<T, double>) number(*v);
    else if constexpr (std::is_same_v<T, std::string>) string(*v);
    else integer(*v);
  }

 private:
  void open(char c) {
    element();
    out_ += c;
    ++depth_;
    empty_ = true;
  }
  void close(char c) {
    --depth_;
    if (!empty_) newline();
    out_ += c;
    empty_ = false;
  }
  // Before a value: after a key it follows on the same line; in an array it starts a new element.
  void element() {
    if (in_key_) {
      in_key_ = false;
      return;
    }
    if (depth_ > 0) next();
  }
  void next() {
    if (!empty_) out_ += ',';
    newline();
    empty_ = false;
  }
  void newline() {
    out_ += '\n';
    out_.append(static_cast<std::size_t>(2 * depth_), ' ');
  }
  // Printable ASCII without quote or backslash is copied as is (names, tokens, times, most reasons);
  // anything else is escaped by nlohmann itself (invalid UTF-8 becomes U+FFFD), so both agree.
  void string_body(std::string_view s) {
    const bool plain = std::all_of(s.begin(), s.end(), [](char ch) {
      const auto u = static_cast<unsigned char>(ch);
      return u >= 0x20 && u < 0x80 && ch != '"' && ch != '\\';
    });
    if (plain) {
      out_ += '"';
      out_ += s;
      out_ += '"';
    } else {
      out_ += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }

  std::string& out_;
  int depth_ = 0;
  bool empty_ = true;  // the innermost open container has no member yet
  bool in_key_ = false;
};

void write_report(JsonText& j, const protocol::Report& r) {
  j.open_object();
  j.key("cpu_pct").number(r.cpu_pct);
  j.key("floor_mib").integer(r.floor_mib);
  j.key("interval_ms").integer(r.interval_ms);
  j.key("llm_running").maybe(r.llm_running);
  j.key("llm_waiting").maybe(r.llm_waiting);
  j.key("mem_avail_kib").integer(r.mem_avail_kib);
  j.key("mem_total_kib").integer(r.mem_total_kib);
  j.key("ncpu_online").integer(r.ncpu_online);
  j.key("prio").maybe(r.priority);
  j.key("psi_cpu_some10").maybe(r.psi_cpu_some10);
  j.key("psi_mem_some10").maybe(r.psi_mem_some10);
  j.key("runnable").integer(r.runnable);
  j.key("seq").integer(r.seq);
  j.close_object();
}

void write_vm(JsonText& j, const StatusFileVm& v) {
  j.open_object();
  const StatusFileVm::Agent& a = v.agent;
  j.key("agent").open_object();
  j.key("clamped").integer(a.clamped);
  j.key("connected").boolean(a.connected);
  j.key("hostile").boolean(a.hostile);
  j.key("last_error").string(a.last_error);
  j.key("malformed").integer(a.malformed);
  j.key("ok").integer(a.ok);
  j.key("oversized").integer(a.oversized);
  j.key("rate_limited").integer(a.rate_limited);
  j.key("unknown_keys").integer(a.unknown_keys);
  j.close_object();
  const StatusFileVm::Balloon& b = v.balloon;
  j.key("balloon").open_object();
  j.key("actual_mib").maybe(b.actual_mib);
  j.key("floor_mib").integer(b.floor_mib);
  j.key("last_change_at").maybe(b.last_change_at);
  j.key("last_change_reason").maybe(b.last_change_reason);
  j.key("left_alone").boolean(b.left_alone);
  j.key("max_mib").integer(b.max_mib);
  j.key("reason").string(b.reason);
  j.key("target_mib").maybe(b.target_mib);
  j.close_object();
  j.key("cpu_shares").integer(v.cpu_shares);
  j.key("cpu_time_s").maybe(v.cpu_time_s);
  j.key("cpus").open_array();
  for (const policy::CpuId c : v.cpus) j.integer(c);
  j.close_array();
  j.key("demand_cpus").number(v.demand_cpus);
  j.key("effective_priority").number(v.effective_priority);
  j.key("flapping").boolean(v.flapping);
  j.key("hostile").boolean(v.hostile);
  j.key("last_change").maybe(v.last_change);
  j.key("last_change_at").maybe(v.last_change_at);
  j.key("name").string(v.name);
  j.key("priority_source").string(v.priority_source);
  j.key("reason").string(v.reason);
  if (v.report) write_report(j.key("report"), *v.report);
  else j.key("report").null();
  j.key("report_age_s").maybe(v.report_age_s);
  j.key("report_fresh").boolean(v.report_fresh);
  j.key("reported_priority").maybe(v.reported_priority);
  j.key("template_priority").number(v.template_priority);
  j.key("vcpus_online").maybe(v.vcpus_online);
  j.key("weight").number(v.weight);
  j.close_object();
}

}  // namespace

std::string status_text(const StatusFile& f) {
  std::string out;
  status_text(f, out);
  return out;
}

void status_text(const StatusFile& f, std::string& out) {
  out.clear();
  out.reserve(1024 + 1700 * f.vms.size());  // a VM's entry is about 1.6 KB
  JsonText j(out);
  j.open_object();
  j.key("alpha").number(f.alpha);
  j.key("connected").boolean(f.connected);
  j.key("daemon").open_object();
  const LatencySummary& l = f.report_to_apply_ms;
  j.key("report_to_apply_ms").open_object();
  j.key("max").maybe(l.max);
  j.key("n").integer(l.n);
  j.key("p50").maybe(l.p50);
  j.key("p99").maybe(l.p99);
  j.close_object();
  j.close_object();
  j.key("dry_run").boolean(f.dry_run);
  j.key("health").string(f.health);
  j.key("interval_ms").integer(f.interval_ms);
  j.key("last_tick_at").string(f.last_tick_at);
  j.key("pid").integer(f.pid);
  j.key("problems").open_array();
  for (const StatusFileProblem& p : f.problems) {
    j.open_object();
    j.key("detail").string(p.detail);
    j.key("kind").string(p.kind);
    j.key("since").string(p.since);
    j.key("vm").string(p.vm);
    j.close_object();
  }
  j.close_array();
  j.key("started_at").string(f.started_at);
  j.key("version").integer(f.version);
  j.key("vms").open_array();
  for (const StatusFileVm& v : f.vms) write_vm(j, v);
  j.close_array();
  j.close_object();
  out += '\n';
}

StatusFile status_from_json(const nlohmann::json& j) {
  const Reader r(j, "");
  StatusFile f;
  f.version = r.get<int>("version");
  if (f.version != kStatusVersion)
    r.fail("version", "is " + std::to_string(f.version) + ", not " + std::to_string(kStatusVersion));
  f.pid = r.get<int>("pid");
  f.started_at = r.get<std::string>("started_at");
  f.last_tick_at = r.get<std::string>("last_tick_at");
  f.alpha = r.get<double>("alpha");
  f.interval_ms = r.get<int>("interval_ms");
  f.dry_run = r.get<bool>("dry_run");
  f.connected = r.get<bool>("connected");
  f.health = r.get<std::string>("health");
  const nlohmann::json& problems = r.array("problems");
  for (std::size_t i = 0; i < problems.size(); ++i) {
    const Reader p(problems[i], "problems[" + std::to_string(i) + "]");
    f.problems.push_back({p.get<std::string>("vm"), p.get<std::string>("kind"), p.get<std::string>("detail"),
                          p.get<std::string>("since")});
  }
  const Reader latency = r.object("daemon").object("report_to_apply_ms");
  f.report_to_apply_ms = {.n = latency.get<std::size_t>("n"),
                          .p50 = latency.maybe<double>("p50"),
                          .p99 = latency.maybe<double>("p99"),
                          .max = latency.maybe<double>("max")};
  const nlohmann::json& vms = r.array("vms");
  for (std::size_t i = 0; i < vms.size(); ++i)
    f.vms.push_back(vm_from(Reader(vms[i], "vms[" + std::to_string(i) + "]")));
  return f;
}

const StatusFileVm* StatusFile::vm(const std::string& name) const {
  for (const StatusFileVm& v : vms)
    if (v.name == name) return &v;
  return nullptr;
}

ProblemChanges set_problems(DaemonStatus& status, const std::string& kind,
                            const std::map<std::string, std::string>& current,
                            std::chrono::system_clock::time_point now) {
  ProblemChanges changes;
  for (auto it = status.problems.begin(); it != status.problems.end();) {
    auto& list = it->second;
    auto now_there = current.find(it->first);
    const auto gone = std::remove_if(list.begin(), list.end(), [&](const VmProblem& p) {
      return p.kind == kind && (now_there == current.end() || now_there->second != p.detail);
    });
    if (gone != list.end() && now_there == current.end()) changes.cleared.push_back(it->first);
    list.erase(gone, list.end());
    it = list.empty() ? status.problems.erase(it) : std::next(it);
  }
  for (const auto& [vm, detail] : current) {
    auto& list = status.problems[vm];
    const bool known = std::any_of(list.begin(), list.end(), [&](const VmProblem& p) { return p.kind == kind; });
    if (known) continue;
    list.push_back({kind, detail, now});
    changes.raised.emplace_back(vm, detail);
  }
  return changes;
}

namespace {

// Closes a descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  // Closes now; returns close()'s result (0, or -1 with errno set).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string os_error(const std::string& what, int err) { return what + ": " + std::strerror(err); }

std::string octal_mode(mode_t mode) { return fmt::format("{:04o}", mode & 07777); }

}  // namespace

int open_state_dir(const std::string& dir) {
  if (dir.empty()) throw std::runtime_error("the state directory is empty; pass an absolute --state-dir");
  if (::mkdir(dir.c_str(), 0755) == 0) {
    ::chmod(dir.c_str(), 0755);  // exactly 0755, whatever the umask took away
  } else if (errno == ENOENT) {
    std::error_code ec;
    fs::create_directories(fs::path(dir).parent_path(), ec);
    if (ec) throw std::runtime_error("cannot create the parents of the state directory " + dir + ": " + ec.message());
    if (::mkdir(dir.c_str(), 0755) == 0) {
      ::chmod(dir.c_str(), 0755);
    } else if (errno != EEXIST) {
      throw std::runtime_error(os_error("cannot create the state directory " + dir, errno));
    }
  } else if (errno != EEXIST) {
    throw std::runtime_error(os_error("cannot create the state directory " + dir, errno));
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error(os_error(
        "cannot open the state directory " + dir + " (it must be a directory; pick another --state-dir otherwise)",
        errno));
  }
  Fd guard(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw std::runtime_error(os_error("cannot stat the state directory " + dir, errno));
  if (st.st_uid != ::geteuid()) {
    throw std::runtime_error("the state directory " + dir + " is owned by uid " + std::to_string(st.st_uid) +
                             ", not by uid " + std::to_string(::geteuid()) + " that llmorch runs as; refusing it. " +
                             "Run 'chown " + std::to_string(::geteuid()) + " " + dir + "' or pick another --state-dir");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    throw std::runtime_error("the state directory " + dir + " is writable by group or others (mode " +
                             octal_mode(st.st_mode) + "); refusing it, since others could plant files there. " +
                             "Run 'chmod go-w " + dir + "' or pick another --state-dir");
  }
  return guard.release();
}

void write_status_file(const std::string& dir, const DaemonStatus& status) {
  write_status_text(dir, status_text(status_file_of(status)));
}

void write_status_text(const std::string& dir, const std::string& text) {
  Fd dir_fd(open_state_dir(dir));
  const std::string path = dir + "/status.json";
  std::string tmp = dir + "/.status.json.XXXXXX";
  Fd fd(::mkstemp(tmp.data()));  // O_CREAT | O_EXCL, mode 0600: never an existing file or a symlink
  if (fd.get() < 0) throw std::runtime_error(os_error("cannot create a temporary file in " + dir, errno));
  auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(os_error(what, err));
  };
  if (::fchmod(fd.get(), 0644) != 0) fail("cannot make " + tmp + " readable", errno);
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("cannot write " + tmp + " (status.json is left as it was)", n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("cannot flush " + tmp + " to disk (status.json is left as it was)", errno);
  if (fd.close() != 0) fail("cannot close " + tmp + " (status.json is left as it was)", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot replace " + path, errno);
}

bool StatusWriter::write(const std::string& dir, const DaemonStatus& status) {
  StatusFile f = status_file_of(status);
  const std::string tick = std::move(f.last_tick_at);
  f.last_tick_at.clear();
  status_text(f, next_);  // buffers kept from tick to tick: no fresh megabytes to allocate and fault in
  const bool fresh = last_at_ && status.last_tick_at - *last_at_ < kStatusRefresh;
  if (fresh && next_ == last_) return false;
  // The only top-level "last_tick_at" (strings hold no raw newline): put this tick's time in it.
  constexpr std::string_view kKey = "\n  \"last_tick_at\": \"";
  const std::size_t at = next_.find(kKey);
  if (at == std::string::npos) throw std::logic_error("status_text wrote no last_tick_at");
  const std::size_t split = at + kKey.size();
  out_.clear();
  out_.reserve(next_.size() + tick.size());
  out_.append(next_, 0, split).append(tick).append(next_, split);
  write_status_text(dir, out_);
  last_.swap(next_);
  last_at_ = status.last_tick_at;
  return true;
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
