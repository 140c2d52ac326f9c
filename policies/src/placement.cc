#include "llmorch/policy/placement.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>

namespace llmorch::policy {
namespace {

constexpr std::size_t kExhaustiveMaxNodes = 8;  // 2^8 node sets: cheap to try them all

std::string describe(const PlacementRequest& r) {
  std::string s = "'" + r.name + "' (" + std::to_string(r.vcpus) + " vCPUs, " + std::to_string(r.memory_mib) + " MiB";
  if (r.hugepage_kib != 0) s += " in " + page_size_text(r.hugepage_kib) + " hugepages";
  if (r.cpu_policy == CpuPolicy::Shared) s += ", shared CPUs";
  return s + ")";
}

// What one node can give this particular request.
struct Candidate {
  const NumaNode* node = nullptr;
  const NodeFree* free = nullptr;
  std::uint64_t cpu_cap = 0;      // dedicated: CPUs it may pin; shared: size of its pool
  std::uint64_t granule_cap = 0;  // memory it can give, in granules (MiB or hugepages)
  bool usable() const { return cpu_cap > 0 && granule_cap > 0; }
};

struct Request {
  const PlacementRequest& vm;
  std::uint64_t granule_mib;  // memory moves in whole pages: 1 MiB, or the hugepage size
  std::uint64_t granules;
  bool dedicated() const { return vm.cpu_policy == CpuPolicy::Dedicated; }
};

Candidate candidate_for(const NumaNode& node, const NodeFree& free, const Request& req) {
  Candidate c{&node, &free};
  c.cpu_cap = req.dedicated() ? free.dedicated_cpus() : free.cpus.size();
  std::uint64_t mem = free.memory_mib;
  if (req.vm.hugepage_kib != 0) {
    auto it = free.hugepage_mib.find(req.vm.hugepage_kib);
    mem = std::min(mem, it == free.hugepage_mib.end() ? 0 : it->second);
  }
  c.granule_cap = mem / req.granule_mib;
  return c;
}

// Splits `total` over parts: each gets 1, the rest goes in proportion to `room` (largest remainder,
// ties to the earlier part). With total - parts <= sum(room), no part gets more than 1 + its room.
std::vector<std::uint64_t> split(std::uint64_t total, const std::vector<std::uint64_t>& room) {
  const std::size_t n = room.size();
  assert(total >= n);
  const std::uint64_t rest = total - n;
  const std::uint64_t weight = std::accumulate(room.begin(), room.end(), std::uint64_t{0});
  std::vector<std::uint64_t> out(n, 1);
  std::vector<std::pair<std::uint64_t, std::size_t>> remainders;  // (remainder, index)
  std::uint64_t given = 0;
  for (std::size_t i = 0; i < n && weight > 0; ++i) {
    out[i] += rest * room[i] / weight;
    given += rest * room[i] / weight;
    remainders.emplace_back(rest * room[i] % weight, i);
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t j = 0; given < rest; ++j, ++given) ++out[remainders[j].second];
  return out;
}

// Chooses `count` CPUs among a node's free ones: whole free cores first (siblings adjacent), then
// cores already partly used, breaking a whole free core only for the last few vCPUs.
std::vector<CpuId> pick_cpus(const NumaNode& node, const std::vector<CpuId>& free, std::size_t count) {
  struct Core {
    std::vector<CpuId> free;
    bool whole = false;
  };
  std::map<CpuId, Core> cores;  // keyed by the core's first thread: keeps id order
  std::size_t next = 0;         // walk `free` (sorted) alongside node.cpus (sorted)
  for (const Cpu& cpu : node.cpus) {
    while (next < free.size() && free[next] < cpu.id) ++next;
    if (next == free.size() || free[next] != cpu.id) continue;
    Core& core = cores[cpu.siblings.empty() ? cpu.id : cpu.siblings.front()];
    core.free.push_back(cpu.id);
    core.whole = core.free.size() >= cpu.siblings.size();
  }
  std::vector<CpuId> picked;
  while (picked.size() < count) {
    const std::size_t need = count - picked.size();
    auto best = cores.end();
    for (auto it = cores.begin(); it != cores.end(); ++it) {
      if (it->second.whole && it->second.free.size() <= need) {
        best = it;
        break;
      }
    }
    if (best == cores.end()) {
      // The smallest core that covers the rest (partly used before whole), else the largest one.
      auto rank = [need](const Core& c) {
        const bool covers = c.free.size() >= need;
        return std::tuple(!covers, covers ? c.free.size() : std::numeric_limits<std::size_t>::max() - c.free.size(),
                          c.whole);
      };
      for (auto it = cores.begin(); it != cores.end(); ++it) {
        if (best == cores.end() || rank(it->second) < rank(best->second)) best = it;
      }
    }
    assert(best != cores.end());
    const std::size_t take = std::min(need, best->second.free.size());
    picked.insert(picked.end(), best->second.free.begin(), best->second.free.begin() + take);
    cores.erase(best);
  }
  return picked;
}

// A node set under consideration, with the numbers that rank it.
struct Choice {
  std::vector<const Candidate*> nodes;  // ascending node id
  int distance = 0;
  std::uint64_t free_cpus_after = 0;
  std::uint64_t free_mib_after = 0;
};

// Nearer first, then best fit, then the lowest node ids.
bool better(const Choice& a, const Choice& b) {
  if (a.distance != b.distance) return a.distance < b.distance;
  if (a.free_cpus_after != b.free_cpus_after) return a.free_cpus_after < b.free_cpus_after;
  if (a.free_mib_after != b.free_mib_after) return a.free_mib_after < b.free_mib_after;
  return std::lexicographical_compare(a.nodes.begin(), a.nodes.end(), b.nodes.begin(), b.nodes.end(),
                                      [](auto* x, auto* y) { return x->node->id < y->node->id; });
}

// `set` is sorted by node id.
std::optional<Choice> evaluate(const HostTopology& host, const Request& req, const std::vector<const Candidate*>& set) {
  const std::uint64_t k = set.size();
  if (static_cast<std::uint64_t>(req.vm.vcpus) < k || req.granules < k) return std::nullopt;
  std::uint64_t cpus = 0, granules = 0;
  for (const Candidate* c : set) {
    cpus += c->cpu_cap;
    granules += c->granule_cap;
  }
  if (granules < req.granules) return std::nullopt;
  if (req.dedicated() && cpus < static_cast<std::uint64_t>(req.vm.vcpus)) return std::nullopt;
  Choice choice;
  for (std::size_t i = 0; i < set.size(); ++i) {
    for (std::size_t j = i + 1; j < set.size(); ++j)
      choice.distance += host.distance(set[i]->node->id, set[j]->node->id);
    choice.free_cpus_after += set[i]->free->cpus.size();
    choice.free_mib_after += set[i]->free->memory_mib;
  }
  if (req.dedicated()) choice.free_cpus_after -= req.vm.vcpus;
  choice.free_mib_after -= req.vm.memory_mib;
  choice.nodes = set;
  return choice;
}

// Whether any k usable nodes could hold the VM: the k largest capacities must add up (cheap pruning).
bool k_nodes_may_fit(const std::vector<const Candidate*>& usable, std::size_t k, const Request& req) {
  auto top_k_sum = [&](auto cap) {
    std::vector<std::uint64_t> caps;
    for (const Candidate* c : usable) caps.push_back(cap(*c));
    std::partial_sort(caps.begin(), caps.begin() + k, caps.end(), std::greater<>());
    return std::accumulate(caps.begin(), caps.begin() + k, std::uint64_t{0});
  };
  if (top_k_sum([](const Candidate& c) { return c.granule_cap; }) < req.granules) return false;
  return !req.dedicated() ||
         top_k_sum([](const Candidate& c) { return c.cpu_cap; }) >= static_cast<std::uint64_t>(req.vm.vcpus);
}

// Calls visit(set) for each node set of size k to try (sorted by id): all of them for small hosts,
// else the sets grown from each node by adding the nearest one.
template <typename Visit>
void for_each_node_set(const HostTopology& host, const std::vector<const Candidate*>& usable, std::size_t k,
                       Visit&& visit) {
  const std::size_t n = usable.size();
  std::vector<const Candidate*> set;
  if (n <= kExhaustiveMaxNodes) {
    for (unsigned mask = 1; mask < (1u << n); ++mask) {
      if (static_cast<std::size_t>(std::popcount(mask)) != k) continue;
      set.clear();
      for (std::size_t i = 0; i < n; ++i) {
        if (mask & (1u << i)) set.push_back(usable[i]);
      }
      visit(set);
    }
    return;
  }
  for (const Candidate* start : usable) {
    set.assign(1, start);
    while (set.size() < k) {
      const Candidate* nearest = nullptr;
      int nearest_sum = std::numeric_limits<int>::max();
      for (const Candidate* c : usable) {
        if (std::find(set.begin(), set.end(), c) != set.end()) continue;
        int sum = 0;
        for (const Candidate* m : set) sum += host.distance(m->node->id, c->node->id);
        if (sum < nearest_sum) {
          nearest = c;
          nearest_sum = sum;
        }
      }
      set.push_back(nearest);
    }
    std::sort(set.begin(), set.end(), [](auto* a, auto* b) { return a->node->id < b->node->id; });
    visit(set);
  }
}

std::optional<Choice> choose(const HostTopology& host, const Request& req, const std::vector<Candidate>& candidates) {
  std::vector<const Candidate*> usable;
  for (const Candidate& c : candidates) {
    if (c.usable()) usable.push_back(&c);
  }
  for (std::size_t k = 1; k <= usable.size(); ++k) {
    if (!k_nodes_may_fit(usable, k, req)) continue;
    std::optional<Choice> best;
    for_each_node_set(host, usable, k, [&](const std::vector<const Candidate*>& set) {
      std::optional<Choice> c = evaluate(host, req, set);
      if (c && (!best || better(*c, *best))) best = std::move(c);
    });
    if (best) return best;
  }
  return std::nullopt;
}

Placement build(const Request& req, const Choice& choice) {
  const PlacementRequest& vm = req.vm;
  Placement p;
  p.name = vm.name;
  p.cpu_policy = vm.cpu_policy;
  p.hugepage_kib = vm.hugepage_kib;
  p.vcpus = vm.vcpus;
  std::vector<std::uint64_t> cpu_room, mem_room;
  for (const Candidate* c : choice.nodes) {
    // Dedicated: a node takes at most what it has; shared: vCPUs follow the pool sizes, no cap.
    cpu_room.push_back(req.dedicated() ? c->cpu_cap - 1 : c->cpu_cap);
    mem_room.push_back(c->granule_cap - 1);
  }
  const auto vcpus = split(vm.vcpus, cpu_room);
  const auto granules = split(req.granules, mem_room);
  int next_vcpu = 0;
  for (std::size_t i = 0; i < choice.nodes.size(); ++i) {
    const Candidate& c = *choice.nodes[i];
    GuestCell cell;
    cell.host_node = c.node->id;
    cell.memory_mib = granules[i] * req.granule_mib;
    for (std::uint64_t v = 0; v < vcpus[i]; ++v) cell.vcpus.push_back(next_vcpu++);
    const auto cpus = req.dedicated() ? pick_cpus(*c.node, c.free->cpus, vcpus[i]) : c.free->cpus;
    p.cpus.insert(p.cpus.end(), cpus.begin(), cpus.end());
    p.nodes.push_back(c.node->id);
    p.memory_mib_per_node[c.node->id] = cell.memory_mib;
    p.cells.push_back(std::move(cell));
  }
  if (!req.dedicated()) std::sort(p.cpus.begin(), p.cpus.end());
  return p;
}

// "node 0: 6 CPUs free, 8 needed, 2048 MiB free, 4096 needed"
std::string node_reason(const NumaNode& node, const NodeFree& free, const Request& req) {
  const PlacementRequest& vm = req.vm;
  std::vector<std::string> lacks;
  if (node.cpus.empty()) {
    lacks.push_back("no CPUs (memory-only node)");
  } else if (req.dedicated() && free.dedicated_cpus() < static_cast<std::size_t>(vm.vcpus)) {
    const std::string kept = free.hosts_shared && !free.cpus.empty() ? " (1 kept for shared VMs)" : "";
    lacks.push_back(std::to_string(free.dedicated_cpus()) + " CPUs free" + kept + ", " + std::to_string(vm.vcpus) +
                    " needed");
  } else if (!req.dedicated() && free.cpus.empty()) {
    lacks.push_back("no CPU left for shared vCPUs");
  }
  if (free.memory_mib < vm.memory_mib) {
    lacks.push_back(std::to_string(free.memory_mib) + " MiB free, " + std::to_string(vm.memory_mib) + " needed");
  }
  if (vm.hugepage_kib != 0) {
    auto it = free.hugepage_mib.find(vm.hugepage_kib);
    if (it == free.hugepage_mib.end()) {
      lacks.push_back("no " + page_size_text(vm.hugepage_kib) + " hugepages");
    } else if (it->second < vm.memory_mib) {
      lacks.push_back(std::to_string(it->second) + " MiB of " + page_size_text(vm.hugepage_kib) + " hugepages free, " +
                      std::to_string(vm.memory_mib) + " needed");
    }
  }
  std::string s = "node " + std::to_string(node.id) + ": ";
  for (std::size_t i = 0; i < lacks.size(); ++i) s += (i ? ", " : "") + lacks[i];
  return s;
}

std::string no_fit_reason(const HostTopology& host, const std::vector<NodeFree>& free,
                          const std::vector<Candidate>& candidates, const Request& req) {
  std::string s = "no NUMA node set fits " + describe(req.vm) + ": ";
  std::uint64_t cpus = 0, mib = 0;
  std::size_t usable = 0;
  for (std::size_t i = 0; i < host.nodes.size(); ++i) {
    s += (i ? "; " : "") + node_reason(host.nodes[i], free[i], req);
    if (candidates[i].usable()) {
      ++usable;
      cpus += candidates[i].cpu_cap;
      mib += candidates[i].granule_cap * req.granule_mib;
    }
  }
  s += "; all " + std::to_string(usable) + " usable nodes together have " + std::to_string(cpus) + " CPUs and " +
       std::to_string(mib) + " MiB" + (req.vm.hugepage_kib ? " of such hugepages" : "") + " free";
  if ((!req.dedicated() || cpus >= static_cast<std::uint64_t>(req.vm.vcpus)) && mib >= req.vm.memory_mib) {
    s += ", but a VM spread over several nodes needs at least one vCPU and one page on each";
  }
  return s;
}

std::optional<std::string> invalid(const PlacementRequest& vm, const HostUsage& usage) {
  if (vm.vcpus < 1) return "'" + vm.name + "' asks for " + std::to_string(vm.vcpus) + " vCPUs; a VM needs at least 1";
  if (vm.memory_mib == 0) return "'" + vm.name + "' asks for 0 MiB of memory; a VM needs some";
  if (vm.hugepage_kib % 1024 != 0) {
    return "'" + vm.name + "' asks for " + std::to_string(vm.hugepage_kib) +
           " KiB hugepages; use 2048 (2 MiB) or 1048576 (1 GiB)";
  }
  if (vm.hugepage_kib != 0 && vm.memory_mib % (vm.hugepage_kib / 1024) != 0) {
    return "'" + vm.name + "' asks for " + std::to_string(vm.memory_mib) + " MiB, not a whole number of " +
           page_size_text(vm.hugepage_kib) + " hugepages";
  }
  for (const Placement& p : usage.placed) {
    if (p.name == vm.name) return "a VM named '" + vm.name + "' is already placed";
  }
  return std::nullopt;
}

}  // namespace

std::string page_size_text(std::uint64_t kib) {
  if (kib % (1024 * 1024) == 0) return std::to_string(kib / (1024 * 1024)) + " GiB";
  if (kib % 1024 == 0) return std::to_string(kib / 1024) + " MiB";
  return std::to_string(kib) + " KiB";
}

std::uint64_t hugepage_capacity_kib(const NumaNode& node, std::uint64_t page_kib) {
  for (const PageInfo& p : node.pages) {
    if (p.size_kib != page_kib || page_kib == 0) continue;
    // min(count * size, memory) without overflowing count * size
    return std::min(p.count, node.memory_kib / page_kib) * page_kib;
  }
  return 0;
}

std::vector<NodeFree> free_resources(const HostTopology& host, const HostUsage& usage) {
  CpuId max_id = 0;
  for (const NumaNode& n : host.nodes) {
    for (const Cpu& c : n.cpus) max_id = std::max(max_id, c.id);
  }
  std::vector<char> taken(static_cast<std::size_t>(max_id) + 1, 0);
  auto take = [&](CpuId id) {
    if (id >= 0 && id <= max_id) taken[id] = 1;
  };
  for (CpuId id : usage.reserved_cpus) take(id);
  for (const Placement& p : usage.placed) {
    if (p.cpu_policy == CpuPolicy::Dedicated) std::for_each(p.cpus.begin(), p.cpus.end(), take);
  }
  std::vector<NodeFree> out;
  out.reserve(host.nodes.size());
  for (const NumaNode& n : host.nodes) {
    NodeFree f;
    f.id = n.id;
    for (const Cpu& c : n.cpus) {
      if (!taken[c.id]) f.cpus.push_back(c.id);
    }
    std::uint64_t used = 0;
    if (auto it = usage.unavailable_mib.find(n.id); it != usage.unavailable_mib.end()) used += it->second;
    for (const PageInfo& pg : n.pages) {
      if (pg.size_kib % 1024 == 0) {
        f.hugepage_mib[pg.size_kib] = hugepage_capacity_kib(n, pg.size_kib) / 1024;
      }
    }
    for (const Placement& p : usage.placed) {
      auto it = p.memory_mib_per_node.find(n.id);
      if (it == p.memory_mib_per_node.end()) continue;
      used += it->second;
      if (p.cpu_policy == CpuPolicy::Shared) f.hosts_shared = true;
      if (auto h = f.hugepage_mib.find(p.hugepage_kib); p.hugepage_kib != 0 && h != f.hugepage_mib.end()) {
        h->second -= std::min(h->second, it->second);
      }
    }
    const std::uint64_t total = n.memory_kib / 1024;
    f.memory_mib = total - std::min(total, used);
    out.push_back(std::move(f));
  }
  return out;
}

PlacementResult place(const HostTopology& host, const HostUsage& usage, const PlacementRequest& vm) {
  if (auto why = invalid(vm, usage)) return Rejection{vm.name, *why};
  const std::uint64_t granule_mib = vm.hugepage_kib ? vm.hugepage_kib / 1024 : 1;
  const Request req{vm, granule_mib, vm.memory_mib / granule_mib};
  const std::vector<NodeFree> free = free_resources(host, usage);
  std::vector<Candidate> candidates;
  candidates.reserve(host.nodes.size());
  for (std::size_t i = 0; i < host.nodes.size(); ++i) candidates.push_back(candidate_for(host.nodes[i], free[i], req));
  if (std::optional<Choice> choice = choose(host, req, candidates)) return build(req, *choice);
  return Rejection{vm.name, no_fit_reason(host, free, candidates, req)};
}

}  // namespace llmorch::policy
