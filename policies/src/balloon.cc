#include "llmorch/policy/balloon.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

namespace llmorch::policy {

namespace {

using Mib = std::int64_t;  // signed, so that differences are plain arithmetic

std::string fixed(double v, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// What the rule knows about one VM during a tick.
struct VmState {
  const BalloonVm* vm = nullptr;
  bool managed = false;
  std::string reason;  // left alone: why; managed: the moves made, "; "-separated
  Mib actual = 0, free = 0, floor = 0, max = 0, keep = 0;
  Mib planned = 0;  // the target being built
  Mib step_left = 0;
  bool pressure = false;
  std::string pressure_why;
  bool corrected = false;  // moved into [floor, max]
  bool gave = false, grew = false;
  std::string squeeze_stop;  // non-empty: not squeezed below keep, and why (see ShrinkReturn)
  bool stop_noted = false;
  std::vector<std::size_t> nodes;  // indices into the host's node list

  void note(const std::string& s) { reason += (reason.empty() ? "" : "; ") + s; }
};

std::optional<Mib> guest_free(const BalloonVm& vm) {
  if (vm.stats.usable_mib) return static_cast<Mib>(*vm.stats.usable_mib);
  if (vm.agent) return static_cast<Mib>(vm.agent->mem_available_mib);
  if (vm.stats.unused_mib) return static_cast<Mib>(*vm.stats.unused_mib);
  return std::nullopt;
}

bool rose(const std::optional<std::uint64_t>& now, const std::optional<std::uint64_t>& before, std::uint64_t by) {
  return now && before && *now >= *before && *now - *before >= by;
}

// Pressure and its cause, in words (empty when none).
std::string pressure_cause(const VmState& s, const BalloonConfig& c) {
  const BalloonVm& vm = *s.vm;
  if (vm.agent && vm.agent->psi_some10 && *vm.agent->psi_some10 > c.pressure_psi)
    return "memory pressure (psi some avg10 " + fixed(*vm.agent->psi_some10, 1) + " > " + fixed(c.pressure_psi, 1) +
           ")";
  if (static_cast<double>(s.free) < c.pressure_free_fraction * static_cast<double>(s.actual))
    return "only " + std::to_string(s.free) + " MiB free of " + std::to_string(s.actual) + " MiB";
  if (vm.previous) {
    if (rose(vm.stats.swap_in_mib, vm.previous->swap_in_mib, std::max<std::uint64_t>(c.swap_in_rise_mib, 1)))
      return "swap-in rising (" + std::to_string(*vm.stats.swap_in_mib - *vm.previous->swap_in_mib) +
             " MiB since the last tick)";
    if (rose(vm.stats.major_faults, vm.previous->major_faults, std::max<std::uint64_t>(c.major_faults_rise, 1)))
      return "major faults rising (" + std::to_string(*vm.stats.major_faults - *vm.previous->major_faults) +
             " since the last tick)";
  }
  return {};
}

class Planner {
 public:
  Planner(const BalloonHost& host, std::span<const BalloonVm> vms, const BalloonConfig& c) : host_(host), c_(c) {
    validate(vms);
    node_free_.reserve(host.nodes.size());
    for (const BalloonNode& n : host.nodes) node_free_.push_back(static_cast<double>(n.free_mib));
    for (const BalloonVm& vm : vms) states_.push_back(classify(vm));
  }

  std::vector<BalloonDecision> run() {
    correct();
    reclaim();
    grow();
    return decisions();
  }

 private:
  void validate(std::span<const BalloonVm> vms) const {
    if (c_.high_watermark_mib < c_.low_watermark_mib)
      throw std::invalid_argument("balloon config: high watermark " + std::to_string(c_.high_watermark_mib) +
                                  " MiB is below the low watermark " + std::to_string(c_.low_watermark_mib) +
                                  " MiB; set high >= low");
    std::set<std::string> names;
    for (const BalloonVm& vm : vms) {
      if (!names.insert(vm.name).second)
        throw std::invalid_argument("VM '" + vm.name + "' appears twice in the balloon input");
      if (vm.max_memory_mib == 0) throw std::invalid_argument("VM '" + vm.name + "': max_memory_mib is 0");
      if (!(vm.weight >= 0.0 && vm.weight <= 1.0))
        throw std::invalid_argument("VM '" + vm.name + "': weight " + std::to_string(vm.weight) + " is outside [0, 1]");
    }
  }

  std::size_t node_index(const BalloonVm& vm, NodeId id) const {
    for (std::size_t i = 0; i < host_.nodes.size(); ++i)
      if (host_.nodes[i].id == id) return i;
    throw std::invalid_argument("VM '" + vm.name + "' is on node " + std::to_string(id) +
                                ", which the host's node list does not have");
  }

  VmState classify(const BalloonVm& vm) {
    VmState s;
    s.vm = &vm;
    for (NodeId id : vm.nodes) s.nodes.push_back(node_index(vm, id));
    s.max = static_cast<Mib>(vm.max_memory_mib);
    s.floor = static_cast<Mib>(effective_floor(vm));
    const std::optional<Mib> free = guest_free(vm);
    // Left alone, but still counted in the host's total: with its actual, or its max when unknown.
    s.actual = vm.stats.actual_mib ? static_cast<Mib>(*vm.stats.actual_mib) : s.max;
    s.planned = s.actual;
    total_ += s.actual;
    if (!vm.stats.actual_mib) {
      s.reason = "left alone: no balloon size reported (is the virtio balloon driver loaded in the guest?)";
    } else if (!vm.stats_fresh) {
      s.reason = "left alone: balloon statistics are not updating (no stats period, no balloon driver, or it hung)";
    } else if (!free) {
      s.reason = "left alone: neither the balloon nor the agent reports the guest's free memory";
    } else {
      s.managed = true;
      s.free = std::min(*free, s.actual);
      const Mib headroom = std::max<Mib>(
          static_cast<Mib>(c_.headroom_mib),
          static_cast<Mib>(std::ceil(c_.headroom_fraction * static_cast<double>(s.actual))));
      s.keep = std::clamp(s.actual - s.free + headroom, s.floor, std::max(s.floor, s.max));
      s.step_left = static_cast<Mib>(c_.step_mib);
      s.pressure_why = pressure_cause(s, c_);
      s.pressure = !s.pressure_why.empty();
      std::optional<std::uint64_t> node_free;
      if (!s.nodes.empty()) {
        node_free = 0;
        for (std::size_t n : s.nodes) *node_free += host_.nodes[n].free_mib;
      }
      s.squeeze_stop = squeeze_stop(vm, node_free, c_);
    }
    return s;
  }

  Mib dead_band(const VmState& s) const {
    return std::max<Mib>(static_cast<Mib>(c_.dead_band_mib),
                         static_cast<Mib>(std::ceil(c_.dead_band_fraction * static_cast<double>(s.actual))));
  }

  // Moves a VM's target by delta (negative: shrink) and books it on the host's totals.
  void move(VmState& s, Mib delta) {
    s.planned += delta;
    total_ += delta;
    for (std::size_t n : s.nodes) node_free_[n] -= static_cast<double>(delta) / static_cast<double>(s.nodes.size());
  }

  Mib node_short(std::size_t n) const {
    const BalloonNode& node = host_.nodes[n];
    const double want = static_cast<double>(node.reserve_mib + c_.low_watermark_mib);
    return static_cast<Mib>(std::ceil(std::max(0.0, want - node_free_[n])));
  }
  Mib over() const { return host_.limit_mib ? std::max<Mib>(0, total_ - static_cast<Mib>(*host_.limit_mib)) : 0; }

  // How much `s` must give to end the shortages it can help with, and their description.
  std::pair<Mib, std::string> shortage_for(const VmState& s) const {
    Mib need = over();
    std::string why = need > 0 ? "host over limit by " + std::to_string(need) + " MiB" : "";
    for (std::size_t n : s.nodes) {
      const Mib sh = node_short(n);
      if (sh <= 0) continue;
      need = std::max<Mib>(need, sh * static_cast<Mib>(s.nodes.size()));
      why += (why.empty() ? "" : ", ") + std::string("node ") + std::to_string(host_.nodes[n].id) + " short by " +
             std::to_string(sh) + " MiB";
    }
    return {need, why};
  }

  // Room for `s` to grow: free node memory above reserve + high, and what the limit leaves.
  Mib room_for(const VmState& s) const {
    double room = host_.limit_mib ? static_cast<double>(static_cast<Mib>(*host_.limit_mib) - total_)
                                  : std::numeric_limits<double>::infinity();
    for (std::size_t n : s.nodes) {
      const BalloonNode& node = host_.nodes[n];
      const double spare = node_free_[n] - static_cast<double>(node.reserve_mib + c_.high_watermark_mib);
      room = std::min(room, spare * static_cast<double>(s.nodes.size()));
    }
    if (room <= 0) return 0;
    return room > 1e15 ? std::numeric_limits<Mib>::max() / 4 : static_cast<Mib>(std::floor(room));
  }

  void correct() {
    for (VmState& s : states_) {
      if (!s.managed) continue;
      if (s.actual > s.max) {
        move(s, s.max - s.actual);
        s.note("down to max " + std::to_string(s.max) + " MiB (was " + std::to_string(s.actual) + ")");
        s.corrected = true;
      } else if (s.actual < s.floor) {
        move(s, s.floor - s.actual);
        s.note("up to floor " + std::to_string(s.floor) + " MiB (was " + std::to_string(s.actual) +
               "): the workload needs it resident");
        s.corrected = true;
      }
    }
  }

  // Lowest weight first, then the most to give, then name.
  std::vector<VmState*> by_weight_ascending(const std::vector<std::pair<VmState*, Mib>>& offers) const {
    std::vector<std::pair<VmState*, Mib>> sorted = offers;
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
      if (a.first->vm->weight != b.first->vm->weight) return a.first->vm->weight < b.first->vm->weight;
      if (a.second != b.second) return a.second > b.second;
      return a.first->vm->name < b.first->vm->name;
    });
    std::vector<VmState*> out;
    for (const auto& o : sorted) out.push_back(o.first);
    return out;
  }

