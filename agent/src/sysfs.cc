#include "sysfs.h"

#include <algorithm>

#include "util.h"

namespace llmorch::agent {

std::optional<std::string> find_port(const std::string& sysfs_root, const std::string& dev_root,
                                     const std::string& port_name) {
  const std::string dir = sysfs_root + "/class/virtio-ports";
  for (const std::string& port : list_dir(dir)) {
    auto name = read_file(dir + "/" + port + "/name", 256);
    if (name && trim(*name) == port_name) return dev_root + "/" + port;
  }
  return std::nullopt;
}

std::optional<std::vector<int>> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  std::string_view rest = trim(text);
  while (!rest.empty()) {
    std::size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    std::size_t dash = item.find('-');
    auto lo = parse_u64(item.substr(0, dash));
    auto hi = dash == std::string_view::npos ? lo : parse_u64(item.substr(dash + 1));
    if (!lo || !hi || *lo > *hi || *hi > 65535) return std::nullopt;
    for (auto c = *lo; c <= *hi; ++c) cpus.push_back(static_cast<int>(c));
  }
  return cpus;
}

std::vector<int> CpuControl::present() const {
  std::vector<int> cpus;
  for (const std::string& name : list_dir(dir_)) {
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0) continue;
    if (auto n = parse_u64(std::string_view(name).substr(3)); n && *n <= 65535) cpus.push_back(static_cast<int>(*n));
  }
  std::sort(cpus.begin(), cpus.end());
  return cpus;
}

std::optional<std::vector<int>> CpuControl::online() const {
  auto text = read_file(dir_ + "/online", 4096);
  if (!text) return std::nullopt;
  return parse_cpu_list(*text);
}

std::vector<std::string> CpuControl::set_online(int want) const {
  std::vector<int> cpus = present();
  std::vector<std::string> errors;
  if (cpus.empty()) return {"no CPUs found under " + dir_};
  want = std::clamp(want, 1, static_cast<int>(cpus.size()));
  // Online first (ascending), then offline (descending), so the count never dips needlessly.
  for (int i = 0; i < want; ++i) {
    std::string path = dir_ + "/cpu" + std::to_string(cpus[i]) + "/online";
    auto state = read_file(path, 16);
    if (state && trim(*state) != "1")  // no file (cpu0): always online
      if (std::string e = write_file(path, "1"); !e.empty()) errors.push_back(e);
  }
  for (int i = static_cast<int>(cpus.size()) - 1; i >= want; --i) {
    if (cpus[i] == 0) continue;
    std::string path = dir_ + "/cpu" + std::to_string(cpus[i]) + "/online";
    auto state = read_file(path, 16);
    if (state && trim(*state) != "0")
      if (std::string e = write_file(path, "0"); !e.empty()) errors.push_back(e);
  }
  return errors;
}

}  // namespace llmorch::agent
