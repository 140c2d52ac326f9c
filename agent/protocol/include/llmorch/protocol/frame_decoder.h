// Splits a byte stream into '\n'-terminated frames with a bounded buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/protocol/messages.h"

namespace llmorch::protocol {

struct Frame {
  bool oversized = false;  // a line longer than the limit: its bytes are discarded up to the next '\n'
  std::string line;        // without '\n' (and without a trailing '\r'); empty when oversized
};

class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame_bytes = kMaxFrameBytes);

  // Returns the frames completed by `bytes`, in order. Empty lines are skipped (a sender may emit
  // "\n" to resynchronise) and counted (empty_lines()). An oversized line yields an oversized Frame as
  // soon as it crosses the limit, and one more for every further max_frame_bytes + 1 bytes it goes on,
  // so an endless line keeps counting as it costs. Memory use never exceeds max_frame_bytes + 1.
  std::vector<Frame> feed(std::string_view bytes);

  // Bytes of the unfinished frame held so far.
  std::size_t pending() const { return buffer_.size(); }
  // Empty lines skipped since construction.
  std::uint64_t empty_lines() const { return empty_lines_; }

 private:
  std::size_t max_;
  std::string buffer_;
  bool discarding_ = false;
  std::size_t discarded_ = 0;  // bytes of the oversized line not yet counted in an oversized Frame
  std::uint64_t empty_lines_ = 0;
};

}  // namespace llmorch::protocol
