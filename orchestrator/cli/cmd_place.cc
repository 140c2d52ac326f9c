// llmorch place: starts a VM from a template on the NUMA node(s) the live host has room on.
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/place_vm.h"
#include "llmorch/orch/template.h"
#include "placement_json.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;
using policy::CpuPolicy;

constexpr const char* kHelp =
    R"(usage: llmorch place --template FILE --name NAME [--set KEY=VALUE]... [--dry-run] [--json]
                     [-c URI] [--config FILE] [--state-dir DIR]

Places a new VM on the host's NUMA nodes and starts it: reads the live host (libvirt's topology, the VMs
llmorch manages, free memory per node), chooses nodes and CPUs the way 'llmorch plan' does, generates
the domain XML, defines it as a persistent libvirt domain and starts it.

  --template FILE   a VM template (templates/README.md describes every key)
  --name NAME       the VM's name: [A-Za-z0-9_.-], 1 to 64 characters, not used by any libvirt domain
  --set KEY=VALUE   override one template key (repeatable; split at the first '=')
  --dry-run         print the placement and the domain XML; define and start nothing
  --json            print one JSON object (below) instead of text
  -c, --connect URI libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)
  --config FILE     host config (default /etc/llmorch/llmorch.conf; missing: built-in defaults)
  --state-dir DIR   where the lock DIR/place.lock lives (default /run/llmorch; created if missing)

What the VM gets:
  dedicated (cpu_policy = dedicated): `vcpus` host CPUs of its own, vCPU i pinned to CPU i of the list;
    vCPUs up to max_vcpus start offline, pinned to the same CPUs (llmorchd moves CPUs between a node's
    dedicated VMs by weight and load later). Never reserved_cpus, never shared_cpus.
  shared: its vCPUs float over the pool: shared_cpus on its node(s) when the host config sets it, else
    the node's CPUs that are neither reserved nor dedicated.
  memory: max_memory_mib reserved on the node(s), strict NUMA binding. A node gives VMs its memory
    minus memory_reserve_mib, minus what non-llmorch users hold now, minus what managed VMs reserve.
  domain type: the template's domain_type, else the host config's. cpu_shares: by the weighting formula
    over the running VMs' template priorities and this VM's (1024 when it runs alone).
Two 'place' commands never race: each holds an exclusive lock on DIR/place.lock from reading the host
to defining the domain.

Output: text, or with --json:
  {"name": N, "placement": {"name": N, "nodes": [..], "cpus": [..], "memory_mib_per_node": {"ID": MiB},
   "cpu_policy": "dedicated"|"shared", "hugepages": "2M"|"1G"|null,
   "cells": [{"node": ID, "vcpus": [..], "memory_mib": M}]}, "cpu_policy": "dedicated"|"shared",
   "cpu_shares": S, "domain_type": "kvm"|"qemu", "dry_run": bool, "xml": "..." (dry run only)}
While starting, a progress line goes to stderr: "defining vm N on node 0 (cpus 1-2)... started".

Exit status: 0 placed (or dry run done); 1 libvirt failed (nothing is left defined); 2 bad arguments,
template or host config, an invalid name or a name already in use; 3 the VM does not fit (the message
names every node and what it lacks). Nothing changes unless the status is 0.

Example: llmorch place --template templates/tiny-test.conf --name t1 --set cpu_policy=dedicated
)";

struct Options {
  CommonOptions common;
  std::string template_path;
  std::string name;
  std::vector<std::string> overrides;
  bool dry_run = false;
  bool json = false;
};

