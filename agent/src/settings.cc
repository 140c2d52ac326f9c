#include "settings.h"

#include <algorithm>

#include "llmorch/protocol/messages.h"
#include "util.h"

namespace llmorch::agent {

std::optional<double> parse_priority(std::string_view text) {
  auto v = parse_double(trim(text));
  if (!v || *v <= 0 || *v > protocol::kMaxPriority) return std::nullopt;
  return v;
}

std::optional<std::uint64_t> parse_floor(std::string_view text) {
  auto v = parse_u64(trim(text));
  if (!v || *v > protocol::kMaxFloorMib) return std::nullopt;
  return v;
}

namespace {

void warn(std::vector<std::string>* warnings, std::string_view where, std::string_view word) {
  if (warnings)
    warnings->push_back(std::string(where) + ": ignoring invalid '" + std::string(word.substr(0, 64)) + "'");
}

// Applies key=value to a layer; false if the key is known but the value is bad.
bool apply_layer(std::string_view key, std::string_view value, Layer* layer, bool* known) {
  *known = true;
  if (key == "priority") return (layer->priority = parse_priority(value)).has_value();
  if (key == "floor_mib") return (layer->floor_mib = parse_floor(value)).has_value();
  *known = false;
  return true;
}

}  // namespace

CmdlineSettings parse_cmdline(const std::string& cmdline, std::vector<std::string>* warnings) {
  CmdlineSettings out;
  std::string_view rest = trim(cmdline);
  while (!rest.empty()) {
    std::size_t sp = rest.find(' ');
    std::string_view word = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : trim(rest.substr(sp));
    if (word.substr(0, 8) != "llmorch.") continue;
    std::size_t eq = word.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = word.substr(8, eq - 8), value = word.substr(eq + 1);
    bool known = false;
    if (!apply_layer(key, value, &out.layer, &known)) {
      warn(warnings, "kernel command line", word);
    } else if (!known && key == "priority_at") {
      std::size_t colon = value.find(':');
      auto after = parse_double(value.substr(0, colon));
      auto prio = colon == std::string_view::npos ? std::nullopt : parse_priority(value.substr(colon + 1));
      if (after && *after >= 0 && prio) out.scheduled.push_back({*after, *prio});
      else warn(warnings, "kernel command line", word);
    }
  }
  std::stable_sort(out.scheduled.begin(), out.scheduled.end(),
                   [](const ScheduledPriority& a, const ScheduledPriority& b) { return a.after_s < b.after_s; });
  return out;
}

FileSettings parse_config_file(const std::string& text, std::vector<std::string>* warnings) {
  FileSettings out;
  for (std::string_view line : split_lines(text)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      warn(warnings, "config file", line);
      continue;
    }
    std::string_view key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    bool known = false;
    bool ok = apply_layer(key, value, &out.layer, &known);
    if (!known && key == "interval_ms") {
      auto v = parse_u64(value);
      ok = v && *v >= protocol::kMinIntervalMs && *v <= protocol::kMaxIntervalMs;
      if (ok) out.interval_ms = v;
    } else if (!known && key == "llm_metrics") {
      out.llm_metrics = std::string(value);
    } else if (!known) {
      ok = false;
    }
    if (!ok) warn(warnings, "config file", line);
  }
  return out;
}

void Settings::advance(double elapsed_s) {
  for (auto it = cmdline_.scheduled.begin(); it != cmdline_.scheduled.end();) {
    if (it->after_s <= elapsed_s) {
      cmdline_.layer.priority = it->priority;
      it = cmdline_.scheduled.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<double> Settings::priority() const {
  if (runtime_.priority) return runtime_.priority;
  if (file_.priority) return file_.priority;
  return cmdline_.layer.priority;
}

std::uint64_t Settings::floor_mib() const {
  if (runtime_.floor_mib) return *runtime_.floor_mib;
  if (file_.floor_mib) return *file_.floor_mib;
  return cmdline_.layer.floor_mib.value_or(0);
}

}  // namespace llmorch::agent
