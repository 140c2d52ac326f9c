// Encoding and validating parsing of single frames (one line, without its '\n').
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "llmorch/protocol/messages.h"
#include "llmorch/protocol/result.h"

namespace llmorch::protocol {

// Counts what a parse tolerated; optional out-parameter of the parse functions.
struct ParseStats {
  std::size_t unknown_keys = 0;
};

// Frames end in '\n'. Output is always <= kMaxFrameBytes + 1 bytes for in-range values.
std::string encode(const Report& report);
std::string encode(const HostCommand& command);

// Accepts exactly the grammar of PROTOCOL.md: magic, message type, then key=value words. Unknown keys
// are skipped (and counted); missing required keys, duplicate keys, bad or out-of-range numbers and
// any byte outside printable ASCII make the frame malformed.
Result<Report> parse_report(std::string_view frame, ParseStats* stats = nullptr);
Result<HostCommand> parse_host_command(std::string_view frame, ParseStats* stats = nullptr);

}  // namespace llmorch::protocol
