// Domain XML generation and metadata parsing with pugixml (which does all escaping).
#include "llmorch/orch/domain_xml.h"

#include <algorithm>
#include <charconv>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <pugixml.hpp>

#include "llmorch/orch/config.h"

namespace llmorch::orch {
namespace {

using policy::CpuId;
using policy::CpuPolicy;

// ---------------------------------------------------------------------------------------------
// Small formatting helpers.

std::string num(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  return std::string(buf, end);
}

// Keeps the order (dedicated pins: position i is vCPU i), unlike format_cpu_list.
std::string ordered_list(const std::vector<int>& ids) {
  std::string out;
  for (int id : ids) {
    if (!out.empty()) out += ',';
    out += std::to_string(id);
  }
  return out;
}

std::vector<int> parse_ordered_list(std::string_view text) {
  std::vector<int> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto part = text.substr(0, comma);
    int v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || p != part.data() + part.size()) throw std::invalid_argument("bad id list");
    out.push_back(v);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return out;
}

std::string cpuset(const std::vector<int>& ids) { return format_cpu_list({ids.begin(), ids.end()}); }

std::vector<int> parse_cpuset(std::string_view text) {
  auto s = parse_cpu_list(std::string(text));
  return {s.begin(), s.end()};
}

std::string policy_name(CpuPolicy p) { return std::string(policy::to_string(p)); }

CpuPolicy parse_policy(std::string_view s) {
  if (const auto p = policy::cpu_policy_from_string(s)) return *p;
  throw std::invalid_argument("cpu policy '" + std::string(s.substr(0, 32)) + "' is neither dedicated nor shared");
}

pugi::xml_node child_text(pugi::xml_node parent, const char* name, const std::string& text) {
  auto n = parent.append_child(name);
  n.text().set(text.c_str());
  return n;
}

void attr(pugi::xml_node n, const char* name, const std::string& value) {
  n.append_attribute(name).set_value(value.c_str());
}

std::string to_string(const pugi::xml_document& doc) {
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration, pugi::encoding_utf8);
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// Validation of a spec: inconsistencies are the caller's bug, reported precisely.

[[noreturn]] void bad_spec(const std::string& name, const std::string& why) {
  throw std::invalid_argument("cannot build the domain XML for VM '" + name + "': " + why);
}

void validate(const DomainSpec& s) {
  const auto& t = s.tmpl;
  const auto& p = s.placement;
  if (!valid_vm_name(s.name)) bad_spec(s.name, "the name must match [A-Za-z0-9_.-]{1,64}");
  if (s.domain_type != "kvm" && s.domain_type != "qemu")
    bad_spec(s.name, "domain type '" + s.domain_type + "' is neither kvm nor qemu");
  if (t.vcpus < 1 || t.max_vcpus < t.vcpus) bad_spec(s.name, "need 1 <= vcpus <= max_vcpus");
  if (t.memory_mib == 0 || t.max_memory_mib < t.memory_mib) bad_spec(s.name, "need 0 < memory_mib <= max_memory_mib");
  if (p.nodes.empty()) bad_spec(s.name, "the placement names no host node");
  if (p.cpu_policy != t.cpu_policy)
    bad_spec(s.name, "the placement's CPU policy (" + policy_name(p.cpu_policy) + ") differs from the template's (" +
                         policy_name(t.cpu_policy) + ")");
  if (p.hugepage_kib != t.hugepage_kib)
    bad_spec(s.name, "the placement's hugepage size (" + std::to_string(p.hugepage_kib) +
                         " KiB) differs from the template's (" + std::to_string(t.hugepage_kib) + " KiB)");
  const auto held = p.cpus.size();
  if (p.cpu_policy == CpuPolicy::Dedicated &&
      (held < static_cast<std::size_t>(t.vcpus) || held > static_cast<std::size_t>(t.max_vcpus)))
    bad_spec(s.name, "a dedicated placement needs between vcpus (" + std::to_string(t.vcpus) + ") and max_vcpus (" +
                         std::to_string(t.max_vcpus) + ") host CPUs, it has " + std::to_string(held));
  if (p.cpus.empty()) bad_spec(s.name, "the placement has no host CPUs");
  if (p.cells.size() > 1) {
    std::set<int> seen;
    std::uint64_t mem = 0;
    for (const auto& c : p.cells) {
      if (c.vcpus.empty()) bad_spec(s.name, "guest cell on node " + std::to_string(c.host_node) + " has no vCPU");
      for (int v : c.vcpus)
        if (v < 0 || v >= t.max_vcpus || !seen.insert(v).second)
          bad_spec(s.name, "vCPU " + std::to_string(v) + " is out of range or in two guest cells");
      mem += c.memory_mib;
    }
    if (seen.empty() || *seen.rbegin() + 1 != static_cast<int>(seen.size()))
      bad_spec(s.name, "the guest cells must cover vCPUs 0.." + std::to_string(seen.size() - 1) + " without gaps");
    if (mem != t.max_memory_mib)
      bad_spec(s.name, "the guest cells' memory (" + std::to_string(mem) + " MiB) differs from max_memory_mib (" +
                           std::to_string(t.max_memory_mib) + ")");
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering, one section per function, in libvirt's element order.

// with_namespace false: plain element names, no declaration (virDomainSetMetadata adds its own).
void render_metadata_into(pugi::xml_node parent, const VmFacts& f, bool with_namespace) {
  const std::string pfx = with_namespace ? std::string(kMetadataPrefix) + ":" : "";
  auto el = [&](pugi::xml_node n, const char* local) { return n.append_child((pfx + local).c_str()); };
  auto vm = el(parent, "vm");
  if (with_namespace) attr(vm, ("xmlns:" + std::string(kMetadataPrefix)).c_str(), kMetadataNamespace);
  attr(el(vm, "template"), "path", f.template_path);
  auto pr = el(vm, "priority");
  attr(pr, "value", num(f.priority));
  attr(pr, "min", num(f.priority_min));
  attr(pr, "max", num(f.priority_max));
  auto vc = el(vm, "vcpus");
  attr(vc, "current", std::to_string(f.vcpus));
  attr(vc, "max", std::to_string(f.max_vcpus));
  if (f.vcpus_min != 1) attr(vc, "min", std::to_string(f.vcpus_min));  // absent: 1 (older metadata too)
  auto mem = el(vm, "memory");
  attr(mem, "current_mib", std::to_string(f.memory_mib));
  attr(mem, "max_mib", std::to_string(f.max_memory_mib));
  attr(mem, "floor_mib", std::to_string(f.memory_floor_mib));
  attr(mem, "floor_max_mib", std::to_string(f.memory_floor_max_mib));

  const auto& p = f.placement;
  auto pl = el(vm, "placement");
  attr(pl, "name", p.name);
  attr(pl, "policy", policy_name(p.cpu_policy));
  attr(pl, "vcpus", std::to_string(p.vcpus));
  attr(pl, "hugepage_kib", std::to_string(p.hugepage_kib));
  attr(pl, "nodes", ordered_list(p.nodes));
  attr(pl, "cpus", ordered_list(p.cpus));
  for (const auto& [node, mib] : p.memory_mib_per_node) {
    auto n = el(pl, "node");
    attr(n, "id", std::to_string(node));
    attr(n, "memory_mib", std::to_string(mib));
  }
  for (const auto& c : p.cells) {
    auto n = el(pl, "cell");
    attr(n, "node", std::to_string(c.host_node));
    attr(n, "vcpus", cpuset(c.vcpus));
    attr(n, "memory_mib", std::to_string(c.memory_mib));
  }
}

void render_vcpus_and_tuning(pugi::xml_node dom, const DomainSpec& s) {
  const auto& p = s.placement;
  auto vcpu = child_text(dom, "vcpu", std::to_string(s.tmpl.max_vcpus));
  attr(vcpu, "placement", "static");
  attr(vcpu, "current", std::to_string(s.tmpl.vcpus));

  auto tune = dom.append_child("cputune");
  child_text(tune, "shares", std::to_string(s.cpu_shares));
  const std::string pool = cpuset(p.cpus);
  for (int v = 0; v < s.tmpl.max_vcpus; ++v) {
    // Dedicated vCPUs beyond the CPUs held start offline and may run on any of them until llmorchd
    // gives them a CPU of their own.
    const bool own = p.cpu_policy == CpuPolicy::Dedicated && static_cast<std::size_t>(v) < p.cpus.size();
    auto pin = tune.append_child("vcpupin");
    attr(pin, "vcpu", std::to_string(v));
    attr(pin, "cpuset", own ? std::to_string(p.cpus[v]) : pool);
  }
  attr(tune.append_child("emulatorpin"), "cpuset", s.emulator_cpus.empty() ? pool : cpuset(s.emulator_cpus));
}

void render_numatune(pugi::xml_node dom, const DomainSpec& s) {
  const auto& p = s.placement;
  auto tune = dom.append_child("numatune");
  auto mem = tune.append_child("memory");
  attr(mem, "mode", "strict");
  attr(mem, "nodeset", cpuset(p.nodes));
  if (p.cells.size() < 2) return;
  for (std::size_t i = 0; i < p.cells.size(); ++i) {
    auto mn = tune.append_child("memnode");
    attr(mn, "cellid", std::to_string(i));
    attr(mn, "mode", "strict");
    attr(mn, "nodeset", std::to_string(p.cells[i].host_node));
  }
}

void render_hugepages(pugi::xml_node dom, const DomainSpec& s) {
  if (s.placement.hugepage_kib == 0) return;
  auto page = dom.append_child("memoryBacking").append_child("hugepages").append_child("page");
  attr(page, "size", std::to_string(s.placement.hugepage_kib));
  attr(page, "unit", "KiB");
  // nodeset names guest cells; only meaningful (and only accepted) when the guest has cells.
  if (s.placement.cells.size() > 1) attr(page, "nodeset", "0-" + std::to_string(s.placement.cells.size() - 1));
}

void render_os(pugi::xml_node dom, const DomainSpec& s) {
  auto os = dom.append_child("os");
  auto type = child_text(os, "type", "hvm");
  attr(type, "arch", "x86_64");
  attr(type, "machine", "pc");
  if (!s.tmpl.kernel.empty()) {
    child_text(os, "kernel", s.tmpl.kernel);
    if (!s.tmpl.initrd.empty()) child_text(os, "initrd", s.tmpl.initrd);
    if (!s.tmpl.kernel_args.empty()) child_text(os, "cmdline", s.tmpl.kernel_args);
  } else {
    attr(os.append_child("boot"), "dev", "hd");
  }
}

void render_cpu(pugi::xml_node dom, const DomainSpec& s) {
  const auto& cells = s.placement.cells;
  // KVM: expose the host's vector extensions (AVX2/AVX-512 matter for CPU inference). TCG cannot.
  if (s.domain_type == "kvm") {
    auto cpu = dom.append_child("cpu");
    attr(cpu, "mode", "host-passthrough");
  }
  if (cells.size() < 2) return;
  auto cpu = dom.child("cpu") ? dom.child("cpu") : dom.append_child("cpu");
  auto numa = cpu.append_child("numa");
  for (std::size_t i = 0; i < cells.size(); ++i) {
    auto c = numa.append_child("cell");
    attr(c, "id", std::to_string(i));
    attr(c, "cpus", cpuset(cells[i].vcpus));
    attr(c, "memory", std::to_string(cells[i].memory_mib));
    attr(c, "unit", "MiB");
  }
}

void render_devices(pugi::xml_node dom, const DomainSpec& s) {
  auto dev = dom.append_child("devices");
  if (!s.tmpl.disk.empty()) {
    auto disk = dev.append_child("disk");
    attr(disk, "type", "file");
    attr(disk, "device", "disk");
    auto drv = disk.append_child("driver");
    attr(drv, "name", "qemu");
    const bool qcow2 = s.tmpl.disk.ends_with(".qcow2");
    attr(drv, "type", qcow2 ? "qcow2" : "raw");
    attr(disk.append_child("source"), "file", s.tmpl.disk);
    auto target = disk.append_child("target");
    attr(target, "dev", "vda");
    attr(target, "bus", "virtio");
  }
  attr(dev.append_child("controller"), "type", "virtio-serial");
  auto serial = dev.append_child("serial");
  attr(serial, "type", "pty");
  auto log = serial.append_child("log");
  attr(log, "file", "/var/log/libvirt/qemu/" + s.name + "-serial.log");
  attr(log, "append", "off");
  attr(serial.append_child("target"), "port", "0");
  auto console = dev.append_child("console");
  attr(console, "type", "pty");
  auto ct = console.append_child("target");
  attr(ct, "type", "serial");
  attr(ct, "port", "0");
  auto chan = dev.append_child("channel");
  attr(chan, "type", "unix");
  attr(chan.append_child("source"), "mode", "bind");  // no path: libvirt picks one
  auto tt = chan.append_child("target");
  attr(tt, "type", "virtio");
  attr(tt, "name", kAgentChannelName);
  auto balloon = dev.append_child("memballoon");
  attr(balloon, "model", "virtio");
  attr(balloon.append_child("stats"), "period", std::to_string(kBalloonStatsPeriodS));
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers: pugixml knows no namespaces, so match prefixes against the declared URI.

std::string_view local_name(std::string_view qname) {
  auto colon = qname.find(':');
  return colon == std::string_view::npos ? qname : qname.substr(colon + 1);
}

bool is_llmorch_root(pugi::xml_node n) {
  std::string_view q = n.name();
  if (local_name(q) != "vm") return false;
  auto colon = q.find(':');
  std::string decl = colon == std::string_view::npos ? "xmlns" : "xmlns:" + std::string(q.substr(0, colon));
  return std::string_view(n.attribute(decl.c_str()).value()) == kMetadataNamespace;
}

pugi::xml_node child_local(pugi::xml_node parent, std::string_view local) {
  for (auto c : parent.children())
    if (c.type() == pugi::node_element && local_name(c.name()) == local) return c;
  return {};
}

pugi::xml_node find_llmorch_root(const pugi::xml_document& doc) {
  auto top = doc.document_element();
  if (is_llmorch_root(top)) return top;
  if (std::string_view(top.name()) != "domain") return {};
  for (auto c : top.child("metadata").children())
    if (is_llmorch_root(c)) return c;
  return {};
}

// Required attribute parsed as T; throws std::invalid_argument when missing or malformed.
template <typename T>
T get(pugi::xml_node n, const char* name) {
  const std::string where = "attribute '" + std::string(name) + "' of <" + std::string(local_name(n.name())) + ">";
  auto a = n.attribute(name);
  if (!a) throw std::invalid_argument(where + " is missing");
  std::string_view s = a.value();
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size())
    throw std::invalid_argument(where + " ('" + std::string(s.substr(0, 32)) + "') is not a number");
  return v;
}

// Metadata of older llmorch repeated the CPU policy in <cpu policy> and the hugepage size in
// <hugepages size_kib> next to <placement>. Copies that agree mark the facts old_format (rewritten
// once by llmorchd); copies that disagree make the metadata bad, because which one is true cannot be
// known.
void read_old_copies(pugi::xml_node vm, VmFacts& f) {
  const auto cpu = child_local(vm, "cpu");
  const auto huge = child_local(vm, "hugepages");
  if (cpu) {
    const CpuPolicy old = parse_policy(cpu.attribute("policy").value());
    if (old != f.placement.cpu_policy)
      throw std::invalid_argument(fmt::format(
          "<cpu policy='{}'> disagrees with <placement policy='{}'>; redefine the VM from its template (llmorch "
          "remove, then llmorch place)",
          policy_name(old), policy_name(f.placement.cpu_policy)));
    f.old_format = true;
  }
  if (huge) {
    const auto old = get<std::uint64_t>(huge, "size_kib");
    if (old != f.placement.hugepage_kib)
      throw std::invalid_argument(fmt::format(
          "<hugepages size_kib='{}'> disagrees with <placement hugepage_kib='{}'>; redefine the VM from its "
          "template (llmorch remove, then llmorch place)",
          old, f.placement.hugepage_kib));
    f.old_format = true;
  }
}

VmFacts parse_facts(pugi::xml_node vm) {
  VmFacts f;
  f.template_path = child_local(vm, "template").attribute("path").value();
  auto pr = child_local(vm, "priority");
  f.priority = get<double>(pr, "value");
  f.priority_min = get<double>(pr, "min");
  f.priority_max = get<double>(pr, "max");
  auto vc = child_local(vm, "vcpus");
  f.vcpus = get<int>(vc, "current");
  f.max_vcpus = get<int>(vc, "max");
  f.vcpus_min = vc.attribute("min") ? get<int>(vc, "min") : 1;
  auto mem = child_local(vm, "memory");
  f.memory_mib = get<std::uint64_t>(mem, "current_mib");
  f.max_memory_mib = get<std::uint64_t>(mem, "max_mib");
  f.memory_floor_mib = get<std::uint64_t>(mem, "floor_mib");
  f.memory_floor_max_mib = mem.attribute("floor_max_mib") ? get<std::uint64_t>(mem, "floor_max_mib") : f.memory_mib;

  auto pl = child_local(vm, "placement");
  auto& p = f.placement;
  p.name = pl.attribute("name").value();
  p.cpu_policy = parse_policy(pl.attribute("policy").value());
  p.vcpus = get<int>(pl, "vcpus");
  p.hugepage_kib = get<std::uint64_t>(pl, "hugepage_kib");
  p.nodes = parse_ordered_list(pl.attribute("nodes").value());
  p.cpus = parse_ordered_list(pl.attribute("cpus").value());
  for (auto c : pl.children()) {
    auto local = local_name(c.name());
    if (local == "node") {
      p.memory_mib_per_node[get<int>(c, "id")] = get<std::uint64_t>(c, "memory_mib");
    } else if (local == "cell") {
      p.cells.push_back(
          {get<int>(c, "node"), parse_cpuset(c.attribute("vcpus").value()), get<std::uint64_t>(c, "memory_mib")});
    }
  }
  read_old_copies(vm, f);
  return f;
}

}  // namespace

std::uint64_t floor_claim_cap(const VmFacts& f) {
  if (f.memory_floor_max_mib) return f.memory_floor_max_mib;
  return f.memory_mib ? f.memory_mib : f.max_memory_mib;
}

std::string facts_problem(const VmFacts& f) { return priority_problem(f.priority, f.priority_min, f.priority_max); }

VmFacts make_facts(const std::string& template_path, const VmTemplate& t, const policy::Placement& p) {
  VmFacts f;
  f.template_path = template_path;
  f.priority = t.priority;
  f.priority_min = t.priority_min;
  f.priority_max = t.priority_max;
  f.vcpus = t.vcpus;
  f.max_vcpus = t.max_vcpus;
  f.vcpus_min = t.vcpus_min;
  f.memory_mib = t.memory_mib;
  f.max_memory_mib = t.max_memory_mib;
  f.memory_floor_mib = t.memory_floor_mib;
  f.memory_floor_max_mib = t.memory_floor_max_mib ? t.memory_floor_max_mib : t.memory_mib;  // unset: memory_mib
  f.placement = p;  // its cpu_policy and hugepage_kib are the VM's (render_domain_xml checks the template agrees)
  return f;
}

bool valid_vm_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
  });
}

