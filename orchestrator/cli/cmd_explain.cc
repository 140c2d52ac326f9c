// llmorch explain NAME: the weight computation and llmorchd's last decision for one VM, in words and
// numbers.
#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "llmorch/policy/weighting.h"

namespace llmorch::cli {

namespace {

constexpr const char* kHelp = R"(usage: llmorch explain NAME [-c URI] [--config FILE] [--state-dir DIR]

Explains how the VM NAME gets its share of the host's CPUs:
  - the priorities of all running VMs (effective: the agent's clamped report, or the template's) and α;
  - for each VM the raw terms α/p_i and (1−α)/n of w_i ∝ α·(1/p_i) + (1−α)·(1/n), their sum, the
    normalisation Σ raw, and NAME's weight;
  - cpu_shares = round(w · n · 1024) (the planned value and the live one);
  - its CPUs: what it holds, and for dedicated VMs on one node the daemon's re-division (CPUs online);
  - llmorchd's last decision and reason for it, and its last change, from DIR/status.json.
When llmorchd is not running, the numbers are computed here from template priorities and the host
config's alpha, and the output says so.

  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE      host config (alpha, when the daemon is not running)
  --state-dir DIR    llmorchd's state directory (default /run/llmorch)

Exit status: 0 explained; 1 no VM named NAME is managed by llmorch, or libvirt failed; 2 bad arguments.
)";

struct Term {
  std::string name;
  double priority = 1;
  std::string source;
};

// The running VMs and their effective priorities: the daemon's when it runs, else the templates'.
std::vector<Term> terms_of(const std::vector<orch::ManagedDomain>& domains, const DaemonView& daemon) {
  std::vector<Term> terms;
  for (const auto& d : domains) {
    if (!d.active()) continue;
    Term t{d.name, d.facts.priority, "template"};
    if (const orch::StatusFileVm* v = daemon.running ? daemon.vm(d.name) : nullptr) {
      t.priority = v->effective_priority;
      t.source = v->priority_source;
    }
    terms.push_back(t);
  }
  return terms;
}

void explain_weight(std::ostream& out, const std::string& name, const std::vector<Term>& terms, double alpha,
                    double* weight) {
  out << "Formula: w_i = raw_i / sum(raw), raw_i = alpha/p_i + (1-alpha)/n, with alpha = " << fixed(alpha, 2)
      << " and n = " << terms.size() << " running VMs (p = 1 is the most important).\n";
  Table t;
  t.row({"", "VM", "PRIORITY", "SOURCE", "alpha/p_i", "(1-alpha)/n", "raw_i", "weight"});
  std::vector<double> priorities;
  for (const auto& term : terms) priorities.push_back(term.priority);
  const std::vector<policy::WeightTerm> parts = policy::weight_terms(priorities, alpha);
  const std::vector<double> weights = policy::compute_weights(priorities, alpha);
  double sum = 0;
  for (const policy::WeightTerm& p : parts) sum += p.raw;
  for (std::size_t i = 0; i < terms.size(); ++i) {
    t.row({terms[i].name == name ? ">" : "", terms[i].name, fixed(terms[i].priority, 2), terms[i].source,
           fixed(parts[i].priority_part, 4), fixed(parts[i].equal_part, 4), fixed(parts[i].raw, 4),
           fixed(weights[i], 4)});
    if (terms[i].name == name) *weight = weights[i];
  }
  t.print(out);
  out << "sum(raw) = " << fixed(sum, 4) << ", so w(" << name << ") = " << fixed(*weight * sum, 4) << " / "
      << fixed(sum, 4) << " = " << fixed(*weight, 4) << "\n";
}

void explain_cpus(std::ostream& out, const orch::ManagedDomain& d, const orch::StatusFileVm* daemon_vm,
                  const orch::VmPlan* computed) {
  const auto& p = d.facts.placement;
  if (p.cpu_policy == policy::CpuPolicy::Shared) {
    out << "CPUs: shared; its " << d.vcpus_current << " vCPUs float over " << cpu_list(p.cpus) << " on node(s) "
        << cpu_list(p.nodes) << ", and cpu_shares decide its part when the pool is contended.\n";
    // The online count follows its part of the pool (weight and load) within [vcpus_min, max_vcpus].
    if (daemon_vm && daemon_vm->vcpus_online) {
      out << "  Online vCPUs: llmorchd plans " << *daemon_vm->vcpus_online << " (its part of the pool, within ["
          << d.facts.vcpus_min << ", " << d.facts.max_vcpus << "]); the reason is in the last decision below.\n";
    } else if (computed && !computed->vcpus_reason.empty()) {
      out << "  Online vCPUs: " << computed->vcpus_reason << " (within [" << d.facts.vcpus_min << ", "
          << d.facts.max_vcpus << "], from template priorities; llmorchd also weighs the agents' load).\n";
    }
    return;
  }
  std::string held;
  for (auto c : p.cpus) held += (held.empty() ? "" : ",") + std::to_string(c);
  out << "CPUs: dedicated on node(s) " << cpu_list(p.nodes) << ", holds " << held << " (vCPU i on the i-th), "
      << d.vcpus_current << "/" << d.vcpus_max << " vCPUs present.\n";
  if (p.nodes.size() != 1) {
    out << "  It spans nodes, so llmorchd keeps its CPUs as placed.\n";
    return;
  }
  std::vector<int> planned;
  if (daemon_vm) {
    planned = daemon_vm->cpus;
  } else if (computed) {
    planned = computed->cpus;
  }
  std::string plan;
  for (auto c : planned) plan += (plan.empty() ? "" : ",") + std::to_string(c);
  out << "  Its node's dedicated CPUs are re-divided among that node's dedicated VMs by weight and load: "
      << "planned " << (plan.empty() ? "-" : plan) << " (" << planned.size() << " vCPUs online).\n";
}

}  // namespace

