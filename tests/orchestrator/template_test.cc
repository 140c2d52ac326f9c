// VM templates: every key, defaults, every error, --set overrides, and every shipped templates/*.conf.
#include "llmorch/orch/template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;

// Smallest valid template: the required keys only.
constexpr const char* kMinimal = "memory_mib = 1024\nkernel = /boot/vmlinuz\n";

class TemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("llmorch-template-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& text) {
    const auto path = (dir_ / "vm.conf").string();
    std::ofstream(path) << text;
    return path;
  }

  // The TemplateError message of loading `text`, or "" when it loaded.
  std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
    try {
      load_template(write(text), overrides);
    } catch (const TemplateError& e) {
      return e.what();
    }
    return "";
  }

  // Asserts that `text` fails with a message that starts with the file and contains `expected`.
  void expect_error(const std::string& text, const std::string& expected,
                    const std::vector<std::string>& overrides = {}) {
    const std::string err = error_of(text, overrides);
    EXPECT_EQ(err.rfind((dir_ / "vm.conf").string(), 0), 0u) << err;
    EXPECT_NE(err.find(expected), std::string::npos) << "expected '" << expected << "' in: " << err;
  }

  fs::path dir_;
};

// Boost.Program_options 1.74 loops forever in what() when the bad line contains the placeholder of its
// own message (input found by template_fuzz). The error must come back, with the '%' shown as '?'.
TEST_F(TemplateTest, ALineContainingBoostsPlaceholderIsAnErrorNotAHang) {
  expect_error(std::string(kMinimal) + "priority%invalid_line%\n", "invalid line 'priority?invalid_line?'");
  expect_error(std::string(kMinimal) + "%invalid_line% %option% %canonical_option%\n", "invalid line");
}

TEST_F(TemplateTest, DefaultsForEveryOptionalKey) {
  const VmTemplate t = load_template(write(kMinimal));
  EXPECT_EQ(t.vcpus, 1);
  EXPECT_EQ(t.max_vcpus, 1);  // = vcpus
  EXPECT_EQ(t.memory_mib, 1024u);
  EXPECT_EQ(t.max_memory_mib, 1024u);  // = memory_mib
  EXPECT_EQ(t.memory_floor_mib, 0u);
  EXPECT_EQ(t.memory_floor_max_mib, 1024u);  // = memory_mib
  EXPECT_EQ(t.cpu_policy, policy::CpuPolicy::Dedicated);
  EXPECT_EQ(t.hugepage_kib, 0u);
  EXPECT_DOUBLE_EQ(t.priority, 1.0);
  EXPECT_DOUBLE_EQ(t.priority_min, 1.0);
  EXPECT_DOUBLE_EQ(t.priority_max, 100.0);
  EXPECT_EQ(t.domain_type, "");
  EXPECT_EQ(t.kernel, "/boot/vmlinuz");
  EXPECT_EQ(t.initrd, "");
  EXPECT_EQ(t.kernel_args, "");
  EXPECT_EQ(t.disk, "");
}

TEST_F(TemplateTest, ReadsEveryKey) {
  const VmTemplate t = load_template(
      write("vcpus = 4\nmax_vcpus = 6\nmemory_mib = 4096\nmax_memory_mib = 8192\nmemory_floor_mib = 1000\n"
            "memory_floor_max_mib = 6000\n"
            "cpu_policy = shared\nhugepages = 2M\npriority = 3.5\npriority_min = 2\npriority_max = 9\n"
            "domain_type = qemu\nkernel = /k/vmlinuz\ninitrd = /k/initrd.gz\n"
            "kernel_args = console=ttyS0 llmorch.workload=busy:2\n"));
  EXPECT_EQ(t.vcpus, 4);
  EXPECT_EQ(t.max_vcpus, 6);
  EXPECT_EQ(t.memory_mib, 4096u);
  EXPECT_EQ(t.max_memory_mib, 8192u);
  EXPECT_EQ(t.memory_floor_mib, 1000u);
  EXPECT_EQ(t.memory_floor_max_mib, 6000u);
  EXPECT_EQ(t.cpu_policy, policy::CpuPolicy::Shared);
  EXPECT_EQ(t.hugepage_kib, 2048u);
  EXPECT_DOUBLE_EQ(t.priority, 3.5);
  EXPECT_DOUBLE_EQ(t.priority_min, 2.0);
  EXPECT_DOUBLE_EQ(t.priority_max, 9.0);
  EXPECT_EQ(t.domain_type, "qemu");
  EXPECT_EQ(t.kernel, "/k/vmlinuz");
  EXPECT_EQ(t.initrd, "/k/initrd.gz");
  EXPECT_EQ(t.kernel_args, "console=ttyS0 llmorch.workload=busy:2");
}

