// placeholder; see orchestrator/include/llmorch/orch
namespace llmorch::orch {}
