// A Boost.Program_options error's message, safe against hostile text. error_with_option_name::what()
// (Boost 1.74) replaces each %placeholder% in its message with the offending text, again and again
// while the placeholder is still found, so text that itself contains the placeholder (an option
// "--%canonical_option%", a template line "x%invalid_line%") makes what() loop forever, growing a
// string. Found by template_fuzz. This copies the error, shows '%' in the offending text as '?', and
// only then asks for the message.
#pragma once

#include <algorithm>
#include <string>

#include <boost/program_options/errors.hpp>

namespace llmorch::orch {

namespace detail {
class SafeOptionError : public boost::program_options::error_with_option_name {
 public:
  explicit SafeOptionError(const boost::program_options::error_with_option_name& e)
      : boost::program_options::error_with_option_name(e) {
    for (auto& [key, text] : m_substitutions) std::replace(text.begin(), text.end(), '%', '?');
  }
};
}  // namespace detail

inline std::string program_options_message(const boost::program_options::error& e) {
  if (const auto* named = dynamic_cast<const boost::program_options::error_with_option_name*>(&e))
    return detail::SafeOptionError(*named).what();
  return e.what();
}

}  // namespace llmorch::orch
