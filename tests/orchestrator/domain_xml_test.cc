// Domain XML generation against golden files, metadata round trips, live-XML read-back.
// Regenerate the golden files after an intended change with:
//   LLMORCH_UPDATE_GOLDEN=1 ctest --test-dir BUILD -R DomainXml   (then review `git diff tests/golden`)
#include "llmorch/orch/domain_xml.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

using policy::CpuPolicy;
using policy::GuestCell;
using policy::Placement;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void expect_golden(const std::string& actual, const std::string& file) {
  const std::string path = std::string(LLMORCH_GOLDEN_DIR) + "/" + file;
  const char* update = std::getenv("LLMORCH_UPDATE_GOLDEN");
  if (update && std::string(update) == "1") {
    std::ofstream(path) << actual;
    GTEST_SKIP() << "rewrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path << " is missing; run with LLMORCH_UPDATE_GOLDEN=1 to create it";
  EXPECT_EQ(actual, read_file(path)) << "generated XML differs from " << path
                                     << "; if intended, rerun with LLMORCH_UPDATE_GOLDEN=1";
}

VmTemplate base_template() {
  VmTemplate t;
  t.vcpus = 2;
  t.max_vcpus = 2;
  t.memory_mib = 1024;
  t.max_memory_mib = 1024;
  t.memory_floor_mib = 512;
  t.priority = 2;
  t.priority_min = 1;
  t.priority_max = 10;
  t.kernel = "/var/lib/libvirt/images/llmorch/vmlinuz";
  t.initrd = "/var/lib/libvirt/images/llmorch/initrd.gz";
  t.kernel_args = "console=ttyS0 llmorch.priority=2";
  return t;
}

DomainSpec dedicated_single_node() {
  DomainSpec s;
  s.name = "llm-small";
  s.template_path = "/etc/llmorch/templates/small.conf";
  s.tmpl = base_template();
  s.tmpl.vcpus = 2;
  s.tmpl.max_vcpus = 4;
  // Placement reserved the start count (2 CPUs); vCPUs 2 and 3 start offline on both.
  s.placement = {.name = "llm-small",
                 .nodes = {1},
                 .cpus = {9, 8},
                 .memory_mib_per_node = {{1, 1024}},
                 .cells = {{1, {0, 1}, 1024}},
                 .cpu_policy = CpuPolicy::Dedicated,
                 .hugepage_kib = 0,
                 .vcpus = 2};
  s.domain_type = "kvm";
  s.cpu_shares = 2048;
  return s;
}

DomainSpec shared_vm() {
  DomainSpec s;
  s.name = "batch_job.1";
  s.template_path = "templates/batch.conf";
  s.tmpl = base_template();
  s.tmpl.cpu_policy = CpuPolicy::Shared;
  s.tmpl.priority = 5.5;
  s.tmpl.memory_mib = 768;
  s.placement = {.name = "batch_job.1",
                 .nodes = {0},
                 .cpus = {2, 3, 4, 5},
                 .memory_mib_per_node = {{0, 1024}},
                 .cells = {{0, {0, 1}, 1024}},
                 .cpu_policy = CpuPolicy::Shared,
                 .hugepage_kib = 0,
                 .vcpus = 2};
  s.domain_type = "qemu";
  s.emulator_cpus = {0, 1};
  return s;
}

DomainSpec spanning_hugepages() {
  DomainSpec s;
  s.name = "llm-big";
  s.template_path = "templates/big & <wide>.conf";  // must come out escaped
  s.tmpl = base_template();
  s.tmpl.vcpus = 4;
  s.tmpl.max_vcpus = 4;
  s.tmpl.memory_mib = 8192;
  s.tmpl.max_memory_mib = 8192;
  s.tmpl.hugepage_kib = 2048;
  s.placement = {.name = "llm-big",
                 .nodes = {0, 1},
                 .cpus = {6, 7, 8, 9},
                 .memory_mib_per_node = {{0, 4096}, {1, 4096}},
                 .cells = {{0, {0, 1}, 4096}, {1, {2, 3}, 4096}},
                 .cpu_policy = CpuPolicy::Dedicated,
                 .hugepage_kib = 2048,
                 .vcpus = 4};
  s.domain_type = "kvm";
  return s;
}

DomainSpec disk_boot() {
  DomainSpec s = dedicated_single_node();
  s.name = "llm-disk";
  s.tmpl.kernel.clear();
  s.tmpl.initrd.clear();
  s.tmpl.kernel_args.clear();
  s.tmpl.disk = "/var/lib/libvirt/images/llm-disk.qcow2";
  s.tmpl.max_vcpus = 2;
  s.placement.cpus = {4, 5};
  s.placement.cells = {{1, {0, 1}, 1024}};
  s.placement.vcpus = 2;
  return s;
}

TEST(DomainXmlGolden, DedicatedSingleNode) {
  expect_golden(render_domain_xml(dedicated_single_node()), "dedicated_single_node.xml");
}
TEST(DomainXmlGolden, SharedVm) { expect_golden(render_domain_xml(shared_vm()), "shared.xml"); }
TEST(DomainXmlGolden, SpanningTwoNodesHugepages) {
  expect_golden(render_domain_xml(spanning_hugepages()), "spanning_hugepages.xml");
}
TEST(DomainXmlGolden, DiskBoot) { expect_golden(render_domain_xml(disk_boot()), "disk_boot.xml"); }

void expect_same_facts(const VmFacts& a, const VmFacts& b) {
  EXPECT_EQ(a.template_path, b.template_path);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.priority_min, b.priority_min);
  EXPECT_EQ(a.priority_max, b.priority_max);
  EXPECT_EQ(a.vcpus, b.vcpus);
  EXPECT_EQ(a.max_vcpus, b.max_vcpus);
  EXPECT_EQ(a.vcpus_min, b.vcpus_min);
  EXPECT_EQ(a.memory_mib, b.memory_mib);
  EXPECT_EQ(a.max_memory_mib, b.max_memory_mib);
  EXPECT_EQ(a.memory_floor_mib, b.memory_floor_mib);
  EXPECT_EQ(a.memory_floor_max_mib, b.memory_floor_max_mib);
  const auto& p = a.placement;
  const auto& q = b.placement;
  EXPECT_EQ(p.name, q.name);
  EXPECT_EQ(p.cpu_policy, q.cpu_policy);
  EXPECT_EQ(p.hugepage_kib, q.hugepage_kib);
  EXPECT_EQ(a.old_format, b.old_format);
  EXPECT_EQ(p.nodes, q.nodes);
  EXPECT_EQ(p.cpus, q.cpus);  // order matters: cpus[i] is vCPU i's CPU
  EXPECT_EQ(p.memory_mib_per_node, q.memory_mib_per_node);
  ASSERT_EQ(p.cells.size(), q.cells.size());
  for (std::size_t i = 0; i < p.cells.size(); ++i) {
    EXPECT_EQ(p.cells[i].host_node, q.cells[i].host_node);
    EXPECT_EQ(p.cells[i].vcpus, q.cells[i].vcpus);
    EXPECT_EQ(p.cells[i].memory_mib, q.cells[i].memory_mib);
  }
  EXPECT_EQ(p.cpu_policy, q.cpu_policy);
  EXPECT_EQ(p.hugepage_kib, q.hugepage_kib);
  EXPECT_EQ(p.vcpus, q.vcpus);
}