policy::Placement cells_up_to(const policy::Placement& placement, int max_vcpus) {
  policy::Placement p = placement;
  if (p.cells.empty()) return p;
  std::size_t covered = 0;
  for (const auto& c : p.cells) covered += c.vcpus.size();
  if (covered >= static_cast<std::size_t>(max_vcpus)) return p;
  // Largest remainder: cell i gets extra * size_i / covered, the leftovers to the largest remainders
  // (ties to the earlier cell). New vCPU ids follow the existing ones, cell by cell.
  const std::size_t extra = static_cast<std::size_t>(max_vcpus) - covered;
  std::vector<std::size_t> add(p.cells.size());
  std::vector<std::pair<std::size_t, std::size_t>> remainders;  // (remainder, cell)
  std::size_t given = 0;
  for (std::size_t i = 0; i < p.cells.size(); ++i) {
    add[i] = extra * p.cells[i].vcpus.size() / covered;
    given += add[i];
    remainders.emplace_back(extra * p.cells[i].vcpus.size() % covered, i);
  }
  std::stable_sort(remainders.begin(), remainders.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (std::size_t j = 0; given < extra; ++j, ++given) ++add[remainders[j].second];
  int next = static_cast<int>(covered);
  for (std::size_t i = 0; i < p.cells.size(); ++i)
    for (std::size_t k = 0; k < add[i]; ++k) p.cells[i].vcpus.push_back(next++);
  return p;
}

std::string render_domain_xml(const DomainSpec& spec) {
  validate(spec);
  DomainSpec s = spec;
  s.placement = cells_up_to(spec.placement, spec.tmpl.max_vcpus);
  pugi::xml_document doc;
  auto dom = doc.append_child("domain");
  attr(dom, "type", s.domain_type);
  child_text(dom, "name", s.name);
  render_metadata_into(dom.append_child("metadata"), make_facts(s.template_path, s.tmpl, s.placement), true);
  attr(child_text(dom, "memory", std::to_string(s.tmpl.max_memory_mib)), "unit", "MiB");
  attr(child_text(dom, "currentMemory", std::to_string(s.tmpl.memory_mib)), "unit", "MiB");
  render_hugepages(dom, s);
  render_vcpus_and_tuning(dom, s);
  render_numatune(dom, s);
  render_os(dom, s);
  auto features = dom.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  render_cpu(dom, s);
  child_text(dom, "on_poweroff", "destroy");
  child_text(dom, "on_reboot", "restart");
  child_text(dom, "on_crash", "destroy");
  render_devices(dom, s);
  return to_string(doc);
}

std::string render_metadata(const VmFacts& facts) {
  pugi::xml_document doc;
  render_metadata_into(doc, facts, true);
  return to_string(doc);
}

std::string render_metadata_body(const VmFacts& facts) {
  pugi::xml_document doc;
  render_metadata_into(doc, facts, false);
  return to_string(doc);
}

std::optional<MetadataRead> read_metadata(std::string_view xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) return std::nullopt;
  auto root = find_llmorch_root(doc);
  if (!root) return std::nullopt;
  MetadataRead out;
  try {
    VmFacts facts = parse_facts(root);
    if (std::string problem = facts_problem(facts); !problem.empty()) {
      out.error = "bad metadata: " + problem;
    } else {
      out.facts = std::move(facts);
    }
  } catch (const std::invalid_argument& e) {
    out.error = std::string("bad metadata: ") + e.what();
  }
  return out;
}

