#include "llmorch/protocol/codec.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <system_error>

namespace llmorch::protocol {
namespace {

// ---------------------------------------------------------------------------------------------
// Encoding: locale-independent, unlike printf.

class Writer {
 public:
  explicit Writer(std::string_view type) {
    out_.reserve(256);
    out_ += kMagic;
    out_ += ' ';
    out_ += type;
  }
  void add(std::string_view key, std::uint64_t value) {
    std::array<char, 24> buf{};
    auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
    append(key, std::string_view(buf.data(), static_cast<std::size_t>(end - buf.data())));
  }
  // Fixed-point by hand: std::to_chars(double) would pull ~250 KB of Ryu tables into the static agent.
  void add(std::string_view key, double value, int decimals) {
    if (!std::isfinite(value) || std::fabs(value) >= 1e12) {
      append(key, "nan");  // outside every field's range: the parser rejects it
      return;
    }
    std::uint64_t scale = 1;
    for (int i = 0; i < decimals; ++i) scale *= 10;
    auto scaled = static_cast<std::uint64_t>(std::llround(std::fabs(value) * static_cast<double>(scale)));
    std::string text = value < 0 && scaled != 0 ? "-" : "";
    text += std::to_string(scaled / scale);
    if (decimals > 0) {
      std::string fraction = std::to_string(scaled % scale);
      text += '.' + std::string(static_cast<std::size_t>(decimals) - fraction.size(), '0') + fraction;
    }
    append(key, text);
  }
  std::string finish() {
    out_ += '\n';
    return std::move(out_);
  }

