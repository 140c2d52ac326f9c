// Table-driven reading of the INI files llmorch takes from operators (host config, VM templates).
// Private to llmorch_orch. Each file format is a table of keys; adding a key is one table line.
#pragma once

#include <boost/program_options.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llmorch/orch/po_error.h"

namespace llmorch::orch::ini {

// One key. `set` parses the text into the target; it throws std::invalid_argument when the text is
// not allowed (what() may add detail, or be empty). `allowed` completes "'VALUE' is not ...".
template <class T>
struct Key {
  const char* name;
  const char* allowed;
  std::function<void(const std::string& text, T& target)> set;
};

using Entries = std::vector<std::pair<std::string, std::string>>;  // KEY, VALUE in file order

inline std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return std::string(s.substr(first, s.find_last_not_of(" \t") - first + 1));
}

template <class T>
std::string key_names(const std::vector<Key<T>>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

template <class T>
const Key<T>* find_key(const std::vector<Key<T>>& keys, const std::string& name) {
  for (const auto& k : keys) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

// Reads KEY = VALUE lines with Boost.Program_options; unknown keys, sections, repeated keys and
// malformed lines are errors (Error is the caller's exception type). `path` names the source in them.
template <class Error, class T>
Entries read_stream(std::istream& in, const std::string& path, const std::vector<Key<T>>& keys) {
  namespace po = boost::program_options;
  po::options_description desc;
  for (const auto& k : keys) desc.add_options()(k.name, po::value<std::string>());
  po::parsed_options parsed(&desc);
  try {
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/false);
  } catch (const po::unknown_option& e) {
    throw Error(path + ": unknown key '" + e.get_option_name() + "'; known keys: " + key_names(keys));
  } catch (const po::error& e) {
    throw Error(path + ": " + program_options_message(e) + "; expected lines of the form KEY = VALUE");
  }
  Entries entries;
  std::set<std::string> seen;
  for (const auto& opt : parsed.options) {
    if (!seen.insert(opt.string_key).second) {
      throw Error(path + ": key '" + opt.string_key + "' is set more than once; keep one line");
    }
    entries.emplace_back(opt.string_key, opt.value.empty() ? std::string() : opt.value.front());
  }
  return entries;
}

template <class Error, class T>
Entries read_file(const std::string& path, const std::vector<Key<T>>& keys) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot read the file: " + std::strerror(errno));
  return read_stream<Error>(in, path, keys);
}

// "KEY=VALUE" split at the first '=' (so values may contain '='), both sides trimmed.
template <class Error, class T>
Entries parse_overrides(const std::vector<std::string>& overrides, const std::vector<Key<T>>& keys,
                        const std::string& where) {
  Entries entries;
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    if (eq == std::string::npos) {
      throw Error(where + " '" + o + "': expected KEY=VALUE");
    }
    std::string key = trim(std::string_view(o).substr(0, eq));
    if (!find_key(keys, key)) {
      throw Error(where + " '" + o + "': unknown key '" + key + "'; known keys: " + key_names(keys));
    }
    entries.emplace_back(std::move(key), trim(std::string_view(o).substr(eq + 1)));
  }
  return entries;
}

// Applies entries through the table. `source` names where they came from in error messages.
// Returns the names of the keys that were set.
template <class Error, class T>
std::set<std::string> apply(const Entries& entries, const std::vector<Key<T>>& keys, T& target,
                            const std::string& source) {
  std::set<std::string> set_keys;
  for (const auto& [name, value] : entries) {
    const Key<T>* key = find_key(keys, name);
    if (!key) throw Error(source + ": unknown key '" + name + "'; known keys: " + key_names(keys));
    try {
      key->set(value, target);
    } catch (const std::invalid_argument& e) {
      const std::string detail = e.what();
      throw Error(source + ": key '" + name + "': '" + value + "' is not " + key->allowed +
                  (detail.empty() ? "" : ": " + detail));
    }
    set_keys.insert(name);
  }
  return set_keys;
}

// ---- value parsers: throw std::invalid_argument("") when the text is not allowed ----------------

[[noreturn]] inline void reject(const std::string& detail = "") { throw std::invalid_argument(detail); }

template <class Int>
Int whole(const std::string& text, Int lo, Int hi = std::numeric_limits<Int>::max()) {
  Int v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi) reject();
  return v;
}

inline double number(const std::string& text, double lo, double hi) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v) || v < lo || v > hi) {
    reject();
  }
  return v;
}

// Returns the index of `text` in `choices`.
inline std::size_t choice(const std::string& text, const std::vector<std::string_view>& choices) {
  for (std::size_t i = 0; i < choices.size(); ++i) {
    if (text == choices[i]) return i;
  }
  reject();
}

// Empty (no file) or an absolute path: QEMU opens it from its own working directory, so a relative
// path would name a different file than the operator meant.
inline std::string absolute_path(const std::string& text) {
  if (!text.empty() && text.front() != '/') reject();
  return text;
}

}  // namespace llmorch::orch::ini