std::optional<VmFacts> parse_metadata(std::string_view xml) {
  auto read = read_metadata(xml);
  if (!read) return std::nullopt;
  return std::move(read->facts);  // malformed metadata counts as none here
}

LiveDomainXml parse_live_domain_xml(std::string_view xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size()) || std::string_view(doc.document_element().name()) != "domain")
    throw std::invalid_argument("not a libvirt domain XML");
  auto dom = doc.document_element();
  LiveDomainXml out;
  auto vcpu = dom.child("vcpu");
  out.vcpus_max = vcpu.text().as_int();
  out.vcpus_current = vcpu.attribute("current") ? vcpu.attribute("current").as_int() : out.vcpus_max;
  if (auto cpuset = vcpu.attribute("cpuset")) out.vcpu_cpuset = parse_cpuset(cpuset.value());
  out.vcpu_placement_auto = std::string_view(vcpu.attribute("placement").value()) == "auto";
  auto tune = dom.child("cputune");
  for (auto pin : tune.children("vcpupin"))
    out.vcpu_pins[pin.attribute("vcpu").as_int()] = parse_cpuset(pin.attribute("cpuset").value());
  if (auto emu = tune.child("emulatorpin")) out.emulator_pins = parse_cpuset(emu.attribute("cpuset").value());
  if (auto shares = tune.child("shares")) out.cpu_shares = shares.text().as_ullong();
  for (auto chan : dom.child("devices").children("channel"))
    if (std::string_view(chan.child("target").attribute("name").value()) == kAgentChannelName)
      out.channel_path = chan.child("source").attribute("path").value();
  return out;
}

std::optional<std::vector<std::vector<policy::CpuId>>> effective_vcpu_pins(const LiveDomainXml& live, int host_cpus) {
  if (live.vcpu_placement_auto) return std::nullopt;
  std::vector<policy::CpuId> every(static_cast<std::size_t>(std::max(host_cpus, 0)));
  std::iota(every.begin(), every.end(), 0);
  const std::vector<policy::CpuId>& fallback = live.vcpu_cpuset.empty() ? every : live.vcpu_cpuset;
  std::vector<std::vector<policy::CpuId>> pins(static_cast<std::size_t>(std::max(live.vcpus_max, 0)));
  for (int v = 0; v < live.vcpus_max; ++v) {
    const auto it = live.vcpu_pins.find(v);
    pins[static_cast<std::size_t>(v)] = it != live.vcpu_pins.end() ? it->second : fallback;
  }
  return pins;
}

}  // namespace llmorch::orch