class MetadataRoundTrip : public ::testing::TestWithParam<DomainSpec (*)()> {};

TEST_P(MetadataRoundTrip, FromWholeDomainXml) {
  DomainSpec s = GetParam()();
  auto facts = parse_metadata(render_domain_xml(s));
  ASSERT_TRUE(facts.has_value());
  // The metadata records the cells completed up to max_vcpus.
  expect_same_facts(*facts, make_facts(s.template_path, s.tmpl, cells_up_to(s.placement, s.tmpl.max_vcpus)));
}

TEST_P(MetadataRoundTrip, FromFragment) {
  DomainSpec s = GetParam()();
  VmFacts f = make_facts(s.template_path, s.tmpl, s.placement);
  f.priority_min = 0.1;
  f.priority = 0.125;  // within [priority_min, priority_max], or it is bad metadata
  auto back = parse_metadata(render_metadata(f));
  ASSERT_TRUE(back.has_value());
  expect_same_facts(*back, f);
}

INSTANTIATE_TEST_SUITE_P(AllShapes, MetadataRoundTrip,
                         ::testing::Values(&dedicated_single_node, &shared_vm, &spanning_hugepages, &disk_boot));

// vcpus_min (issue 13) is written only when it is not the default, so older metadata (and the golden
// files) read back as vcpus_min 1.
TEST(Metadata, VcpusMinRoundTripsAndDefaultsToOne) {
  DomainSpec s = shared_vm();
  s.tmpl.max_vcpus = 4;
  s.tmpl.vcpus_min = 3;
  const VmFacts f = make_facts(s.template_path, s.tmpl, s.placement);
  const std::string xml = render_metadata(f);
  const auto vcpus_element = [](const std::string& x) {
    return x.substr(x.find("vcpus "), x.find("/>", x.find("vcpus ")) - x.find("vcpus "));
  };
  EXPECT_NE(vcpus_element(xml).find("min=\"3\""), std::string::npos) << xml;
  auto back = parse_metadata(xml);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->vcpus_min, 3);
  s.tmpl.vcpus_min = 1;
  const std::string plain = render_metadata(make_facts(s.template_path, s.tmpl, s.placement));
  EXPECT_EQ(vcpus_element(plain).find("min="), std::string::npos) << plain;
  EXPECT_EQ(parse_metadata(plain)->vcpus_min, 1);
}

