// Host config: every key, every error, overrides, the shipped example and its documentation.
#include "llmorch/orch/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("llmorch-config-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text, const std::string& name = "llmorch.conf") {
    const auto path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  // The ConfigError message of loading `text`, or "" when it loaded.
  std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
    try {
      load_config(write(text), overrides);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_F(ConfigTest, EmptyFileGivesDefaults) {
  const HostConfig c = load_config(write(""));
  const HostConfig d;
  EXPECT_EQ(c.reserved_cpus, d.reserved_cpus);
  EXPECT_EQ(c.shared_cpus, d.shared_cpus);
  EXPECT_DOUBLE_EQ(c.alpha, 0.8);
  EXPECT_EQ(c.interval_ms, 1000);
  EXPECT_EQ(c.priority_dwell_ms, 3000);
  EXPECT_EQ(c.memory_reserve_mib, 512u);
  EXPECT_EQ(c.domain_type, "kvm");
}

TEST_F(ConfigTest, ReadsEveryKey) {
  const HostConfig c = load_config(
      write("reserved_cpus = 0-1,8\n"
            "shared_cpus = 4-5\n"
            "alpha = 0.25\n"
            "interval_ms = 50\n"
            "priority_dwell_ms = 0\n"
            "memory_reserve_mib = 2048\n"
            "# a comment\n"
            "domain_type = qemu   # trailing comment\n"));
  EXPECT_EQ(c.reserved_cpus, (std::set<policy::CpuId>{0, 1, 8}));
  EXPECT_EQ(c.shared_cpus, (std::set<policy::CpuId>{4, 5}));
  EXPECT_DOUBLE_EQ(c.alpha, 0.25);
  EXPECT_EQ(c.interval_ms, 50);
  EXPECT_EQ(c.priority_dwell_ms, 0);
  EXPECT_EQ(c.memory_reserve_mib, 2048u);
  EXPECT_EQ(c.domain_type, "qemu");
}

TEST_F(ConfigTest, BalloonKeysAndHostMemoryLimit) {
  EXPECT_FALSE(load_config(write("")).host_memory_limit_mib.has_value());
  EXPECT_FALSE(load_config(write("host_memory_limit_mib = none\n")).host_memory_limit_mib.has_value());
  const HostConfig c = load_config(
      write("host_memory_limit_mib = 400\n"
            "balloon_step_mib = 64\n"
            "balloon_dead_band_mib = 8\n"
            "balloon_dead_band_fraction = 0.05\n"
            "balloon_low_watermark_mib = 100\n"
            "balloon_high_watermark_mib = 100\n"
            "balloon_headroom_mib = 32\n"
            "balloon_headroom_fraction = 0.1\n"
            "balloon_pressure_psi = 25\n"));
  EXPECT_EQ(c.host_memory_limit_mib, std::optional<std::uint64_t>(400));
  EXPECT_EQ(c.balloon.step_mib, 64u);
  EXPECT_EQ(c.balloon.dead_band_mib, 8u);
  EXPECT_DOUBLE_EQ(c.balloon.dead_band_fraction, 0.05);
  EXPECT_EQ(c.balloon.low_watermark_mib, 100u);
  EXPECT_EQ(c.balloon.high_watermark_mib, 100u);
  EXPECT_EQ(c.balloon.headroom_mib, 32u);
  EXPECT_DOUBLE_EQ(c.balloon.headroom_fraction, 0.1);
  EXPECT_DOUBLE_EQ(c.balloon.pressure_psi, 25.0);
  // A limit given as an override (llmorchd --host-memory-limit-mib) wins over the file's.
  EXPECT_EQ(load_config(write("host_memory_limit_mib = 400\n"), {"host_memory_limit_mib=none"}).host_memory_limit_mib,
            std::nullopt);
  EXPECT_NE(error_of("balloon_low_watermark_mib = 600\n").find("below balloon_low_watermark_mib"), std::string::npos);
}

TEST_F(ConfigTest, AlphaBoundsAreInclusive) {
  EXPECT_DOUBLE_EQ(load_config(write("alpha = 0\n")).alpha, 0.0);
  EXPECT_DOUBLE_EQ(load_config(write("alpha = 1\n")).alpha, 1.0);
}

TEST_F(ConfigTest, EmptyCpuListsMeanNoCpus) {
  const HostConfig c = load_config(write("reserved_cpus =\nshared_cpus =\n"));
  EXPECT_TRUE(c.reserved_cpus.empty());
  EXPECT_TRUE(c.shared_cpus.empty());
}

TEST_F(ConfigTest, ErrorNamesFileKeyValueAndWhatIsAllowed) {
  const std::string path = (dir_ / "llmorch.conf").string();
  EXPECT_EQ(error_of("alpha = 1.5\n"), path + ": key 'alpha': '1.5' is not a number in [0, 1]");
}

struct BadValue {
  std::string line, key, value, allowed;
};

TEST_F(ConfigTest, RejectsEveryBadValue) {
  const BadValue cases[] = {
      {"alpha = -0.1", "alpha", "-0.1", "a number in [0, 1]"},
      {"alpha = high", "alpha", "high", "a number in [0, 1]"},
      {"alpha = nan", "alpha", "nan", "a number in [0, 1]"},
      {"alpha = 0.5x", "alpha", "0.5x", "a number in [0, 1]"},
      {"alpha =", "alpha", "", "a number in [0, 1]"},
      {"interval_ms = 49", "interval_ms", "49", "a whole number of milliseconds >= 50"},
      {"interval_ms = 100.5", "interval_ms", "100.5", "a whole number of milliseconds >= 50"},
      {"priority_dwell_ms = -1", "priority_dwell_ms", "-1", "a whole number of milliseconds in [0, 3600000]"},
      {"priority_dwell_ms = 3600001", "priority_dwell_ms", "3600001", "a whole number of milliseconds in [0, 3600000]"},
      {"interval_ms = 99999999999", "interval_ms", "99999999999", "a whole number of milliseconds >= 50"},
      {"memory_reserve_mib = -1", "memory_reserve_mib", "-1", "a whole number of MiB >= 0"},
      {"memory_reserve_mib = 1G", "memory_reserve_mib", "1G", "a whole number of MiB >= 0"},
      {"domain_type = xen", "domain_type", "xen", "kvm or qemu"},
      {"host_memory_limit_mib = 0", "host_memory_limit_mib", "0", "a whole number of MiB >= 1, or none"},
      {"host_memory_limit_mib = off", "host_memory_limit_mib", "off", "a whole number of MiB >= 1, or none"},
      {"balloon_step_mib = 0", "balloon_step_mib", "0", "a whole number of MiB >= 1"},
      {"balloon_dead_band_fraction = 2", "balloon_dead_band_fraction", "2", "a number in [0, 1]"},
      {"balloon_pressure_psi = 101", "balloon_pressure_psi", "101", "a number of percent in [0, 100]"},
      {"domain_type = KVM", "domain_type", "KVM", "kvm or qemu"},
      {"reserved_cpus = 0-x", "reserved_cpus", "0-x", "a CPU list such as 0-1,8 (or empty)"},
      {"shared_cpus = 3-1", "shared_cpus", "3-1", "a CPU list such as 2-3 (or empty)"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.line + "\n");
    EXPECT_NE(err.find("llmorch.conf: key '" + c.key + "': '" + c.value + "' is not " + c.allowed), std::string::npos)
        << c.line << " -> " << err;
  }
}

TEST_F(ConfigTest, CpuListErrorSaysWhichPartIsWrong) {
  EXPECT_NE(error_of("reserved_cpus = 0,,2\n").find("empty entry"), std::string::npos);
}

TEST_F(ConfigTest, UnknownKeyIsAnErrorListingKnownKeys) {
  const std::string err = error_of("alpah = 0.5\n");
  EXPECT_NE(err.find("llmorch.conf: unknown key 'alpah'"), std::string::npos) << err;
  EXPECT_NE(err.find("alpha, interval_ms"), std::string::npos) << err;
}

TEST_F(ConfigTest, SectionsAreUnknownKeys) {
  EXPECT_NE(error_of("[daemon]\nalpha = 0.5\n").find("unknown key 'daemon.alpha'"), std::string::npos);
}

TEST_F(ConfigTest, RepeatedKeyIsAnError) {
  EXPECT_NE(error_of("alpha = 0.5\nalpha = 0.6\n").find("key 'alpha' is set more than once"), std::string::npos);
}

TEST_F(ConfigTest, MalformedLineIsAnError) {
  const std::string err = error_of("alpha 0.5\n");
  EXPECT_NE(err.find("llmorch.conf: "), std::string::npos) << err;
  EXPECT_NE(err.find("KEY = VALUE"), std::string::npos) << err;
}

TEST_F(ConfigTest, ReservedAndSharedMustNotOverlap) {
  const std::string err = error_of("reserved_cpus = 0-2\nshared_cpus = 2-5\n");
  EXPECT_NE(err.find("CPUs 2 are in both reserved_cpus and shared_cpus"), std::string::npos) << err;
}

TEST_F(ConfigTest, NamedMissingFileIsAnError) {
  const std::string path = (dir_ / "absent.conf").string();
  try {
    load_config(path);
    FAIL() << "no error for a missing file";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": cannot read the file"), std::string::npos) << e.what();
  }
}

