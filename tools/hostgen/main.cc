// llmorch-hostgen: writes libvirt capabilities XML for a host described by a few numbers, or for one of
// the project's named host descriptions (tests/fixtures/hosts/ holds their rendering). Thin: options in,
// render_capabilities() out.
#include <boost/program_options.hpp>

#include <fstream>
#include <iostream>
#include <sstream>

#include "hostgen.h"
#include "llmorch/orch/po_error.h"

namespace po = boost::program_options;
using llmorch::tools::HostSpec;

namespace {

std::vector<std::uint64_t> parse_list(const std::string& text, std::uint64_t scale, const char* option) {
  std::vector<std::uint64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    unsigned long long v = 0;
    try {
      v = std::stoull(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || item[0] == '-')
      throw po::error(std::string("--") + option + ": '" + item + "' is not a non-negative whole number");
    out.push_back(v * scale);
  }
  if (out.empty()) throw po::error(std::string("--") + option + " needs at least one value");
  return out;
}

bool write(const std::string& path, const std::string& xml) {
  if (path.empty() || path == "-") {
    std::cout << xml;
    return true;
  }
  std::ofstream out(path, std::ios::trunc);
  out << xml;
  if (!out) std::cerr << "llmorch-hostgen: cannot write " << path << "\n";
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  HostSpec spec;
  std::string preset, all_dir, output, numbering = "smt-split", memory = "4096", huge2m = "0", huge1g = "0";
  po::options_description opts(
      "Usage: llmorch-hostgen --preset NAME [-o FILE] | --all DIR | --list | [geometry options] [-o FILE]\n"
      "Writes a libvirt host capabilities document (as `virsh capabilities` prints it) for `llmorch plan\n"
      "--capabilities`, tests and simulations. Per-node lists take one value (every node) or one per node.\n"
      "Options");
  opts.add_options()("help,h", "this text")("list", "list the named host descriptions")(
      "preset", po::value(&preset), "a named host description (see --list)")(
      "all", po::value(&all_dir), "write every named description to DIR/NAME.xml")(
      "output,o", po::value(&output), "output file (default: standard output)")(
      "name", po::value(&spec.name)->default_value("custom"), "a name, written in a comment")(
      "sockets", po::value(&spec.sockets)->default_value(1), "sockets")(
      "nodes-per-socket", po::value(&spec.nodes_per_socket)->default_value(1), "NUMA nodes per socket")(
      "cores-per-node", po::value(&spec.cores_per_node)->default_value(2), "cores per node")(
      "threads-per-core", po::value(&spec.threads_per_core)->default_value(1), "hardware threads per core")(
      "numbering", po::value(&numbering), "CPU ids: smt-split (default; siblings n, n+cores), adjacent, interleaved")(
      "memory-mib", po::value(&memory), "memory per node, MiB (list; default 4096)")(
      "hugepages-2m", po::value(&huge2m), "2 MiB pages per node (list; default 0)")(
      "hugepages-1g", po::value(&huge1g), "1 GiB pages per node (list; default 0)")(
      "no-distances", "leave <distances> out (readers assume 10 local, 20 remote)")(
      "same-socket", po::value(&spec.same_socket)->default_value(12), "distance between nodes of one socket")(
      "remote", po::value(&spec.remote)->default_value(21), "distance between nodes of different sockets");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << opts;
      return 0;
    }
    if (vm.count("list")) {
      for (const HostSpec& s : llmorch::tools::presets()) std::cout << s.name << "  " << s.description << "\n";
      return 0;
    }
    if (!all_dir.empty()) {
      for (const HostSpec& s : llmorch::tools::presets())
        if (!write(all_dir + "/" + s.name + ".xml", llmorch::tools::render_capabilities(s))) return 1;
      return 0;
    }
    if (!preset.empty()) {
      const HostSpec* s = llmorch::tools::find_preset(preset);
      if (!s) throw po::error("no host description named '" + preset + "' (see --list)");
      return write(output, llmorch::tools::render_capabilities(*s)) ? 0 : 1;
    }
    if (numbering == "smt-split") spec.numbering = HostSpec::Numbering::SmtSplit;
    else if (numbering == "adjacent") spec.numbering = HostSpec::Numbering::Adjacent;
    else if (numbering == "interleaved") spec.numbering = HostSpec::Numbering::Interleaved;
    else throw po::error("--numbering: '" + numbering + "' is not smt-split, adjacent or interleaved");
    spec.memory_kib = parse_list(memory, 1024, "memory-mib");
    spec.hugepages_2m = parse_list(huge2m, 1, "hugepages-2m");
    spec.hugepages_1g = parse_list(huge1g, 1, "hugepages-1g");
    spec.with_distances = !vm.count("no-distances");
    spec.description = "generated from options";
    return write(output, llmorch::tools::render_capabilities(spec)) ? 0 : 1;
  } catch (const po::error& e) {
    std::cerr << "llmorch-hostgen: " << llmorch::orch::program_options_message(e) << " (see --help)\n";
    return 2;
  } catch (const std::invalid_argument& e) {
    std::cerr << "llmorch-hostgen: " << e.what() << "\n";
    return 2;
  }
}