  void reclaim() {
    for (const bool squeeze : {false, true})
      for (const bool pressured : {false, true}) reclaim_pass(squeeze, pressured);
  }

  void reclaim_pass(bool squeeze, bool pressured) {
    std::vector<std::pair<VmState*, Mib>> offers;
    for (VmState& s : states_) {
      if (!s.managed || s.corrected || s.pressure != pressured) continue;
      const Mib avail = std::min(s.step_left, s.planned - (squeeze ? s.floor : s.keep));
      if (avail > 0) offers.emplace_back(&s, avail);
    }
    for (VmState* s : by_weight_ascending(offers)) {
      const auto [need, why] = shortage_for(*s);
      if (need <= 0) continue;
      if (squeeze && !s->squeeze_stop.empty()) {
        if (!s->stop_noted)
          s->note(why + ", but not below keep " + std::to_string(s->keep) + " MiB: " + s->squeeze_stop);
        s->stop_noted = true;
        continue;
      }
      const Mib above = s->planned - (squeeze ? s->floor : s->keep);
      const Mib amount = std::min({s->step_left, above, std::max(need, dead_band(*s))});
      // The dead band stops jitter around `keep` (which follows the guest's use); the floor does not
      // move, so the last few MiB down to it may go.
      if (amount < dead_band(*s) && !(squeeze && amount == above)) continue;
      move(*s, -amount);
      s->step_left -= amount;
      s->gave = true;
      const std::string weight = "weight " + fixed(s->vm->weight) + ", lowest weight first";
      if (squeeze)
        s->note("squeeze " + std::to_string(amount) + " MiB: " + why + "; " + weight +
                "; no reclaimable memory left, " + std::to_string(above) + " MiB above floor " +
                std::to_string(s->floor) +
                (s->vm->rss_mib ? "" : "; QEMU RSS not reported: not checked whether the host gets it back"));
      else
        s->note("reclaim " + std::to_string(amount) + " MiB: " + why + "; " + weight + "; " + std::to_string(above) +
                " MiB reclaimable above keep " + std::to_string(s->keep) + " (floor " + std::to_string(s->floor) +
                ", " + std::to_string(s->free) + " MiB free)");
    }
  }