TEST_F(TemplateTest, DiskBoot) {
  const VmTemplate t = load_template(write("memory_mib = 2048\ndisk = /images/a.qcow2\n"));
  EXPECT_EQ(t.disk, "/images/a.qcow2");
  EXPECT_EQ(t.kernel, "");
}

TEST_F(TemplateTest, ChoiceKeys) {
  EXPECT_EQ(load_template(write(kMinimal), {"cpu_policy=dedicated"}).cpu_policy, policy::CpuPolicy::Dedicated);
  EXPECT_EQ(load_template(write(kMinimal), {"hugepages=none"}).hugepage_kib, 0u);
  EXPECT_EQ(load_template(write(kMinimal), {"hugepages=1G"}).hugepage_kib, 1048576u);
  EXPECT_EQ(load_template(write(kMinimal), {"domain_type=kvm"}).domain_type, "kvm");
  EXPECT_EQ(load_template(write(kMinimal), {"domain_type="}).domain_type, "");
}

struct BadValue {
  std::string line, key, value, allowed;
};

TEST_F(TemplateTest, RejectsEveryBadValue) {
  const BadValue cases[] = {
      {"vcpus = 0", "vcpus", "0", "a whole number in [1, 4096]"},
      {"vcpus = 4097", "vcpus", "4097", "a whole number in [1, 4096]"},
      {"vcpus = two", "vcpus", "two", "a whole number in [1, 4096]"},
      {"max_vcpus = -1", "max_vcpus", "-1", "a whole number in [1, 4096]"},
      {"vcpus_min = 0", "vcpus_min", "0", "a whole number in [1, 4096]"},
      {"memory_mib = 63", "memory_mib", "63", "a whole number of MiB >= 64"},
      {"memory_mib = 1.5", "memory_mib", "1.5", "a whole number of MiB >= 64"},
      {"max_memory_mib = 8G", "max_memory_mib", "8G", "a whole number of MiB >= 64"},
      {"memory_floor_mib = -5", "memory_floor_mib", "-5", "a whole number of MiB >= 0"},
      {"cpu_policy = pinned", "cpu_policy", "pinned", "dedicated or shared"},
      {"hugepages = 4K", "hugepages", "4K", "none, 2M or 1G"},
      {"hugepages = 2m", "hugepages", "2m", "none, 2M or 1G"},
      {"memory_floor_max_mib = lots", "memory_floor_max_mib", "lots", "a whole number of MiB >= 0"},
      {"priority = 0", "priority", "0", "a number in [0.001, 1000000]"},
      {"priority = -2", "priority", "-2", "a number in [0.001, 1000000]"},
      {"priority = inf", "priority", "inf", "a number in [0.001, 1000000]"},
      {"priority = nan", "priority", "nan", "a number in [0.001, 1000000]"},
      // Issue 11, finding 4: a denormal priority has an infinite reciprocal.
      {"priority = 1e-320", "priority", "1e-320", "a number in [0.001, 1000000]"},
      {"priority_min = 0", "priority_min", "0", "a number in [0.001, 1000000]"},
      {"priority_min = 0.0009", "priority_min", "0.0009", "a number in [0.001, 1000000]"},
      {"priority_max = 1e7", "priority_max", "1e7", "a number in [0.001, 1000000]"},
      {"priority_max = x", "priority_max", "x", "a number in [0.001, 1000000]"},
      {"domain_type = lxc", "domain_type", "lxc", "kvm or qemu (or empty: the host config's domain_type)"},
      {"kernel = boot/vmlinuz", "kernel", "boot/vmlinuz", "an absolute path"},
      {"initrd = initrd.gz", "initrd", "initrd.gz", "an absolute path"},
      {"disk = ./a.qcow2", "disk", "./a.qcow2", "an absolute path"},
  };
  for (const auto& c : cases) {
    // Values are checked as they are read, before the checks that need the required keys.
    const std::string err = error_of(c.line + "\n");
    EXPECT_NE(err.find("vm.conf: key '" + c.key + "': '" + c.value + "' is not " + c.allowed), std::string::npos)
        << c.line << " -> " << err;
  }
}

