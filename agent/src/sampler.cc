#include "sampler.h"

#include <algorithm>

#include "util.h"

namespace llmorch::agent {
namespace {

// "Key:   123 kB" -> 123
std::optional<std::uint64_t> meminfo_value(std::string_view line, std::string_view key) {
  if (line.substr(0, key.size()) != key || line.size() <= key.size() || line[key.size()] != ':') return std::nullopt;
  std::string_view rest = trim(line.substr(key.size() + 1));
  if (rest.size() > 3 && rest.substr(rest.size() - 3) == " kB") rest = trim(rest.substr(0, rest.size() - 3));
  return parse_u64(rest);
}

}  // namespace

std::optional<MemInfo> parse_meminfo(const std::string& text) {
  std::optional<std::uint64_t> total, avail;
  for (std::string_view line : split_lines(text)) {
    if (auto v = meminfo_value(line, "MemTotal")) total = v;
    if (auto v = meminfo_value(line, "MemAvailable")) avail = v;
  }
  if (!total || !avail) return std::nullopt;
  return MemInfo{*total, std::min(*avail, *total)};
}

std::optional<double> parse_psi_some10(const std::string& text) {
  for (std::string_view line : split_lines(text)) {
    if (line.substr(0, 5) != "some ") continue;
    std::size_t pos = line.find("avg10=");
    if (pos == std::string_view::npos) return std::nullopt;
    std::string_view value = line.substr(pos + 6);
    value = value.substr(0, value.find(' '));
    auto v = parse_double(value);
    if (!v || *v < 0) return std::nullopt;
    return std::min(*v, 100.0);
  }
  return std::nullopt;
}

void parse_stat(const std::string& text, ProcSample* sample) {
  for (std::string_view line : split_lines(text)) {
    if (line.substr(0, 4) == "cpu ") {
      // user nice system idle iowait irq softirq steal (guest and guest_nice are included in user/nice)
      CpuTimes t;
      std::string_view rest = line.substr(4);
      for (int field = 0; field < 8; ++field) {
        rest = trim(rest);
        std::size_t sp = rest.find(' ');
        auto v = parse_u64(rest.substr(0, sp));
        if (!v) break;
        t.total += *v;
        if (field == 3 || field == 4) t.idle += *v;
        rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp);
      }
      sample->cpu = t;
    } else if (line.size() > 3 && line.substr(0, 3) == "cpu" && line[3] >= '0' && line[3] <= '9') {
      ++sample->cpus_in_stat;
    } else if (line.substr(0, 14) == "procs_running ") {
      sample->procs_running = parse_u64(trim(line.substr(14)));
    }
  }
}

double cpu_percent(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.idle < before.idle) return 0.0;
  double total = static_cast<double>(after.total - before.total);
  double idle = static_cast<double>(after.idle - before.idle);
  return std::clamp(100.0 * (total - idle) / total, 0.0, 100.0);
}

ProcSample ProcSampler::sample() const {
  ProcSample s;
  if (auto text = read_file(root_ + "/meminfo")) s.mem = parse_meminfo(*text);
  if (auto text = read_file(root_ + "/stat")) parse_stat(*text, &s);
  if (auto text = read_file(root_ + "/pressure/cpu")) s.psi_cpu_some10 = parse_psi_some10(*text);
  if (auto text = read_file(root_ + "/pressure/memory")) s.psi_mem_some10 = parse_psi_some10(*text);
  return s;
}

std::string ProcSampler::cmdline() const { return read_file(root_ + "/cmdline", 8192).value_or(""); }

}  // namespace llmorch::agent