  bool can_grow(const VmState& s) const {
    if (!s.managed || !s.pressure || s.corrected || s.gave || s.planned >= s.max) return false;
    return shortage_for(s).first <= 0;
  }

  void grow() {
    std::vector<VmState*> growers;
    for (VmState& s : states_)
      if (can_grow(s)) growers.push_back(&s);
    std::sort(growers.begin(), growers.end(), [](const VmState* a, const VmState* b) {
      if (a->vm->weight != b->vm->weight) return a->vm->weight > b->vm->weight;
      return a->vm->name < b->vm->name;
    });
    for (VmState* g : growers) grow_one(*g);
  }

  // Grows `g` from host room, then from lower-weight donors; undoes the donations if the growth
  // would still be inside the dead band.
  void grow_one(VmState& g) {
    const Mib want = std::min(g.step_left, g.max - g.planned);
    // What an undo restores: the host's totals (a few numbers per node) and each donor as it was, not
    // a copy of every VM's state (that made a tick with many growers quadratic).
    struct Donation {
      VmState* donor;
      Mib planned, step_left;
      bool gave;
      std::size_t reason_size;
    };
    std::vector<Donation> donations;
    const auto saved_free = node_free_;
    const Mib saved_total = total_;

    std::vector<std::string> donors;
    if (room_for(g) < want) {
      std::vector<std::pair<VmState*, Mib>> offers;
      for (VmState& d : states_) {
        if (!d.managed || d.pressure || d.grew || d.corrected || d.vm->weight >= g.vm->weight) continue;
        const Mib avail = std::min(d.step_left, d.planned - d.keep);
        if (avail >= dead_band(d)) offers.emplace_back(&d, avail);
      }
      for (VmState* d : by_weight_ascending(offers)) {
        const Mib before = room_for(g);
        if (before >= want) break;
        const Mib avail = std::min(d->step_left, d->planned - d->keep);
        const Mib amount = std::min(avail, std::max(want - before, dead_band(*d)));
        donations.push_back({d, d->planned, d->step_left, d->gave, d->reason.size()});
        move(*d, -amount);
        if (room_for(g) <= before) {  // its memory is on nodes `g` cannot use
          move(*d, amount);
          donations.pop_back();
          continue;
        }
        d->step_left -= amount;
        d->gave = true;
        d->note("give " + std::to_string(amount) + " MiB to " + g.vm->name + " (weight " + fixed(g.vm->weight) + " > " +
                fixed(d->vm->weight) + ", under pressure); " + std::to_string(avail) + " MiB reclaimable above keep " +
                std::to_string(d->keep) + " (floor " + std::to_string(d->floor) + ")");
        donors.push_back(d->vm->name);
      }
    }
    const Mib amount = std::min(want, room_for(g));
    if (amount < dead_band(g)) {
      for (auto it = donations.rbegin(); it != donations.rend(); ++it) {
        it->donor->planned = it->planned;
        it->donor->step_left = it->step_left;
        it->donor->gave = it->gave;
        it->donor->reason.resize(it->reason_size);
      }
      node_free_ = saved_free;
      total_ = saved_total;
      return;
    }
    move(g, amount);
    g.step_left -= amount;
    g.grew = true;
    std::string source = "host free memory";
    if (!donors.empty()) {
      source = "lower-weight VMs";
      for (const std::string& d : donors) source += " " + d;
    }
    g.note("grow " + std::to_string(amount) + " MiB: " + g.pressure_why + "; weight " + fixed(g.vm->weight) +
           ", highest weight first; from " + source);
  }

