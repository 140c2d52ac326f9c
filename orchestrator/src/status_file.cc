#include "llmorch/orch/status_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
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
    throw std::runtime_error(os_error("cannot open the state directory " + dir +
                                      " (it must be a directory; pick another --state-dir otherwise)", errno));
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
  const std::string text = status_to_json(status).dump(2) + "\n";
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
