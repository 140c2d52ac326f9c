// llmorchd's log lines under journald: $JOURNAL_STREAM matched against the descriptor logged to, and the
// "<N>message" format (syslog priority, no timestamp).
#include "llmorch/orch/journal_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

namespace llmorch::orch {
namespace {

std::string dev_ino(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

TEST(JournalLog, TheStreamMustBeTheDescriptorItself) {
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string id = dev_ino(fd);
  EXPECT_TRUE(journal_stream_matches(id.c_str(), fd));
  EXPECT_FALSE(journal_stream_matches(nullptr, fd));
  EXPECT_FALSE(journal_stream_matches("", fd));
  EXPECT_FALSE(journal_stream_matches((id + "x").c_str(), fd));
  EXPECT_FALSE(journal_stream_matches("garbage", fd));
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  // Inherited by a child whose output goes elsewhere: another inode does not count.
  EXPECT_FALSE(journal_stream_matches((std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1)).c_str(), fd));
  ::close(fd);
}

TEST(JournalLog, LogFdIsStderrOrStdoutWhicheverJournalStreamNames) {
  const char* old = std::getenv("JOURNAL_STREAM");
  const std::string saved = old ? old : "";
  ::unsetenv("JOURNAL_STREAM");
  EXPECT_EQ(journal_log_fd(), std::nullopt);
  ::setenv("JOURNAL_STREAM", dev_ino(2).c_str(), 1);
  EXPECT_EQ(journal_log_fd(), 2);
  ::setenv("JOURNAL_STREAM", "0:1", 1);
  EXPECT_EQ(journal_log_fd(), std::nullopt);
  if (old) ::setenv("JOURNAL_STREAM", saved.c_str(), 1);
  else ::unsetenv("JOURNAL_STREAM");
}

TEST(JournalLog, SyslogPriorities) {
  EXPECT_EQ(syslog_priority(spdlog::level::trace), 7);
  EXPECT_EQ(syslog_priority(spdlog::level::debug), 7);
  EXPECT_EQ(syslog_priority(spdlog::level::info), 6);
  EXPECT_EQ(syslog_priority(spdlog::level::warn), 4);
  EXPECT_EQ(syslog_priority(spdlog::level::err), 3);
  EXPECT_EQ(syslog_priority(spdlog::level::critical), 2);
}

TEST(JournalLog, LinesArePriorityAndMessageWithNoTimestamp) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("journal-test", sink);
  logger.set_formatter(journal_formatter());
  logger.set_level(spdlog::level::trace);
  logger.info("llmorchd on {}: alpha {}", "qemu:///system", 0.8);
  logger.warn("vm b: unresponsive");
  logger.error("cannot plan this tick");
  logger.debug("libvirt call 'list' still waiting");
  EXPECT_EQ(out.str(),
            "<6>llmorchd on qemu:///system: alpha 0.8\n"
            "<4>vm b: unresponsive\n"
            "<3>cannot plan this tick\n"
            "<7>libvirt call 'list' still waiting\n");
}

}  // namespace
}  // namespace llmorch::orch
