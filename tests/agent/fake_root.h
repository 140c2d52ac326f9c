// A throwaway directory tree for tests that need /proc or /sys: files are created on demand.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

class FakeRoot {
 public:
  FakeRoot() {
    char tmpl[] = "/tmp/llmorch-agent-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~FakeRoot() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  FakeRoot(const FakeRoot&) = delete;
  FakeRoot& operator=(const FakeRoot&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

  // Writes `text` to ROOT/rel, creating parent directories.
  void write(const std::string& rel, const std::string& text) const {
    if (std::size_t slash = rel.rfind('/'); slash != std::string::npos) mkdirs(rel.substr(0, slash));
    std::ofstream(path_ + "/" + rel) << text;
  }
  std::string read(const std::string& rel) const {
    std::ifstream in(path_ + "/" + rel);
    std::string s;
    std::getline(in, s);
    return s;
  }
  void mkdirs(const std::string& rel) const {
    std::string p = path_;
    std::size_t pos = 0;
    while (pos != std::string::npos) {
      std::size_t next = rel.find('/', pos);
      p += "/" + rel.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
      ::mkdir(p.c_str(), 0755);
      pos = next == std::string::npos ? next : next + 1;
    }
  }

 private:
  std::string path_;
};
