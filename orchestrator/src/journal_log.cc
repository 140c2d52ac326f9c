#include "llmorch/orch/journal_log.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace llmorch::orch {

bool journal_stream_matches(const char* journal_stream, int fd) {
  if (!journal_stream) return false;
  unsigned long long dev = 0, ino = 0;
  char extra = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &dev, &ino, &extra) != 2) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

std::optional<int> journal_log_fd() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  for (int fd : {2, 1})
    if (journal_stream_matches(stream, fd)) return fd;
  return std::nullopt;
}

int syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return 7;
    case spdlog::level::info: return 6;
    case spdlog::level::warn: return 4;
    case spdlog::level::err: return 3;
    case spdlog::level::critical: return 2;
    default: return 6;
  }
}

namespace {

// %* in the pattern: the message's syslog priority.
class PriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char digit = static_cast<char>('0' + syslog_priority(msg.level));
    dest.push_back(digit);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

}  // namespace

std::unique_ptr<spdlog::formatter> journal_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<PriorityFlag>('*').set_pattern("<%*>%v");
  return f;
}

bool log_to_journal_if_connected() {
  const std::optional<int> fd = journal_log_fd();
  if (!fd) return false;
  std::shared_ptr<spdlog::logger> logger = *fd == 2 ? spdlog::stderr_logger_mt("llmorchd-journal")
                                                    : spdlog::stdout_logger_mt("llmorchd-journal");
  logger->set_formatter(journal_formatter());
  logger->set_level(spdlog::default_logger()->level());
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace llmorch::orch