TEST_F(TemplateTest, ImpossibleCombinations) {
  expect_error("memory_mib = 1024\n", "neither kernel nor disk is set");
  expect_error("kernel = /k\n", "key 'memory_mib' is missing");
  expect_error(std::string(kMinimal) + "disk = /d.img\n", "both kernel and disk are set");
  expect_error("memory_mib = 1024\ndisk = /d.img\ninitrd = /i\n", "initrd is set without kernel");
  expect_error("memory_mib = 1024\ndisk = /d.img\nkernel_args = quiet\n", "kernel_args is set without kernel");
  expect_error(std::string(kMinimal) + "vcpus = 4\nmax_vcpus = 2\n",
               "max_vcpus (2) is less than vcpus (4); max_vcpus must be >= vcpus");
  expect_error(std::string(kMinimal) + "vcpus = 2\nmax_vcpus = 2\nvcpus_min = 3\n",
               "vcpus_min (3) is above max_vcpus (2); vcpus_min must be <= max_vcpus");
  expect_error(std::string(kMinimal) + "vcpus_min = 2\n", "vcpus_min (2) is above max_vcpus (1)");
  expect_error(std::string(kMinimal) + "max_memory_mib = 512\n", "max_memory_mib (512) is less than memory_mib (1024)");
  expect_error(std::string(kMinimal) + "memory_floor_mib = 1025\n",
               "memory_floor_mib (1025) is above memory_mib (1024)");
  expect_error(std::string(kMinimal) + "priority_min = 5\npriority_max = 2\npriority = 3\n",
               "priority_max (2) is less than priority_min (5)");
  expect_error(std::string(kMinimal) + "priority = 101\n",
               "priority (101) is outside [priority_min, priority_max] = [1, 100]");
  expect_error(std::string(kMinimal) + "priority = 0.5\n",
               "priority (0.5) is outside [priority_min, priority_max] = [1, 100]");
  expect_error(std::string(kMinimal) + "memory_floor_mib = 512\nmemory_floor_max_mib = 256\n",
               "memory_floor_max_mib (256) is below memory_floor_mib (512)");
  expect_error(std::string(kMinimal) + "memory_floor_max_mib = 2048\n",
               "memory_floor_max_mib (2048) is above max_memory_mib (1024)");
  expect_error("memory_mib = 1000\nkernel = /k\nhugepages = 1G\n",
               "memory_mib (1000) is not a multiple of the hugepage size (1024 MiB)");
  expect_error("memory_mib = 1024\nmax_memory_mib = 1025\nkernel = /k\nhugepages = 2M\n",
               "max_memory_mib (1025) is not a multiple of the hugepage size (2 MiB)");
}

TEST_F(TemplateTest, BoundaryCombinationsAreAllowed) {
  const VmTemplate t = load_template(
      write("vcpus = 2\nmax_vcpus = 2\nmemory_mib = 2048\nmax_memory_mib = 2048\nmemory_floor_mib = 2048\n"
            "priority = 100\nhugepages = 1G\nkernel = /k\n"));
  EXPECT_EQ(t.memory_floor_mib, t.memory_mib);
  EXPECT_DOUBLE_EQ(t.priority, t.priority_max);
}

TEST_F(TemplateTest, FileSyntaxErrors) {
  expect_error(std::string(kMinimal) + "vcpu = 2\n", "unknown key 'vcpu'; known keys: vcpus, max_vcpus");
  expect_error(std::string(kMinimal) + "[vm]\nvcpus = 2\n", "unknown key 'vm.vcpus'");
  expect_error(std::string(kMinimal) + "vcpus = 2\nvcpus = 3\n", "key 'vcpus' is set more than once");
  expect_error(std::string(kMinimal) + "just words\n", "KEY = VALUE");
}

TEST_F(TemplateTest, MissingFileIsAnError) {
  const std::string path = (dir_ / "absent.conf").string();
  try {
    load_template(path);
    FAIL() << "no error for a missing file";
  } catch (const TemplateError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": cannot read the file"), std::string::npos) << e.what();
  }
}