  std::string unchanged_reason(const VmState& s) const {
    if (s.pressure) {
      if (s.planned >= s.max)
        return "unchanged: " + s.pressure_why + ", but already at max " + std::to_string(s.max) + " MiB";
      const auto [need, why] = shortage_for(s);
      if (need > 0) return "unchanged: " + s.pressure_why + ", but " + why;
      return "unchanged: " + s.pressure_why + ", but no room: the host has no spare memory and no " +
             "lower-weight VM has memory to give";
    }
    const auto [need, why] = shortage_for(s);
    if (need > 0)
      return "unchanged: " + why + ", but nothing to give above keep " + std::to_string(s.keep) + " (floor " +
             std::to_string(s.floor) + ") within this tick";
    return "unchanged: stable, " + std::to_string(s.free) + " MiB free in guest, no pressure, no shortage";
  }

  std::vector<BalloonDecision> decisions() const {
    std::vector<BalloonDecision> out;
    out.reserve(states_.size());
    for (const VmState& s : states_) {
      BalloonDecision d;
      d.name = s.vm->name;
      d.left_alone = !s.managed;
      if (!s.managed) {
        d.reason = s.reason;
      } else if (s.planned == s.actual) {
        d.reason = s.reason.empty() ? unchanged_reason(s) : "unchanged: " + s.reason;
      } else {
        d.target_mib = static_cast<std::uint64_t>(s.planned);
        d.reason = s.reason;
      }
      out.push_back(std::move(d));
    }
    return out;
  }

