// CPU list syntax shared by the config file, the CLI and libvirt's own "siblings" attributes:
// comma-separated ids and inclusive ranges, "0-3,8,10-11". Spaces around parts are allowed.
#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <string>
#include <string_view>

#include "llmorch/orch/config.h"

namespace llmorch::orch {
namespace {

// Real hosts stay far below this (Linux NR_CPUS is at most 8192); the bound keeps a typo such as
// "0-4000000000" from building a huge set.
constexpr policy::CpuId kMaxCpuId = 65535;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

[[noreturn]] void bad_part(std::string_view part, std::string_view why) {
  throw std::invalid_argument("bad CPU list part '" + std::string(part) + "': " + std::string(why) +
                              " (expected ids and ranges such as \"0-3,8\")");
}

policy::CpuId parse_id(std::string_view text, std::string_view part) {
  text = trim(text);
  policy::CpuId id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || id < 0) {
    bad_part(part, "'" + std::string(text) + "' is not a CPU number");
  }
  if (id > kMaxCpuId) bad_part(part, "CPU ids above " + std::to_string(kMaxCpuId) + " are not supported");
  return id;
}

}  // namespace

std::set<policy::CpuId> parse_cpu_list(const std::string& text) {
  if (trim(text).empty()) throw std::invalid_argument("empty CPU list (expected ids and ranges such as \"0-3,8\")");
  std::set<policy::CpuId> cpus;
  std::string_view rest = text;
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view part = trim(rest.substr(0, comma));
    if (part.empty()) bad_part(part, "empty entry between commas");
    if (const std::size_t dash = part.find('-'); dash != std::string_view::npos) {
      const policy::CpuId first = parse_id(part.substr(0, dash), part);
      const policy::CpuId last = parse_id(part.substr(dash + 1), part);
      if (first > last) bad_part(part, "range goes down");
      for (policy::CpuId id = first; id <= last; ++id) cpus.insert(id);
    } else {
      cpus.insert(parse_id(part, part));
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return cpus;
}

std::string format_cpu_list(const std::set<policy::CpuId>& cpus) {
  std::string out;
  for (auto it = cpus.begin(); it != cpus.end();) {
    const policy::CpuId first = *it;
    policy::CpuId last = first;
    for (++it; it != cpus.end() && *it == last + 1; ++it) last = *it;
    if (!out.empty()) out += ',';
    out += std::to_string(first);
    if (last != first) out += '-' + std::to_string(last);
  }
  return out;
}

}  // namespace llmorch::orch
