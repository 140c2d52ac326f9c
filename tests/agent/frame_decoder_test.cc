#include "llmorch/protocol/frame_decoder.h"

#include <gtest/gtest.h>

#include <string>

namespace llmorch::protocol {
namespace {

TEST(FrameDecoder, JoinsFramesSplitAcrossFeeds) {
  FrameDecoder d;
  EXPECT_TRUE(d.feed("LLMO1 rep").empty());
  EXPECT_EQ(d.pending(), 9u);
  auto frames = d.feed("ort a=1\nLLMO1 x");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].line, "LLMO1 report a=1");
  frames = d.feed("\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].line, "LLMO1 x");
  EXPECT_EQ(d.pending(), 0u);
}

TEST(FrameDecoder, ByteAtATime) {
  FrameDecoder d;
  std::string input = "a\r\nbb\n\n\nccc\n";
  std::vector<std::string> lines;
  for (char c : input)
    for (auto& f : d.feed(std::string_view(&c, 1))) lines.push_back(f.line);
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "bb", "ccc"}));
}

TEST(FrameDecoder, OversizedLineIsDiscardedToNextNewlineAndCountedPerLimit) {
  FrameDecoder d(16);  // a line counts once per 17 bytes (16 + room for '\r')
  auto frames = d.feed(std::string(10, 'x'));
  EXPECT_TRUE(frames.empty());
  frames = d.feed(std::string(10, 'y'));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(frames[0].oversized);
  EXPECT_EQ(d.pending(), 0u);
  // It goes on for a long time: still discarded, memory stays bounded, and every further 17 bytes
  // count as another oversized frame (20 + 1700 bytes = 101 units), so an endless line is not free.
  std::size_t more = 0;
  for (int i = 0; i < 17; ++i) {
    for (const Frame& f : d.feed(std::string(100, 'z'))) {
      EXPECT_TRUE(f.oversized);
      ++more;
    }
  }
  EXPECT_EQ(more, 100u);
  EXPECT_EQ(d.pending(), 0u);
  frames = d.feed("zzz\nok\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_FALSE(frames[0].oversized);
  EXPECT_EQ(frames[0].line, "ok");
}

TEST(FrameDecoder, AnEndlessLineInOneFeedCountsPerLimit) {
  FrameDecoder d(16);
  const auto frames = d.feed(std::string(17 * 50 + 5, 'x'));
  EXPECT_EQ(frames.size(), 50u);
  EXPECT_EQ(d.feed(std::string(12, 'x')).size(), 1u);  // 5 + 12 = 17 more
}

TEST(FrameDecoder, CountsEmptyLines) {
  FrameDecoder d;
  EXPECT_TRUE(d.feed("\n\r\n\n").empty());
  EXPECT_EQ(d.empty_lines(), 3u);
  EXPECT_EQ(d.feed("a\n\nb").size(), 1u);
  EXPECT_EQ(d.empty_lines(), 4u);
  EXPECT_EQ(d.feed("\n").size(), 1u);  // ends "b": not empty
  EXPECT_EQ(d.empty_lines(), 4u);
}

TEST(FrameDecoder, LimitIsInclusive) {
  FrameDecoder d(4);
  auto frames = d.feed("abcd\nabcde\nabcd\r\n");
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].line, "abcd");
  EXPECT_TRUE(frames[1].oversized);
  EXPECT_EQ(frames[2].line, "abcd");
}

TEST(FrameDecoder, PassesNulAndGarbageBytesThroughForTheParserToReject) {
  FrameDecoder d;
  std::string input("a\0b\xff\n", 5);
  auto frames = d.feed(input);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].line, std::string("a\0b\xff", 4));
}

}  // namespace
}  // namespace llmorch::protocol