TEST_F(TemplateTest, OverridesApplyAfterTheFile) {
  const VmTemplate t = load_template(write(std::string(kMinimal) + "vcpus = 2\nmax_vcpus = 4\n"),
                                     {"vcpus=3", "kernel_args=a=1 b=2", "priority = 7"});
  EXPECT_EQ(t.vcpus, 3);
  EXPECT_EQ(t.max_vcpus, 4);
  EXPECT_EQ(t.vcpus_min, 1);            // the default
  EXPECT_EQ(t.kernel_args, "a=1 b=2");  // split at the first '='
  EXPECT_DOUBLE_EQ(t.priority, 7.0);
}

TEST_F(TemplateTest, LaterOverrideWins) { EXPECT_EQ(load_template(write(kMinimal), {"vcpus=2", "vcpus=5"}).vcpus, 5); }

TEST_F(TemplateTest, OverrideCanSwitchBootSource) {
  const VmTemplate t = load_template(write("memory_mib = 1024\ndisk = /d.img\n"), {"disk=", "kernel=/k"});
  EXPECT_EQ(t.kernel, "/k");
  EXPECT_EQ(t.disk, "");
}

TEST_F(TemplateTest, OverrideErrors) {
  expect_error(kMinimal, "--set 'cores=2': unknown key 'cores'; known keys: vcpus", {"cores=2"});
  expect_error(kMinimal, "--set 'vcpus': expected KEY=VALUE", {"vcpus"});
  expect_error(kMinimal, "--set: key 'vcpus': '0' is not a whole number in [1, 4096]", {"vcpus=0"});
  expect_error(kMinimal, "(with --set overrides): max_vcpus (1) is less than vcpus (2)", {"vcpus=2", "max_vcpus=1"});
}

TEST_F(TemplateTest, MaxDefaultsFollowOverriddenValues) {
  const VmTemplate t = load_template(write(kMinimal), {"vcpus=3", "memory_mib=2048"});
  EXPECT_EQ(t.max_vcpus, 3);
  EXPECT_EQ(t.max_memory_mib, 2048u);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ShippedTemplates, EveryTemplateLoads) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(LLMORCH_TEMPLATES_DIR)) {
    if (entry.path().extension() != ".conf") continue;
    ++count;
    EXPECT_NO_THROW(load_template(entry.path().string())) << entry.path();
  }
  EXPECT_GE(count, 4);
}

TEST(ShippedTemplates, TinyTestBootsTheTestGuestUnderTcg) {
  const VmTemplate t = load_template(std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf");
  EXPECT_EQ(t.domain_type, "qemu");
  EXPECT_EQ(t.vcpus, 1);
  EXPECT_EQ(t.max_vcpus, 2);
  EXPECT_EQ(t.memory_mib, 256u);
  EXPECT_EQ(t.memory_floor_mib, 96u);
  EXPECT_EQ(t.cpu_policy, policy::CpuPolicy::Shared);
  EXPECT_EQ(t.kernel, "/var/lib/libvirt/images/llmorch/vmlinuz");
  EXPECT_EQ(t.initrd, "/var/lib/libvirt/images/llmorch/initrd.gz");
  EXPECT_NE(t.kernel_args.find("console=ttyS0"), std::string::npos);
  EXPECT_NE(t.kernel_args.find("llmorch.workload=idle"), std::string::npos);
}

TEST(ShippedTemplates, SeventyBNeedsMoreThanOneNodeOfATwoSocketHost) {
  const VmTemplate t = load_template(std::string(LLMORCH_TEMPLATES_DIR) + "/llm-70b-2node.conf");
  EXPECT_GT(t.vcpus, 48);           // a node of the 2-node fixture host has 48 CPUs
  EXPECT_GT(t.memory_mib, 32768u);  // and about 32 GiB
}

TEST(ShippedTemplates, ReadmeDocumentsEveryKey) {
  const std::string readme = slurp(std::string(LLMORCH_TEMPLATES_DIR) + "/README.md");
  for (const auto& key : template_keys()) {
    EXPECT_NE(readme.find("| `" + key + "`"), std::string::npos) << key << " missing from templates/README.md";
  }
  EXPECT_NE(readme.find("--set"), std::string::npos);
}

}  // namespace
}  // namespace llmorch::orch
