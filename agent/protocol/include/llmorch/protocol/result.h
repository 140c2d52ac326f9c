// A small expected-like result (std::expected is C++23): a value or a sentence-style error.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace llmorch::protocol {

template <class T>
class Result {
 public:
  static Result success(T value) { return Result(std::move(value)); }
  static Result failure(std::string error) { return Result(Error{std::move(error)}); }

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  const T& value() const {
    assert(ok());
    return std::get<T>(state_);
  }
  T& value() {
    assert(ok());
    return std::get<T>(state_);
  }
  const std::string& error() const {
    assert(!ok());
    return std::get<Error>(state_).message;
  }

 private:
  struct Error {
    std::string message;
  };
  explicit Result(T value) : state_(std::move(value)) {}
  explicit Result(Error error) : state_(std::move(error)) {}

  std::variant<T, Error> state_;
};

}  // namespace llmorch::protocol