TEST(Metadata, AcceptsDefaultNamespaceForm) {
  // Namespace-aware tools may write the element with a default namespace and unprefixed children.
  VmFacts f = make_facts("t.conf", shared_vm().tmpl, shared_vm().placement);
  std::string frag = render_metadata(f);
  std::string unprefixed;
  for (std::size_t i = 0; i < frag.size(); ++i) {
    if (frag.compare(i, 8, "llmorch:") == 0) {
      i += 7;  // drop the element prefix
    } else if (frag.compare(i, 14, "xmlns:llmorch=") == 0) {
      unprefixed += "xmlns=";  // declare the namespace as the default one
      i += 13;
    } else {
      unprefixed += frag[i];
    }
  }
  ASSERT_NE(unprefixed.find("xmlns=\"https://llmorch.dev/xmlns/domain/1\""), std::string::npos) << unprefixed;
  auto back = parse_metadata(unprefixed);
  ASSERT_TRUE(back.has_value());
  expect_same_facts(*back, f);
}

TEST(Metadata, BodyForLibvirtCarriesNoNamespace) {
  VmFacts f = make_facts("t.conf", shared_vm().tmpl, shared_vm().placement);
  std::string body = render_metadata_body(f);
  EXPECT_EQ(body.find("xmlns"), std::string::npos) << body;
  EXPECT_EQ(body.find("llmorch:"), std::string::npos) << body;
  EXPECT_EQ(body.rfind("<vm>", 0), 0u) << body;
  EXPECT_FALSE(parse_metadata(body).has_value());  // without the namespace it is not ours
  // Unprefixed children under the prefixed root must parse too (libvirt 9 prefixes every element,
  // as the integration test sees; older versions may not).
  std::string stored = "<domain><metadata>" + body + "</metadata></domain>";
  stored.replace(stored.find("<vm>"), 4, "<llmorch:vm xmlns:llmorch=\"https://llmorch.dev/xmlns/domain/1\">");
  stored.replace(stored.find("</vm>"), 5, "</llmorch:vm>");
  auto back = parse_metadata(stored);
  ASSERT_TRUE(back.has_value());
  expect_same_facts(*back, f);
}

