// llmorchd's log lines under journald. systemd connects a service's stdout/stderr to the journal and
// says so in $JOURNAL_STREAM ("DEVICE:INODE" of that stream, sd_journal_stream_fd(3), systemd.exec(5));
// the variable is inherited by children whose output goes elsewhere, so it only counts when it matches
// the descriptor logged to. There every line is "<N>message": N the syslog priority (journald strips
// the prefix and keeps it as PRIORITY=), no timestamp (the journal stamps each line itself).
#pragma once

#include <memory>
#include <optional>

#include <spdlog/common.h>
#include <spdlog/formatter.h>

namespace llmorch::orch {

// True when journal_stream ("DEV:INO", decimal, as systemd writes it) names the file open on fd.
bool journal_stream_matches(const char* journal_stream, int fd);

// Which of stderr (first) and stdout $JOURNAL_STREAM names, if either: the descriptor to log to.
std::optional<int> journal_log_fd();

// syslog priority of a spdlog level: trace and debug 7 (debug), info 6, warn 4, error 3, critical 2.
int syslog_priority(spdlog::level::level_enum level);

// The journal's line format: "<N>" + the message, nothing else.
std::unique_ptr<spdlog::formatter> journal_formatter();

// When journal_log_fd() names a descriptor: makes the default logger write there in
// journal_formatter()'s format and returns true. Else changes nothing and returns false.
bool log_to_journal_if_connected();

}  // namespace llmorch::orch