TEST_F(ConfigTest, DefaultPathMayBeMissing) {
  if (fs::exists(kDefaultConfigPath)) GTEST_SKIP() << kDefaultConfigPath << " exists on this machine";
  const HostConfig c = load_config("", {"alpha=0.3"});
  EXPECT_DOUBLE_EQ(c.alpha, 0.3);
  EXPECT_EQ(c.interval_ms, 1000);
}

TEST_F(ConfigTest, OverridesWinOverTheFile) {
  const HostConfig c = load_config(write("alpha = 0.5\ninterval_ms = 200\n"), {"alpha=0.9", " domain_type = qemu "});
  EXPECT_DOUBLE_EQ(c.alpha, 0.9);
  EXPECT_EQ(c.interval_ms, 200);
  EXPECT_EQ(c.domain_type, "qemu");
}

TEST_F(ConfigTest, OverrideErrors) {
  EXPECT_NE(error_of("", {"alpha=2"}).find("override: key 'alpha': '2' is not a number in [0, 1]"), std::string::npos);
  EXPECT_NE(error_of("", {"beta=2"}).find("unknown key 'beta'"), std::string::npos);
  EXPECT_NE(error_of("", {"alpha"}).find("'alpha': expected KEY=VALUE"), std::string::npos);
  const std::string overlap = error_of("reserved_cpus = 0\n", {"shared_cpus=0-1"});
  EXPECT_NE(overlap.find("(with overrides): CPUs 0 are in both"), std::string::npos) << overlap;
}

TEST(ConfigExample, ShippedExampleLoadsAndDocumentsEveryKey) {
  const std::string path = std::string(LLMORCH_TEMPLATES_DIR) + "/llmorch.conf.example";
  const HostConfig c = load_config(path);
  EXPECT_DOUBLE_EQ(c.alpha, HostConfig{}.alpha);
  const std::string text = slurp(path);
  for (const auto& key : host_config_keys()) {
    EXPECT_NE(text.find("\n" + key + " ="), std::string::npos) << key << " missing from " << path;
  }
}

TEST(ConfigExample, ReadmeDocumentsEveryKey) {
  const std::string readme = slurp(std::string(LLMORCH_TEMPLATES_DIR) + "/README.md");
  for (const auto& key : host_config_keys()) {
    EXPECT_NE(readme.find("| `" + key + "`"), std::string::npos) << key << " missing from templates/README.md";
  }
}

}  // namespace
}  // namespace llmorch::orch
