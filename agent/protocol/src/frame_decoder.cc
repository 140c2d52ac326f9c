#include "llmorch/protocol/frame_decoder.h"

namespace llmorch::protocol {

FrameDecoder::FrameDecoder(std::size_t max_frame_bytes) : max_(max_frame_bytes) {}

std::vector<Frame> FrameDecoder::feed(std::string_view bytes) {
  std::vector<Frame> frames;
  while (!bytes.empty()) {
    std::size_t nl = bytes.find('\n');
    std::string_view chunk = bytes.substr(0, nl);
    bytes = nl == std::string_view::npos ? std::string_view() : bytes.substr(nl + 1);
    bool complete = nl != std::string_view::npos;

    if (!discarding_) {
      // Room for one '\r' beyond the limit, stripped below, so CRLF senders get the same limit.
      if (buffer_.size() + chunk.size() > max_ + 1) {
        discarding_ = true;
        buffer_.clear();
        frames.push_back({true, {}});
      } else {
        buffer_.append(chunk);
      }
    }
    if (!complete) break;
    if (!discarding_) {
      if (!buffer_.empty() && buffer_.back() == '\r') buffer_.pop_back();
      if (buffer_.size() > max_) {
        frames.push_back({true, {}});
      } else if (!buffer_.empty()) {
        frames.push_back({false, std::move(buffer_)});
      }
    }
    buffer_.clear();
    discarding_ = false;
  }
  return frames;
}

}  // namespace llmorch::protocol