  const BalloonHost& host_;
  const BalloonConfig& c_;
  std::vector<VmState> states_;
  std::vector<double> node_free_;  // per host node, after the moves planned so far
  Mib total_ = 0;                  // Σ planned over all VMs
};

}  // namespace

std::uint64_t effective_floor(const BalloonVm& vm) {
  const std::uint64_t agent = vm.agent ? vm.agent->floor_mib : 0;
  return std::min(std::max(vm.template_floor_mib, agent), vm.max_memory_mib);
}

std::string squeeze_stop(const BalloonVm& vm, std::optional<std::uint64_t> node_free_now_mib,
                         const BalloonConfig& config) {
  if (!vm.last_shrink || !vm.rss_mib) return {};
  const ShrinkReturn& r = *vm.last_shrink;
  if (r.taken_mib == 0 || !r.rss_before_mib || !r.rss_after_mib) return {};  // nothing (yet) to judge by
  const std::uint64_t returned = *r.rss_before_mib > *r.rss_after_mib ? *r.rss_before_mib - *r.rss_after_mib : 0;
  const auto enough = static_cast<std::uint64_t>(std::ceil(kMinReturnedFraction * static_cast<double>(r.taken_mib)));
  if (returned >= enough) return {};
  // RSS moved since: the guest touched memory (a squeeze would free it) or the return came late.
  const std::uint64_t move = std::max<std::uint64_t>(config.dead_band_mib, enough);
  const std::uint64_t now = *vm.rss_mib;
  const std::uint64_t moved = now > *r.rss_after_mib ? now - *r.rss_after_mib : *r.rss_after_mib - now;
  if (moved >= move) return {};
  // The host got the memory back after all, in a way RSS does not show (e.g. shared memory backing).
  if (node_free_now_mib && r.node_free_before_mib && *node_free_now_mib >= *r.node_free_before_mib + r.taken_mib)
    return {};
  return "the last " + std::to_string(r.taken_mib) + " MiB taken gave the host back " + std::to_string(returned) +
         " MiB (QEMU RSS " + std::to_string(*r.rss_before_mib) + " -> " + std::to_string(*r.rss_after_mib) +
         " MiB, now " + std::to_string(now) + "; less than " + std::to_string(enough) +
         "): the guest's pages were never touched, so squeezing it frees nothing; squeezed again once its RSS "
         "moves by " +
         std::to_string(move) + " MiB";
}

std::vector<BalloonDecision> plan_balloon(const BalloonHost& host, std::span<const BalloonVm> vms,
                                          const BalloonConfig& config) {
  return Planner(host, vms, config).run();
}

}  // namespace llmorch::policy
