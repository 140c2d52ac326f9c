// Host NUMA topology from libvirt's capabilities XML (`virsh capabilities`,
// virConnectGetCapabilities()).
//
// What is read, per <host><topology><cells><cell>:
//   id; <memory unit=...> (KiB when unit is absent; b/bytes, KB/K/KiB, MB/M/MiB, GB/G/GiB, TB/T/TiB);
//   <pages unit=... size=...>count</pages>; <distances><sibling id value/>; <cpus><cpu id socket_id
//   die_id core_id siblings/>. Missing socket/die/core ids read as 0, a missing siblings list as the
//   CPU alone. Nodes without <cpus>, without <memory> or without <distances> are accepted
//   (HostTopology::distance then assumes 10 local / 20 remote). Page counts are stored as reported;
//   consumers cap them by the node's memory (see policy::hugepage_capacity_kib).
//
// A document without <host><topology> is rejected: libvirt omits it when it cannot read the host's
// NUMA layout, and a single node with unknown CPUs cannot be used to pin anything.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "llmorch/policy/types.h"

namespace llmorch::orch {

class CapabilitiesError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws CapabilitiesError with a sentence naming what is wrong (malformed XML, no <capabilities>,
// no topology, bad or duplicate ids, bad numbers, unknown units).
policy::HostTopology parse_capabilities(std::string_view xml);

// Reads and parses a file; an unreadable file is a CapabilitiesError naming the path.
policy::HostTopology parse_capabilities_file(const std::string& path);

}  // namespace llmorch::orch
