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

    // Room for one '\r' beyond the limit, stripped below, so CRLF senders get the same limit.
    const std::size_t unit = max_ + 1;
    if (!discarding_) {
      if (buffer_.size() + chunk.size() > unit) {
        discarding_ = true;
        discarded_ = buffer_.size() + chunk.size() - unit;
        buffer_.clear();
        frames.push_back({true, {}});
      } else {
        buffer_.append(chunk);
      }
    } else {
      discarded_ += chunk.size();
    }
    for (; discarding_ && discarded_ >= unit; discarded_ -= unit) frames.push_back({true, {}});
    if (!complete) break;
    if (!discarding_) {
      if (!buffer_.empty() && buffer_.back() == '\r') buffer_.pop_back();
      if (buffer_.size() > max_) {
        frames.push_back({true, {}});
      } else if (!buffer_.empty()) {
        frames.push_back({false, std::move(buffer_)});
      } else {
        ++empty_lines_;  // "" or "\r"
      }
    }
    buffer_.clear();
    discarding_ = false;
    discarded_ = 0;
  }
  return frames;
}

}  // namespace llmorch::protocol