TEST(Metadata, RejectsForeignNamespaceAndMalformedFacts) {
  EXPECT_FALSE(parse_metadata("<domain><name>x</name></domain>").has_value());
  EXPECT_FALSE(parse_metadata("<domain><metadata><other:vm xmlns:other='urn:x'/></metadata></domain>").has_value());
  EXPECT_FALSE(parse_metadata("not xml").has_value());
  std::string frag = render_metadata(make_facts("t", base_template(), shared_vm().placement));
  auto pos = frag.find("max_mib=\"1024\"");
  ASSERT_NE(pos, std::string::npos);
  frag.replace(pos, 14, "max_mib=\"lots\"");
  EXPECT_FALSE(parse_metadata(frag).has_value());
}

// Issue 12, debt 2: the CPU policy and the hugepage size have one home, <placement>. Domains defined
// by older llmorch (fixtures: the golden XML as it rendered them) also carry <cpu policy> and
// <hugepages size_kib>: read when the copies agree and marked old_format, so llmorchd rewrites them
// once; rejected when they disagree.
TEST(Metadata, OneHomeForCpuPolicyAndHugepages) {
  const std::string fresh = render_metadata(make_facts("t", shared_vm().tmpl, shared_vm().placement));
  EXPECT_EQ(fresh.find("cpu policy"), std::string::npos) << fresh;
  EXPECT_EQ(fresh.find("hugepages"), std::string::npos) << fresh;
  const auto back = parse_metadata(fresh);
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->old_format);
  EXPECT_EQ(back->placement.cpu_policy, CpuPolicy::Shared);
}

TEST(Metadata, OldFormatWithAgreeingCopiesIsReadAndMarkedForRewrite) {
  const std::string dir = LLMORCH_METADATA_FIXTURES;
  const auto shared = parse_metadata(read_file(dir + "/old-format-shared.xml"));
  ASSERT_TRUE(shared.has_value());
  EXPECT_TRUE(shared->old_format);
  EXPECT_EQ(shared->placement.cpu_policy, CpuPolicy::Shared);
  EXPECT_EQ(shared->placement.hugepage_kib, 0u);
  const auto huge = parse_metadata(read_file(dir + "/old-format-hugepages.xml"));
  ASSERT_TRUE(huge.has_value());
  EXPECT_TRUE(huge->old_format);
  EXPECT_EQ(huge->placement.cpu_policy, CpuPolicy::Dedicated);
  EXPECT_EQ(huge->placement.hugepage_kib, 2048u);
  // Rewritten, it is the new format and reads back the same.
  const auto again = parse_metadata(render_metadata(*huge));
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->old_format);
  EXPECT_EQ(again->placement.hugepage_kib, 2048u);
  EXPECT_EQ(again->placement.cpus, huge->placement.cpus);
}

TEST(Metadata, OldFormatWithDisagreeingCopiesIsBadMetadata) {
  const std::string dir = LLMORCH_METADATA_FIXTURES;
  auto replaced = [](std::string xml, const std::string& from, const std::string& to) {
    const auto pos = xml.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    if (pos != std::string::npos) xml.replace(pos, from.size(), to);
    return xml;
  };
  const std::string policy = replaced(read_file(dir + "/old-format-shared.xml"), "<llmorch:cpu policy=\"shared\"",
                                      "<llmorch:cpu policy=\"dedicated\"");
  const auto r1 = read_metadata(policy);
  ASSERT_TRUE(r1.has_value());
  EXPECT_FALSE(r1->facts.has_value());
  EXPECT_NE(r1->error.find("<cpu policy='dedicated'> disagrees with <placement policy='shared'>"), std::string::npos)
      << r1->error;
  const std::string pages = replaced(read_file(dir + "/old-format-hugepages.xml"), "size_kib=\"2048\"",
                                     "size_kib=\"1048576\"");
  const auto r2 = read_metadata(pages);
  ASSERT_TRUE(r2.has_value());
  EXPECT_FALSE(r2->facts.has_value());
  EXPECT_NE(r2->error.find("disagrees with <placement hugepage_kib='2048'>"), std::string::npos) << r2->error;
}

TEST(DomainXml, RejectsAPlacementWhosePolicyDiffersFromTheTemplate) {
  DomainSpec s = shared_vm();
  s.placement.cpu_policy = CpuPolicy::Dedicated;
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);
}

