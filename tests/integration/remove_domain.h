// Test cleanup: removes a domain by name through the Hypervisor interface, which removes by UUID only
// (llmorch remove resolves a name once, so a domain of the same name defined since is left alone).
#pragma once

#include <string>

#include "llmorch/orch/hypervisor.h"

namespace llmorch::orch {

// False when no llmorch domain has that name. Throws HypervisorError like destroy_and_undefine_uuid.
inline bool remove_domain_named(Hypervisor& hv, const std::string& name) {
  const auto d = hv.find_managed(name);
  return d && hv.destroy_and_undefine_uuid(d->uuid);
}

}  // namespace llmorch::orch
