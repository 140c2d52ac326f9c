// One placement as JSON, the same object in `llmorch plan --json` ("placed") and `llmorch place --json`
// ("placement").
#pragma once

#include <nlohmann/json.hpp>

#include "llmorch/policy/types.h"

namespace llmorch::cli {

// {"name", "nodes", "cpus", "memory_mib_per_node": {"ID": MiB}, "cpu_policy": "dedicated"|"shared",
//  "hugepages": "2M"|"1G"|null, "cells": [{"node", "vcpus": [i, ...], "memory_mib"}]}
nlohmann::ordered_json placement_json(const policy::Placement& p);

}  // namespace llmorch::cli
