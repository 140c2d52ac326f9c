#include "top_view.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "cli_common.h"

namespace llmorch::cli {

namespace {

// CPU % of one VM: the difference of its cumulative CPU time over the difference of the files' ticks.
std::optional<double> cpu_pct(const orch::StatusFileVm& v, const orch::StatusFile& now,
                              const orch::StatusFile* before) {
  if (!before || !v.cpu_time_s) return std::nullopt;
  const orch::StatusFileVm* old = before->vm(v.name);
  if (!old || !old->cpu_time_s) return std::nullopt;
  const auto t1 = parse_iso8601(now.last_tick_at), t0 = parse_iso8601(before->last_tick_at);
  if (!t1 || !t0 || *t1 <= *t0) return std::nullopt;
  const double used = *v.cpu_time_s - *old->cpu_time_s;
  if (used < 0) return std::nullopt;  // the VM restarted between the two files
  return 100.0 * used / (*t1 - *t0);
}

std::string flags_of(const orch::StatusFileVm& v, const orch::StatusFile& f) {
  std::vector<std::string> flags;
  auto add = [&](const std::string& flag) {
    if (std::find(flags.begin(), flags.end(), flag) == flags.end()) flags.push_back(flag);
  };
  if (v.hostile) add("hostile");
  if (v.flapping) add("flapping");
  for (const auto& p : f.problems)
    if (p.vm == v.name) add(p.kind);
  if (v.report && !v.report_fresh) add("stale");
  if (!v.agent.connected) add("no-agent");
  if (!v.balloon.left_alone && v.balloon.target_mib && v.balloon.actual_mib &&
      *v.balloon.target_mib != *v.balloon.actual_mib)
    add("ballooning");
  if (flags.empty()) return "-";
  std::string out;
  for (const std::string& s : flags) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::string cut(std::string line, std::size_t width) {
  if (line.size() > width) line.resize(width);
  return line;
}

std::string pad(const std::string& s, std::size_t n, bool right = false) {
  if (s.size() >= n) return s;
  return right ? std::string(n - s.size(), ' ') + s : s + std::string(n - s.size(), ' ');
}

}  // namespace

std::vector<TopRow> top_rows(const TopInput& in) {
  std::vector<TopRow> rows;
  if (!in.status) return rows;
  for (const orch::StatusFileVm& v : in.status->vms) {
    rows.push_back({.name = v.name,
                    .priority = v.effective_priority,
                    .source = v.priority_source,
                    .weight = v.weight,
                    .shares = v.cpu_shares,
                    .cpu_pct = cpu_pct(v, *in.status, in.previous),
                    .vcpus_online = v.vcpus_online,
                    .balloon_mib = v.balloon.actual_mib,
                    .floor_mib = v.balloon.floor_mib,
                    .report_age_s = v.report_age_s,
                    .flags = flags_of(v, *in.status)});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const TopRow& a, const TopRow& b) {
    return a.weight != b.weight ? a.weight > b.weight : a.name < b.name;
  });
  return rows;
}

std::vector<std::string> render_top(const TopInput& in, std::size_t width) {
  width = std::max<std::size_t>(width, 20);
  std::vector<std::string> lines;
  const orch::StatusFile* s = in.status;
  std::string head = "llmorch top " + in.clock + "  ";
  if (!in.why_not.empty()) {
    head += "llmorchd: not running: " + in.why_not;
  } else if (s) {
    head += "llmorchd pid " + std::to_string(s->pid) + ", " + s->health + ", alpha " + fixed(s->alpha, 2) + ", tick " +
            std::to_string(s->interval_ms) + " ms, last " +
            (in.age_s >= 0 ? fixed(in.age_s, 1) + " s ago" : std::string("?")) + (s->dry_run ? ", DRY RUN" : "");
  }
  lines.push_back(cut(head, width));
  const std::vector<TopRow> rows = top_rows(in);
  int flagged = 0;
  double cpu_total = 0;
  bool cpu_known = false;
  for (const TopRow& r : rows) {
    flagged += r.flags != "-" ? 1 : 0;
    if (r.cpu_pct) cpu_total += *r.cpu_pct, cpu_known = true;
  }
  std::string summary = std::to_string(rows.size()) + " VM" + (rows.size() == 1 ? "" : "s") + ", " +
                        std::to_string(flagged) + " flagged, CPU " + (cpu_known ? fixed(cpu_total, 0) + "%" : "-");
  if (s && !s->connected) summary += ", libvirt disconnected";
  if (s && s->report_to_apply_ms.n > 0 && s->report_to_apply_ms.p99)
    summary += ", report->apply p99 " + fixed(*s->report_to_apply_ms.p99, 1) + " ms";
  if (in.live) summary += "   (q quits)";
  lines.push_back(cut(summary, width));
  lines.emplace_back();

  std::size_t name_w = 4;
  for (const TopRow& r : rows) name_w = std::max(name_w, r.name.size());
  name_w = std::min<std::size_t>(name_w, 24);
  auto line = [&](const std::string& name, const std::vector<std::string>& cells, const std::string& flags) {
    // PRIO SRC WEIGHT SHARES CPU% VCPU BALLOON/FLOOR AGE
    static constexpr std::size_t kWidths[] = {5, 8, 7, 6, 6, 4, 11, 6};
    std::string out = pad(name.size() > name_w ? name.substr(0, name_w) : name, name_w);
    for (std::size_t i = 0; i < cells.size(); ++i) out += " " + pad(cells[i], kWidths[i], i != 1);
    return cut(out + " " + flags, width);
  };
  lines.push_back(line("NAME", {"PRIO", "SRC", "WEIGHT", "SHARES", "CPU%", "VCPU", "BAL/FLOOR", "AGE"}, "FLAGS"));
  for (const TopRow& r : rows) {
    lines.push_back(
        line(r.name,
             {fixed(r.priority, 1), r.source, fixed(r.weight, 3), std::to_string(r.shares),
              r.cpu_pct ? fixed(*r.cpu_pct, 1) : "-", r.vcpus_online ? std::to_string(*r.vcpus_online) : "-",
              (r.balloon_mib ? std::to_string(*r.balloon_mib) : "-") + "/" + std::to_string(r.floor_mib),
              r.report_age_s ? fixed(*r.report_age_s, 1) + "s" : "-"},
             r.flags));
  }
  if (rows.empty())
    lines.push_back(s ? "(no VM in llmorchd's plan)" : "(no status: start llmorchd, or pass its --state-dir)");
  return lines;
}

}  // namespace llmorch::cli
