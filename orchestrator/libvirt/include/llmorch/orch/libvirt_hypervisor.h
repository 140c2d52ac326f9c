// The libvirt backend of the Hypervisor interface. This header does not include libvirt; only
// orchestrator/libvirt/*.cc do.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "llmorch/orch/hypervisor.h"

namespace llmorch::orch {

inline constexpr const char* kDefaultLibvirtUri = "qemu:///system";

// The connection URI: the -c/--connect value when given (and non-empty), else $LIBVIRT_DEFAULT_URI
// when set (and non-empty), else qemu:///system.
std::string resolve_uri(const std::optional<std::string>& flag);

struct LibvirtOptions {
  // ensure_connected() retries for this long, sleeping between attempts with doubling backoff.
  std::chrono::milliseconds reconnect_timeout{30000};
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
};

// Opens `uri` (one attempt). Throws HypervisorError(Kind::Connection) naming the URI and what to do.
// The first call in a process registers libvirt's default event loop and starts one thread that runs it
// for the rest of the process (lifecycle events, keepalive and close detection need it).
std::unique_ptr<Hypervisor> connect_libvirt(const std::string& uri, const LibvirtOptions& options = {});

}  // namespace llmorch::orch