int cmd_explain(const std::vector<std::string>& args, Io io) {
  return guarded("explain", io, [&] {
    const auto [common, name] = parse_vm_args(args);
    if (common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    if (name.empty()) throw UsageError("name the VM to explain");
    const orch::HostConfig config = load_host_config(common);
    const auto hypervisor = connect(common, io);
    const auto domains = hypervisor->list_managed();
    auto it = std::find_if(domains.begin(), domains.end(), [&](const auto& d) { return d.name == name; });
    if (it == domains.end()) {
      io.err << "llmorch explain: no VM named '" << name << "' is managed by llmorch; 'llmorch list' shows them\n";
      return kExitFailure;
    }
    const orch::ManagedDomain& d = *it;
    if (d.metadata_error) {
      io.err << "llmorch explain: vm '" << name << "': " << *d.metadata_error
             << "; llmorchd leaves it alone until that is fixed ('llmorch remove " << name << "' removes it)\n";
      return kExitFailure;
    }
    const DaemonView daemon = read_daemon_view(common.state_dir, now_unix_seconds());
    const orch::StatusFileVm* dv = daemon.running ? daemon.vm(name) : nullptr;
    std::ostream& out = io.out;
    out << "vm " << name << " (" << orch::to_string(d.state) << ", template priority " << d.facts.priority << " in ["
        << d.facts.priority_min << ", " << d.facts.priority_max << "])\n";
    if (daemon.running) {
      out << "Numbers from llmorchd (last tick " << fixed(daemon.age_s, 1) << " s ago).\n";
    } else {
      out << "llmorchd is not running (" << daemon.why_not
          << "): numbers computed here from template priorities and the host config's alpha.\n";
    }
    if (!d.active()) {
      out << "It is not running, so it has no weight: weights are shared among running VMs only.\n";
      return kExitOk;
    }
    const double alpha = daemon.running ? daemon.status->alpha : config.alpha;
    const auto terms = terms_of(domains, daemon);
    double weight = 0;
    explain_weight(out, name, terms, alpha, &weight);
    const int shares = policy::cpu_shares(weight, terms.size());
    out << "cpu_shares = round(w * n * 1024) = round(" << fixed(weight, 4) << " * " << terms.size()
        << " * 1024) = " << shares << " (live: " << (d.cpu_shares ? std::to_string(*d.cpu_shares) : "unknown");
    if (dv) out << ", llmorchd's plan: " << dv->cpu_shares;
    out << ")\n";
    const orch::Plan offline = offline_plan(*hypervisor, domains, config);
    const orch::VmPlan* computed = find_vm(offline, name);
    explain_cpus(out, d, dv, computed);
    if (dv) {
      out << "Last decision: " << (dv->reason.empty() ? "(none recorded)" : dv->reason) << "\n";
      out << "Last change: "
          << (dv->last_change ? *dv->last_change + " at " + dv->last_change_at.value_or("?")
                              : "none since llmorchd started")
          << "\n";
    } else if (daemon.running) {
      out << "llmorchd has no entry for this VM yet (it appears after the next tick).\n";
    }
    return kExitOk;
  });
}

}  // namespace llmorch::cli
