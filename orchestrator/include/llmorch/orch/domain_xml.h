// libvirt domain XML for llmorch VMs: generation (pure, pugixml) and reading back llmorch's facts and
// a few live values. No libvirt include: this is plain text in, plain text out.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/orch/template.h"
#include "llmorch/policy/types.h"

namespace llmorch::orch {

// The XML namespace of llmorch's <metadata> element (and its prefix / virDomainSetMetadata key).
inline constexpr const char* kMetadataNamespace = "https://llmorch.dev/xmlns/domain/1";
inline constexpr const char* kMetadataPrefix = "llmorch";
// The virtio-serial port name the in-guest agent looks for.
inline constexpr const char* kAgentChannelName = "org.llmorch.agent.0";
// Seconds between the guest's balloon statistics (<memballoon><stats period=.../>); llmorchd calls
// statistics stale when they have not moved for a few periods.
inline constexpr int kBalloonStatsPeriodS = 2;

// What llmorch knows about a VM beyond libvirt's own view; stored in the domain's <metadata> so a
// restarted orchestrator rebuilds its state from libvirt alone.
struct VmFacts {
  std::string template_path;
  double priority = 1.0;
  double priority_min = 1.0;
  double priority_max = 100.0;
  int vcpus = 1;
  int max_vcpus = 1;
  int vcpus_min = 1;  // fewest online vCPUs (template vcpus_min); metadata <vcpus min=...>, absent: 1
  std::uint64_t memory_mib = 0;
  std::uint64_t max_memory_mib = 0;
  std::uint64_t memory_floor_mib = 0;
  std::uint64_t memory_floor_max_mib = 0;  // most an agent may claim as its floor; 0: memory_mib
  // The CPU policy and the hugepage size live in placement (placement.cpu_policy, .hugepage_kib):
  // one home per fact. Metadata of older llmorch also had them in <cpu policy> and <hugepages
  // size_kib>; read_metadata rejects such metadata when the copies disagree, and marks it old_format
  // when they agree, so that llmorchd rewrites it once (Reconciler::diff, SetMetadata).
  policy::Placement placement;
  bool old_format = false;
};

// The most an agent may claim as the VM's floor: memory_floor_max_mib, else memory_mib, else
// max_memory_mib (0 when none is known).
std::uint64_t floor_claim_cap(const VmFacts& facts);

// Empty when the facts are usable: priorities as priority_problem() (template.h) wants them. Otherwise
// a sentence saying what is wrong.
std::string facts_problem(const VmFacts& facts);

VmFacts make_facts(const std::string& template_path, const VmTemplate& tmpl, const policy::Placement& placement);

struct DomainSpec {
  std::string name;
  std::string template_path;  // recorded in the metadata only
  VmTemplate tmpl;            // max_vcpus and max_memory_mib already resolved (non-zero)
  // Dedicated: placement.cpus holds between tmpl.vcpus and tmpl.max_vcpus host CPUs (placement
  // reserves the start count; llmorchd later moves CPUs between a node's dedicated VMs by weight and
  // load). vCPU i < cpus.size() is pinned to cpus[i]; vCPUs beyond start offline, pinned to all of
  // cpus. Shared: the pool every vCPU floats over.
  // Cells: cover vCPUs 0..k-1 for some k <= max_vcpus (placement splits the start count); the XML and
  // the metadata get them completed up to max_vcpus by cells_up_to().
  policy::Placement placement;
  std::string domain_type = "kvm";  // "kvm" or "qemu", already resolved against the host config
  std::uint64_t cpu_shares = 1024;
  // Host CPUs for QEMU's emulator threads. Empty: the VM's own CPUs (dedicated) or the pool (shared).
  std::vector<policy::CpuId> emulator_cpus;
};

// VM names become file names and libvirt names: [A-Za-z0-9_.-]{1,64}, and not "." or "..".
bool valid_vm_name(std::string_view name);

// The placement with its guest cells covering every vCPU up to max_vcpus: the vCPUs the cells lack
// (ids after the covered ones) go to the cells in proportion to the vCPUs each already has (largest
// remainder, ties to the earlier cell), so a hot-added vCPU lands in a cell of the VM's own node(s).
// Unchanged when the cells already cover max_vcpus or there are none.
policy::Placement cells_up_to(const policy::Placement& placement, int max_vcpus);

// Deterministic for a given spec (golden-file tested). Throws std::invalid_argument when the spec is
// inconsistent (bad name, unknown domain type, dedicated CPUs outside [vcpus, max_vcpus], cells with
// gaps or beyond max_vcpus, cell memory not summing to max_memory_mib).
std::string render_domain_xml(const DomainSpec& spec);

// The llmorch element of <metadata> alone, namespace declared on its root (parse_metadata reads it).
std::string render_metadata(const VmFacts& facts);
// The same without any namespace: what virDomainSetMetadata takes (libvirt puts the namespace on the
// root itself, and refuses a fragment that already declares the prefix).
std::string render_metadata_body(const VmFacts& facts);

// What a domain's XML says about llmorch.
struct MetadataRead {
  std::optional<VmFacts> facts;  // the llmorch metadata is well-formed and passes facts_problem()
  std::string error;             // otherwise: "bad metadata: <why>"
};
// Like parse_metadata, but tells malformed or out-of-range llmorch metadata ("bad metadata: ...") from
// none at all (nullopt). A memory element without floor_max_mib (metadata of older llmorch) means
// memory_mib.
std::optional<MetadataRead> read_metadata(std::string_view xml);

// Accepts a whole domain XML (live or inactive) or a metadata fragment that declares the llmorch
// namespace (render_metadata; prefixed or default namespace). Not virDomainGetMetadata's output: libvirt
// returns that without any namespace, so read the domain XML instead. nullopt when there is no llmorch
// metadata or it is malformed or out of range (read_metadata tells these apart).
std::optional<VmFacts> parse_metadata(std::string_view xml);

// Values read back from a (live) domain XML.
struct LiveDomainXml {
  std::map<int, std::vector<policy::CpuId>> vcpu_pins;  // vCPU -> host CPUs; absent: not pinned
  std::vector<policy::CpuId> emulator_pins;             // empty: not pinned
  std::optional<std::uint64_t> cpu_shares;
  std::string channel_path;  // socket of the llmorch agent channel; empty if none or not yet started
  int vcpus_current = 0;
  int vcpus_max = 0;
  std::vector<policy::CpuId> vcpu_cpuset;  // <vcpu cpuset=...>: where vCPUs without a vcpupin run; empty: none
  bool vcpu_placement_auto = false;        // <vcpu placement='auto'>: numad picks the CPUs, not the XML
};

// Throws std::invalid_argument when the text is not a domain XML.
LiveDomainXml parse_live_domain_xml(std::string_view domain_xml);

// Each vCPU's host CPUs (0 .. vcpus_max - 1), as virDomainGetVcpuPinInfo answers them, from the XML
// alone: its <vcpupin>, else <vcpu cpuset>, else every host CPU (0 .. host_cpus - 1). Nothing when the
// placement is 'auto' (the CPUs numad chose are not in the XML: ask libvirt). Saves a libvirt round trip
// per domain in every listing.
std::optional<std::vector<std::vector<policy::CpuId>>> effective_vcpu_pins(const LiveDomainXml& live, int host_cpus);

}  // namespace llmorch::orch