Options parse(const std::vector<std::string>& args) {
  Options o;
  po::options_description options;
  add_common_options(options, o.common);
  options.add_options()("template", po::value<std::string>(&o.template_path), "template file")(
      "name", po::value<std::string>(&o.name), "VM name")("set", po::value<std::vector<std::string>>(&o.overrides),
                                                          "KEY=VALUE")(
      "dry-run", po::bool_switch(&o.dry_run), "change nothing")("json", po::bool_switch(&o.json), "JSON output");
  parse_args(args, options);
  if (o.common.help) return o;
  if (o.template_path.empty()) throw UsageError("--template FILE is required");
  if (o.name.empty()) throw UsageError("--name NAME is required");
  if (!orch::valid_vm_name(o.name))
    throw UsageError("'" + o.name + "' is not a valid VM name (use 1 to 64 of A-Z a-z 0-9 _ . -, not . or ..)");
  return o;
}

std::string where(const orch::DomainSpec& s) {
  std::vector<int> nodes = s.placement.nodes;
  std::string text = std::string(nodes.size() == 1 ? "node " : "nodes ") + cpu_list(nodes) + " (cpus " +
                     cpu_list(s.placement.cpus);
  return text + (s.placement.cpu_policy == CpuPolicy::Shared ? ", shared)" : ")");
}

void print_text(std::ostream& out, const orch::DomainSpec& s, bool dry_run, const std::string& xml) {
  std::string memory;
  for (const auto& [node, mib] : s.placement.memory_mib_per_node)
    memory += (memory.empty() ? "" : " ") + std::to_string(node) + ":" + std::to_string(mib);
  out << (dry_run ? "would place" : "placed") << " vm " << s.name << " on " << where(s) << ", " << s.tmpl.vcpus << "/"
      << s.tmpl.max_vcpus << " vCPUs, memory MiB per node " << memory << ", cpu_shares " << s.cpu_shares
      << ", domain type " << s.domain_type << "\n";
  if (dry_run) out << "dry run: nothing was defined or started. Domain XML:\n" << xml;
}

// Parses nothing and decides nothing: orch::place_vm does; this prints what it did.
int run_place(const Options& o, Io io) {
  orch::PlaceVmRequest request;
  request.config = load_host_config(o.common);
  request.tmpl = orch::load_template(o.template_path, o.overrides);
  request.name = o.name;
  request.template_path = o.template_path;
  request.dry_run = o.dry_run;
  request.lock_dir = o.common.state_dir;
  request.call_timeout = kCliCallTimeout;
  orch::PlaceVmProgress progress;
  progress.defining = [&](const orch::DomainSpec& spec) {
    io.err << "defining vm " << o.name << " on " << where(spec) << "... " << std::flush;
  };
  progress.defined = [&](bool ok) { io.err << (ok ? "started\n" : "failed\n"); };
  const orch::PlaceVmResult result = orch::place_vm(connect(o.common, io), request, io.err, progress);

  using Outcome = orch::PlaceVmResult::Outcome;
  if (result.outcome == Outcome::NameTaken) {
    io.err << "llmorch place: a libvirt domain named '" << o.name
           << "' exists already; pick another --name (nothing was changed)\n";
    return kExitUsage;
  }
  if (result.outcome == Outcome::NoFit) {
    io.err << "llmorch place: cannot place vm " << o.name << ": " << result.rejection << "; nothing was changed\n";
    return kExitNoFit;
  }
  const orch::DomainSpec& spec = result.spec;
  if (o.json) {
    nlohmann::ordered_json j;
    j["name"] = o.name;
    j["placement"] = placement_json(spec.placement);
    j["cpu_policy"] = policy::to_string(spec.placement.cpu_policy);
    j["cpu_shares"] = spec.cpu_shares;
    j["domain_type"] = spec.domain_type;
    j["dry_run"] = o.dry_run;
    if (o.dry_run) j["xml"] = result.xml;
    io.out << j.dump() << "\n";
  } else {
    print_text(io.out, spec, o.dry_run, result.xml);
  }
  return kExitOk;
}

}  // namespace

int cmd_place(const std::vector<std::string>& args, Io io) {
  return guarded("place", io, [&] {
    const Options o = parse(args);
    if (o.common.help) {
      io.out << kHelp;
      return kExitOk;
    }
    return run_place(o, io);
  });
}

}  // namespace llmorch::cli
