#include "llmorch/orch/failure_log.h"

namespace llmorch::orch {

bool FailureLog::failed(const std::string& key, const std::string& message, TimePoint now) {
  auto [it, added] = entries_.try_emplace(key);
  Entry& e = it->second;
  const bool log = added || e.message != message;
  if (added) e.since = now;
  e.message = message;
  ++e.failures;
  e.this_tick = true;
  return log;
}

std::vector<FailureLog::Ended> FailureLog::end_tick() {
  std::vector<Ended> ended;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.this_tick) {
      it->second.this_tick = false;
      ++it;
      continue;
    }
    ended.push_back({it->first, it->second.message, it->second.failures, it->second.since});
    it = entries_.erase(it);
  }
  return ended;
}

}  // namespace llmorch::orch
