// llmorch weights: the weighting formula, offline. Lets an operator see what a priority scheme means
// before giving it to llmorchd.
#include <boost/program_options.hpp>
#include <charconv>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "llmorch/policy/division.h"
#include "llmorch/policy/weighting.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kHelp = R"(usage: llmorch weights [--alpha A] [--cpus N] [--json] NAME=PRIORITY...

Computes llmorchd's priority weights for a set of VMs, without touching any VM:

    w_i  proportional to  A * (1 / p_i) + (1 - A) * (1 / n),   normalised so that the weights sum to 1

PRIORITY is a positive number; 1 is the most important, larger numbers are less important.
A (alpha) in [0, 1] trades priority against an equal split: 0 splits equally, 1 weighs by 1/priority.

With --cpus N, also divides N whole host CPUs by weight (the plain formula, as under full load): each VM
gets at least 1 CPU when N >= the number of VMs (else at least 0) and at most N; the CPUs are
apportioned by largest remainder, ties going to the higher weight, then to the VM named first.

Output: a table (name, priority, weight to 4 decimals, vcpus), or with --json exactly one JSON object:
  {"alpha": A, "weights": {"NAME": w, ...}, "vcpus": {"NAME": k, ...}}   ("vcpus" only with --cpus)

Example: llmorch weights --cpus 4 A=2 B=1   ->  A 0.3571 1 vcpu, B 0.6429 3 vcpus

Exit status: 0 done; 2 bad arguments (a priority that is not a positive number, A outside [0, 1],
N < 1, a duplicate NAME, no VMs).
)";

struct Vm {
  std::string name;
  double priority = 1.0;
};

struct Options {
  double alpha = policy::kDefaultAlpha;
  int cpus = 0;  // 0: not asked for
  bool json = false;
  bool help = false;
  std::vector<Vm> vms;
};

Vm parse_vm(const std::string& arg) {
  const std::size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw UsageError("'" + arg + "' is not NAME=PRIORITY (for example web=1)");
  }
  Vm vm{arg.substr(0, eq)};
  const std::string value = arg.substr(eq + 1);
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, vm.priority);
  if (ec != std::errc{} || ptr != end || !(vm.priority > 0.0) || !std::isfinite(vm.priority)) {
    throw UsageError("the priority of '" + vm.name + "' must be a positive number, got '" + value + "'");
  }
  return vm;
}

Options parse(const std::vector<std::string>& args) {
  Options o;
  po::options_description options;  // --help prints kHelp, so the descriptions here are terse
  options.add_options()("help,h", "explain this command")(
      "alpha", po::value<double>(&o.alpha)->default_value(policy::kDefaultAlpha), "alpha")(
      "cpus", po::value<int>(&o.cpus), "host CPUs")("json", "JSON output")("vm", po::value<std::vector<std::string>>(),
                                                                           "NAME=PRIORITY");
  po::positional_options_description positional;
  positional.add("vm", -1);
  const po::variables_map vm = parse_args(args, options, positional);
  o.help = vm.count("help") > 0;
  o.json = vm.count("json") > 0;
  if (o.help) return o;
  if (!(o.alpha >= 0.0 && o.alpha <= 1.0)) {
    std::ostringstream got;
    got << o.alpha;
    throw UsageError("--alpha must be in [0, 1], got " + got.str());
  }
  if (vm.count("cpus") && o.cpus < 1) throw UsageError("--cpus must be at least 1");
  if (!vm.count("vm")) throw UsageError("give at least one NAME=PRIORITY");
  std::set<std::string> seen;
  for (const std::string& arg : vm["vm"].as<std::vector<std::string>>()) {
    o.vms.push_back(parse_vm(arg));
    if (!seen.insert(o.vms.back().name).second) {
      throw UsageError("VM name '" + o.vms.back().name + "' is given twice");
    }
  }
  return o;
}

// The plain formula's whole CPUs: min 1 each when there are enough CPUs (else 0), max all of them.
std::vector<int> whole_cpus(const std::vector<double>& weights, int cpus) {
  const int min_each = cpus >= static_cast<int>(weights.size()) ? 1 : 0;
  return policy::apportion(weights, cpus, std::vector<int>(weights.size(), min_each),
                           std::vector<int>(weights.size(), cpus));
}

void print_json(std::ostream& out, const Options& o, const std::vector<double>& weights,
                const std::vector<int>& vcpus) {
  nlohmann::ordered_json doc;  // keeps the VMs in command-line order
  doc["alpha"] = o.alpha;
  doc["weights"] = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < o.vms.size(); ++i) doc["weights"][o.vms[i].name] = weights[i];
  if (!vcpus.empty()) {
    for (std::size_t i = 0; i < o.vms.size(); ++i) doc["vcpus"][o.vms[i].name] = vcpus[i];
  }
  out << doc.dump() << "\n";
}

void print_table(std::ostream& out, const Options& o, const std::vector<double>& weights,
                 const std::vector<int>& vcpus) {
  std::size_t width = 4;  // "NAME"
  for (const Vm& vm : o.vms) width = std::max(width, vm.name.size());
  out << std::left << std::setw(width + 2) << "NAME" << std::setw(10) << "PRIORITY" << std::setw(8) << "WEIGHT"
      << (vcpus.empty() ? "" : "VCPUS") << "\n";
  for (std::size_t i = 0; i < o.vms.size(); ++i) {
    out << std::left << std::setw(width + 2) << o.vms[i].name << std::setw(10) << o.vms[i].priority << std::fixed
        << std::setprecision(4) << weights[i] << std::defaultfloat;
    if (!vcpus.empty()) out << "  " << vcpus[i];
    out << "\n";
  }
  out << "alpha " << o.alpha;
  if (!vcpus.empty()) out << ", " << o.cpus << " CPUs";
  out << "\n";
}

}  // namespace

int cmd_weights(const std::vector<std::string>& args, Io io) {
  Options o;
  try {
    o = parse(args);
  } catch (const UsageError& e) {
    io.err << "llmorch weights: " << e.what() << "; 'llmorch weights --help' explains\n";
    return kExitUsage;
  }
  if (o.help) {
    io.out << kHelp;
    return kExitOk;
  }
  std::vector<double> priorities;
  for (const Vm& vm : o.vms) priorities.push_back(vm.priority);
  const std::vector<double> weights = policy::compute_weights(priorities, o.alpha);
  const std::vector<int> vcpus = o.cpus > 0 ? whole_cpus(weights, o.cpus) : std::vector<int>{};
  if (o.json) {
    print_json(io.out, o, weights, vcpus);
  } else {
    print_table(io.out, o, weights, vcpus);
  }
  return kExitOk;
}

}  // namespace llmorch::cli
