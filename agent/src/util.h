// Small POSIX helpers for the agent (no iostream: the agent is linked statically and must stay small).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmorch::agent {

// Whole file up to `max_bytes`; nothing if it cannot be opened or read.
std::optional<std::string> read_file(const std::string& path, std::size_t max_bytes = 64 * 1024);
// Writes `text` to an existing file (sysfs attributes). Returns an error sentence or "".
std::string write_file(const std::string& path, std::string_view text);

std::optional<std::uint64_t> parse_u64(std::string_view text);
std::optional<double> parse_double(std::string_view text);  // finite only
std::string_view trim(std::string_view text);
std::vector<std::string_view> split_lines(std::string_view text);

// Sorted names in a directory (without . and ..); empty if it cannot be read.
std::vector<std::string> list_dir(const std::string& path);

// Milliseconds on CLOCK_MONOTONIC (stops during suspend, never jumps).
std::int64_t monotonic_ms();

// One line to stderr, prefixed "llmorch-agent: ".
void log(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace llmorch::agent