TEST(Metadata, WithoutFloorMaxMibItIsMemoryMib) {
  VmTemplate t = base_template();
  t.memory_floor_max_mib = 900;
  std::string frag = render_metadata(make_facts("t", t, shared_vm().placement));
  ASSERT_EQ(parse_metadata(frag)->memory_floor_max_mib, 900u);
  const auto pos = frag.find(" floor_max_mib=\"900\"");
  ASSERT_NE(pos, std::string::npos) << frag;
  frag.erase(pos, std::string(" floor_max_mib=\"900\"").size());  // as older llmorch wrote it
  auto back = parse_metadata(frag);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->memory_floor_max_mib, t.memory_mib);
  EXPECT_EQ(floor_claim_cap(*back), t.memory_mib);
}

// Issue 11, finding 4: priorities nan, inf, 0, denormal or min > max were accepted from metadata and
// made compute_weights throw for the whole host. Now they are "bad metadata", told apart from none.
TEST(Metadata, OutOfRangeOrMalformedNumbersAreBadMetadataNotNone) {
  const std::string frag = render_metadata(make_facts("t", base_template(), shared_vm().placement));
  auto with = [&](const std::string& from, const std::string& to) {
    std::string f = frag;
    const auto pos = f.find(from);
    EXPECT_NE(pos, std::string::npos) << from << " not in " << frag;
    if (pos != std::string::npos) f.replace(pos, from.size(), to);
    return f;
  };
  const std::string value = "value=\"" + std::to_string(static_cast<int>(base_template().priority)) + "\"";
  const std::pair<std::string, std::string> cases[] = {
      {with(value, "value=\"nan\""), "priority (nan)"},
      {with(value, "value=\"inf\""), "priority (inf)"},
      {with(value, "value=\"0\""), "priority (0)"},
      {with(value, "value=\"1e-320\""), "priority"},
      {with(value, "value=\"-3\""), "priority (-3)"},
      {with(" min=\"1\"", " min=\"50\""), "priority_max (10) is less than priority_min (50)"},
      {with(" max=\"10\"", " max=\"1e300\""), "priority_max (1e+300)"},
      {with("max_mib=\"1024\"", "max_mib=\"lots\""), "attribute 'max_mib' of <memory> ('lots') is not a number"},
  };
  for (const auto& [xml, why] : cases) {
    EXPECT_FALSE(parse_metadata(xml).has_value()) << xml;
    const auto read = read_metadata(xml);
    ASSERT_TRUE(read.has_value()) << "bad llmorch metadata taken for none: " << xml;
    EXPECT_FALSE(read->facts.has_value());
    EXPECT_EQ(read->error.rfind("bad metadata: ", 0), 0u) << read->error;
    EXPECT_NE(read->error.find(why), std::string::npos) << read->error;
  }
  EXPECT_FALSE(read_metadata("<domain><name>x</name></domain>").has_value());  // none: not ours
  const auto good = read_metadata(frag);
  ASSERT_TRUE(good && good->facts);
  EXPECT_TRUE(good->error.empty());
}

TEST(DomainXml, ValidatesNames) {
  EXPECT_TRUE(valid_vm_name("llm-a_1.b"));
  EXPECT_TRUE(valid_vm_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_vm_name(std::string(65, 'a')));
  EXPECT_FALSE(valid_vm_name(""));
  EXPECT_FALSE(valid_vm_name(".."));
  EXPECT_FALSE(valid_vm_name("a/b"));
  EXPECT_FALSE(valid_vm_name("a b"));
  EXPECT_FALSE(valid_vm_name("<x>"));
  DomainSpec s = shared_vm();
  s.name = "bad name";
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);
}

