// Splits a byte stream into '\n'-terminated frames with a bounded buffer.
#pragma once

#include <cstddef>
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
  // "\n" to resynchronise). An oversized line yields one oversized Frame as soon as it crosses the
  // limit, however long it goes on. Memory use never exceeds max_frame_bytes.
  std::vector<Frame> feed(std::string_view bytes);

  // Bytes of the unfinished frame held so far.
  std::size_t pending() const { return buffer_.size(); }

 private:
  std::size_t max_;
  std::string buffer_;
  bool discarding_ = false;
};

}  // namespace llmorch::protocol