 private:
  void append(std::string_view key, std::string_view value) {
    out_ += ' ';
    out_ += key;
    out_ += '=';
    out_ += value;
  }
  std::string out_;
};

// ---------------------------------------------------------------------------------------------
// Parsing.

struct Word {
  std::string_view key, value;
};

// A known key: where its value goes and its range. `parse` returns an error or "".
struct Field {
  std::string_view key;
  bool required;
  std::function<std::string(std::string_view)> parse;
};

std::optional<std::uint64_t> to_u64(std::string_view text) {
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::optional<double> to_double(std::string_view text) {
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty() || !std::isfinite(value))
    return std::nullopt;
  return value;
}

std::string range_error(std::string_view key, std::string_view text, std::string_view range) {
  return std::string(key) + "=" + std::string(text.substr(0, 32)) + " is not a number in " + std::string(range);
}

auto u64_field(std::string_view key, bool required, std::uint64_t lo, std::uint64_t hi, std::uint64_t* out) {
  return Field{key, required, [=](std::string_view text) -> std::string {
                 auto v = to_u64(text);
                 if (!v || *v < lo || *v > hi)
                   return range_error(key, text, "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
                 *out = *v;
                 return {};
               }};
}

auto opt_u64_field(std::string_view key, std::uint64_t hi, std::optional<std::uint64_t>* out) {
  return Field{key, false, [=](std::string_view text) -> std::string {
                 auto v = to_u64(text);
                 if (!v || *v > hi) return range_error(key, text, "[0, " + std::to_string(hi) + "]");
                 *out = *v;
                 return {};
               }};
}

template <class Out>
auto double_field(std::string_view key, bool required, double hi, Out* out) {
  return Field{key, required, [=](std::string_view text) -> std::string {
                 auto v = to_double(text);
                 if (!v || *v < 0 || *v > hi)
                   return range_error(key, text, "[0, " + std::to_string(static_cast<std::uint64_t>(hi)) + "]");
                 *out = *v;
                 return {};
               }};
}

bool printable(std::string_view frame) {
  for (unsigned char c : frame)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// Splits "LLMO1 TYPE k=v k=v" and checks the envelope. Returns an error or "".
std::string split(std::string_view frame, std::string_view* type, std::vector<Word>* words) {
  if (frame.size() > kMaxFrameBytes) return "frame longer than " + std::to_string(kMaxFrameBytes) + " bytes";
  if (!printable(frame)) return "frame contains a byte outside printable ASCII";
  std::vector<std::string_view> tokens;
  std::size_t pos = 0;
  while (pos < frame.size()) {
    std::size_t end = frame.find(' ', pos);
    if (end == std::string_view::npos) end = frame.size();
    if (end > pos) tokens.push_back(frame.substr(pos, end - pos));
    pos = end + 1;
  }
  if (tokens.empty() || tokens[0] != kMagic) {
    if (!tokens.empty() && tokens[0].substr(0, 4) == "LLMO")
      return "unsupported protocol version " + std::string(tokens[0].substr(0, 16));
    return std::string("frame does not start with ") + kMagic;
  }
  if (tokens.size() < 2) return "frame has no message type";
  *type = tokens[1];
  for (std::size_t i = 2; i < tokens.size(); ++i) {
    std::size_t eq = tokens[i].find('=');
    if (eq == std::string_view::npos || eq == 0)
      return "word '" + std::string(tokens[i].substr(0, 32)) + "' is not key=value";
    words->push_back({tokens[i].substr(0, eq), tokens[i].substr(eq + 1)});
  }
  return {};
}

// Applies `fields` to `words`. Returns an error or "".
std::string apply(const std::vector<Field>& fields, const std::vector<Word>& words, ParseStats* stats) {
  std::vector<bool> seen(fields.size(), false);
  for (const Word& word : words) {
    std::size_t i = 0;
    while (i < fields.size() && fields[i].key != word.key) ++i;
    if (i == fields.size()) {
      if (stats) ++stats->unknown_keys;
      continue;
    }
    if (seen[i]) return "key " + std::string(word.key) + " appears twice";
    seen[i] = true;
    if (std::string error = fields[i].parse(word.value); !error.empty()) return error;
  }
  for (std::size_t i = 0; i < fields.size(); ++i)
    if (fields[i].required && !seen[i]) return "required key " + std::string(fields[i].key) + " is missing";
  return {};
}

}  // namespace

std::string encode(const Report& r) {
  Writer w("report");
  w.add("seq", r.seq);
  if (r.priority) w.add("prio", *r.priority, 3);
  w.add("cpu_pct", r.cpu_pct, 1);
  if (r.psi_cpu_some10) w.add("psi_cpu_some10", *r.psi_cpu_some10, 2);
  w.add("runnable", r.runnable);
  w.add("ncpu_online", r.ncpu_online);
  w.add("mem_total_kib", r.mem_total_kib);
  w.add("mem_avail_kib", r.mem_avail_kib);
  if (r.psi_mem_some10) w.add("psi_mem_some10", *r.psi_mem_some10, 2);
  w.add("floor_mib", r.floor_mib);
  if (r.llm_running) w.add("llm_running", *r.llm_running);
  if (r.llm_waiting) w.add("llm_waiting", *r.llm_waiting);
  w.add("interval_ms", r.interval_ms);
  return w.finish();
}

std::string encode(const HostCommand& command) {
  if (const auto* config = std::get_if<ConfigCommand>(&command)) {
    Writer w("config");
    w.add("interval_ms", config->interval_ms);
    return w.finish();
  }
  Writer w("vcpus");
  w.add("online", std::get<VcpusCommand>(command).online);
  return w.finish();
}

Result<Report> parse_report(std::string_view frame, ParseStats* stats) {
  std::string_view type;
  std::vector<Word> words;
  if (std::string error = split(frame, &type, &words); !error.empty()) return Result<Report>::failure(error);
  if (type != "report")
    return Result<Report>::failure("unexpected message type '" + std::string(type.substr(0, 32)) + "'");
  Report r;
  const std::vector<Field> fields = {
      u64_field("seq", true, 0, UINT64_MAX, &r.seq),
      double_field("prio", false, kMaxPriority, &r.priority),
      double_field("cpu_pct", true, kMaxPercent, &r.cpu_pct),
      double_field("psi_cpu_some10", false, kMaxPercent, &r.psi_cpu_some10),
      u64_field("runnable", true, 0, kMaxRunnable, &r.runnable),
      u64_field("ncpu_online", true, 1, kMaxCpus, &r.ncpu_online),
      u64_field("mem_total_kib", true, 0, kMaxMemKib, &r.mem_total_kib),
      u64_field("mem_avail_kib", true, 0, kMaxMemKib, &r.mem_avail_kib),
      double_field("psi_mem_some10", false, kMaxPercent, &r.psi_mem_some10),
      u64_field("floor_mib", true, 0, kMaxFloorMib, &r.floor_mib),
      opt_u64_field("llm_running", kMaxLlmRequests, &r.llm_running),
      opt_u64_field("llm_waiting", kMaxLlmRequests, &r.llm_waiting),
      u64_field("interval_ms", true, kMinIntervalMs, kMaxIntervalMs, &r.interval_ms),
  };
  if (std::string error = apply(fields, words, stats); !error.empty()) return Result<Report>::failure(error);
  if (r.mem_avail_kib > r.mem_total_kib) return Result<Report>::failure("mem_avail_kib exceeds mem_total_kib");
  return Result<Report>::success(r);
}

Result<HostCommand> parse_host_command(std::string_view frame, ParseStats* stats) {
  using R = Result<HostCommand>;
  std::string_view type;
  std::vector<Word> words;
  if (std::string error = split(frame, &type, &words); !error.empty()) return R::failure(error);
  if (type == "config") {
    ConfigCommand c;
    std::string error = apply({u64_field("interval_ms", true, kMinIntervalMs, kMaxIntervalMs, &c.interval_ms)}, words,
                              stats);
    return error.empty() ? R::success(c) : R::failure(error);
  }
  if (type == "vcpus") {
    VcpusCommand c;
    std::string error = apply({u64_field("online", true, 1, kMaxCpus, &c.online)}, words, stats);
    return error.empty() ? R::success(c) : R::failure(error);
  }
  return R::failure("unknown host command '" + std::string(type.substr(0, 32)) + "'");
}

}  // namespace llmorch::protocol