TEST(DomainXml, RejectsInconsistentSpecs) {
  DomainSpec s = dedicated_single_node();
  s.placement.cpus = {9};  // 1 CPU for 2 vCPUs at start
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);
  s.placement.cpus = {8, 9, 10, 11, 12};  // 5 CPUs for max_vcpus 4
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);

  s = spanning_hugepages();
  s.placement.cells[1].vcpus = {3};  // vCPU 2 in no cell: a gap
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);

  s = spanning_hugepages();
  s.placement.cells[1].vcpus = {2, 3, 4};  // beyond max_vcpus 4
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);

  s = spanning_hugepages();
  s.placement.cells[1].memory_mib = 1;
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);

  s = shared_vm();
  s.domain_type = "xen";
  EXPECT_THROW(render_domain_xml(s), std::invalid_argument);
}

TEST(LiveDomainXml, ReadsPinsSharesAndChannelPath) {
  // As libvirt reports a running domain: ranges in cpusets, a path filled into the channel source.
  const char* xml = R"(<domain type='qemu' id='3'>
  <name>x</name>
  <vcpu placement='static' current='1'>2</vcpu>
  <cputune><shares>3072</shares><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='0-1,3'/>
    <emulatorpin cpuset='0-1'/></cputune>
  <devices>
    <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/other'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/d-3-x/org.llmorch.agent.0'/>
      <target type='virtio' name='org.llmorch.agent.0' state='disconnected'/></channel>
  </devices></domain>)";
  LiveDomainXml live = parse_live_domain_xml(xml);
  EXPECT_EQ(live.vcpus_current, 1);
  EXPECT_EQ(live.vcpus_max, 2);
  EXPECT_EQ(live.vcpu_pins.at(0), std::vector<int>({1}));
  EXPECT_EQ(live.vcpu_pins.at(1), std::vector<int>({0, 1, 3}));
  EXPECT_EQ(live.emulator_pins, std::vector<int>({0, 1}));
  EXPECT_EQ(live.cpu_shares, 3072u);
  EXPECT_EQ(live.channel_path, "/var/lib/libvirt/qemu/channel/target/d-3-x/org.llmorch.agent.0");
  EXPECT_THROW(parse_live_domain_xml("<network/>"), std::invalid_argument);
}

TEST(LiveDomainXml, GeneratedXmlPinsEveryVcpuUpToMax) {
  LiveDomainXml live = parse_live_domain_xml(render_domain_xml(dedicated_single_node()));
  EXPECT_EQ(live.vcpus_current, 2);
  EXPECT_EQ(live.vcpus_max, 4);
  ASSERT_EQ(live.vcpu_pins.size(), 4u);
  EXPECT_EQ(live.vcpu_pins.at(0), std::vector<int>({9}));
  EXPECT_EQ(live.vcpu_pins.at(1), std::vector<int>({8}));
  EXPECT_EQ(live.vcpu_pins.at(2), std::vector<int>({8, 9}));  // offline at start: any held CPU
  EXPECT_EQ(live.vcpu_pins.at(3), std::vector<int>({8, 9}));
  EXPECT_EQ(live.cpu_shares, 2048u);
  EXPECT_TRUE(live.channel_path.empty());  // libvirt picks the path at start

  live = parse_live_domain_xml(render_domain_xml(shared_vm()));
  for (int v = 0; v < 2; ++v) EXPECT_EQ(live.vcpu_pins.at(v), std::vector<int>({2, 3, 4, 5}));
  EXPECT_EQ(live.emulator_pins, std::vector<int>({0, 1}));
}

// What virDomainGetVcpuPinInfo answers, from the XML: a vCPU's own <vcpupin>, else <vcpu cpuset>,
// else every host CPU; nothing for placement 'auto' (numad's choice is not in the XML).
TEST(LiveDomainXml, EffectivePinsFollowVcpupinThenTheVcpuCpusetThenEveryHostCpu) {
  LiveDomainXml live = parse_live_domain_xml(R"(<domain type='kvm'><name>x</name>
  <vcpu placement='static' cpuset='4-5' current='2'>3</vcpu>
  <cputune><vcpupin vcpu='1' cpuset='7'/></cputune></domain>)");
  EXPECT_EQ(live.vcpu_cpuset, std::vector<int>({4, 5}));
  auto pins = effective_vcpu_pins(live, 8);
  ASSERT_TRUE(pins);
  EXPECT_EQ(*pins, (std::vector<std::vector<int>>{{4, 5}, {7}, {4, 5}}));  // offline vCPU 2 too

  live = parse_live_domain_xml("<domain><name>y</name><vcpu>2</vcpu></domain>");
  pins = effective_vcpu_pins(live, 4);
  ASSERT_TRUE(pins);
  EXPECT_EQ(*pins, (std::vector<std::vector<int>>{{0, 1, 2, 3}, {0, 1, 2, 3}}));

  live = parse_live_domain_xml("<domain><name>z</name><vcpu placement='auto'>2</vcpu></domain>");
  EXPECT_TRUE(live.vcpu_placement_auto);
  EXPECT_FALSE(effective_vcpu_pins(live, 4));

  // llmorch's own XML pins every vCPU up to the maximum.
  live = parse_live_domain_xml(render_domain_xml(dedicated_single_node()));
  pins = effective_vcpu_pins(live, 16);
  ASSERT_TRUE(pins);
  EXPECT_EQ(*pins, (std::vector<std::vector<int>>{{9}, {8}, {8, 9}, {8, 9}}));
}

TEST(DomainXml, DedicatedVmHoldingMoreThanItsStartCount) {
  // After llmorchd gave it a third CPU: vCPU 2 gets its own, vCPU 3 floats over all three.
  DomainSpec s = dedicated_single_node();
  s.placement.cpus = {9, 8, 10};
  LiveDomainXml live = parse_live_domain_xml(render_domain_xml(s));
  EXPECT_EQ(live.vcpu_pins.at(2), std::vector<int>({10}));
  EXPECT_EQ(live.vcpu_pins.at(3), std::vector<int>({8, 9, 10}));
  EXPECT_EQ(live.emulator_pins, std::vector<int>({8, 9, 10}));
}

TEST(DomainXml, SpanningCellsCompletedUpToMaxVcpus) {
  DomainSpec s = spanning_hugepages();
  s.tmpl.max_vcpus = 6;  // vCPUs 4 and 5: one per cell (both cells hold 2)
  std::string xml = render_domain_xml(s);
  EXPECT_NE(xml.find(R"(<cell id="0" cpus="0-1,4" memory="4096" unit="MiB" />)"), std::string::npos) << xml;
  EXPECT_NE(xml.find(R"(<cell id="1" cpus="2-3,5" memory="4096" unit="MiB" />)"), std::string::npos) << xml;
  LiveDomainXml live = parse_live_domain_xml(xml);
  EXPECT_EQ(live.vcpu_pins.at(3), std::vector<int>({9}));
  EXPECT_EQ(live.vcpu_pins.at(4), std::vector<int>({6, 7, 8, 9}));
  auto facts = parse_metadata(xml);
  ASSERT_TRUE(facts.has_value());
  EXPECT_EQ(facts->placement.cells[0].vcpus, std::vector<int>({0, 1, 4}));
  EXPECT_EQ(facts->placement.cells[1].vcpus, std::vector<int>({2, 3, 5}));
}

TEST(DomainXml, CellsGrowInProportionToTheirVcpus) {
  Placement p;
  p.cells = {{0, {0, 1, 2}, 100}, {1, {3}, 100}};
  Placement q = cells_up_to(p, 8);  // 4 extra: 3 to the cell with 3, 1 to the cell with 1
  EXPECT_EQ(q.cells[0].vcpus, std::vector<int>({0, 1, 2, 4, 5, 6}));
  EXPECT_EQ(q.cells[1].vcpus, std::vector<int>({3, 7}));
  q = cells_up_to(p, 5);  // 1 extra: remainders 3/4 vs 1/4
  EXPECT_EQ(q.cells[0].vcpus, std::vector<int>({0, 1, 2, 4}));
  EXPECT_EQ(q.cells[1].vcpus, std::vector<int>({3}));
  EXPECT_EQ(cells_up_to(p, 4).cells[1].vcpus, std::vector<int>({3}));  // already complete
}

}  // namespace
}  // namespace llmorch::orch
