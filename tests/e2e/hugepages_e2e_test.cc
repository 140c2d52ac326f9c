// End-to-end: a guest backed by 2 MiB hugepages on a real hugetlbfs pool. The test sizes node 0's pool to
// exactly one tiny guest (64 pages, 128 MiB) and restores the old size afterwards. Asserts that
// `llmorch host` shows the pool, that the guest boots with its memory in the pool, that a second such
// guest is refused (exit 3, nothing defined) because placement counts the pool, and that llmorchd
// leaves the hugepage guest's balloon alone and says why. Needs a hugetlbfs mount that libvirtd saw at
// its start: tools/libvirtd-up mounts one before starting libvirtd.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kPrefix = "llmorch-e2e-huge-";
const std::vector<std::string> kOwnVms = {"--domain-prefix", kPrefix};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

constexpr long kPages = 64;  // 2 MiB pages: 128 MiB, one guest
const std::vector<std::string> kHugeGuest = {"hugepages=2M", "memory_mib=128", "max_memory_mib=128",
                                             "memory_floor_mib=96"};

// Node 0's 2 MiB pool (the whole host's on a kernel without per-node sysfs).
fs::path pool_file() {
  const fs::path node0 = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";
  return fs::exists(node0) ? node0 : fs::path("/proc/sys/vm/nr_hugepages");
}

std::optional<long> read_long(const fs::path& p) {
  std::ifstream in(p);
  long v = 0;
  if (in >> v) return v;
  return std::nullopt;
}

bool write_long(const fs::path& p, long v) {
  std::ofstream out(p);
  out << v << "\n";
  out.close();
  return static_cast<bool>(out);
}

// Sets the pool for the test's lifetime.
class PoolSize {
 public:
  explicit PoolSize(long pages) : old_(read_long(pool_file())) {
    if (old_) write_long(pool_file(), pages);
  }
  ~PoolSize() {
    if (old_) write_long(pool_file(), *old_);
  }
  PoolSize(const PoolSize&) = delete;
  PoolSize& operator=(const PoolSize&) = delete;

 private:
  std::optional<long> old_;
};

// A field of /proc/meminfo (pages for the HugePages_* fields).
std::optional<long> meminfo(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  return std::nullopt;
}

bool hugetlbfs_mounted() {
  std::ifstream in("/proc/mounts");
  for (std::string line; std::getline(in, line);)
    if (line.find(" hugetlbfs ") != std::string::npos) return true;
  return false;
}

// Node 0's 2 MiB pool as `llmorch host --json` shows it, or null.
json host_pool(const fs::path& config) {
  const CommandResult r = run_command({LLMORCH_CLI, "host", "--json", "--connect", kUri, "--config", config.string()});
  if (r.exit_code != 0) return json();
  const json doc = json::parse(r.out, nullptr, false);
  if (doc.is_discarded()) return json();
  for (const json& p : doc["nodes"][0]["hugepages"])
    if (p["page_kib"] == 2048) return p;
  return json();
}

TEST(HugepagesE2e, GuestRunsOnThePoolASecondIsRefusedAndItsBalloonIsLeftAlone) {
  ASSERT_TRUE(hugetlbfs_mounted()) << "no hugetlbfs mounted; tools/libvirtd-up mounts one at /dev/hugepages "
                                      "before it starts libvirtd";
  const auto total = meminfo("HugePages_Total"), free = meminfo("HugePages_Free");
  ASSERT_TRUE(total && free);
  ASSERT_EQ(*total, *free) << "hugepages are in use on this host: the test needs node 0's pool to itself";
  PoolSize pool(kPages);
  ASSERT_EQ(read_long(pool_file()), kPages) << "the kernel could not reserve " << kPages << " 2 MiB pages";

  TempDir dir;
  const auto state = dir.path() / "state";
  fs::create_directories(state);
  const auto config = write_host_config(dir.path(), {.shared_cpus = "1", .reserved_cpus = "0"});
  json p = host_pool(config);
  ASSERT_FALSE(p.is_null()) << "llmorch host shows no 2 MiB pool on node 0";
  EXPECT_EQ(p["pool_mib"], 2 * kPages);
  EXPECT_EQ(p["available_mib"], 2 * kPages);

  Guests guests(config, state);
  const std::string a = domain_name("huge-a"), b = domain_name("huge-b");
  CommandResult r = guests.place(a, kHugeGuest);
  ASSERT_EQ(r.exit_code, 0) << r.err
                            << "\n(libvirtd must have started after hugetlbfs was mounted: restart it with "
                               "`pkill -x libvirtd; tools/libvirtd-up`)";
  const CommandResult xml = run_command({"virsh", "-c", kUri, "dumpxml", a});
  EXPECT_NE(xml.out.find("<hugepages>"), std::string::npos) << xml.out;
  ASSERT_TRUE(wait_for_console(a, "llmorch-guest: ready", 90s)) << serial_log(a);
  // QEMU maps the whole pool: reserved at mmap, in use as the guest touches it.
  const auto in_use = *meminfo("HugePages_Total") - *meminfo("HugePages_Free") + *meminfo("HugePages_Rsvd");
  EXPECT_EQ(in_use, kPages);

  p = host_pool(config);
  ASSERT_FALSE(p.is_null());
  EXPECT_EQ(p["available_mib"], 0);
  EXPECT_EQ(p["vms"][a], 2 * kPages);

  r = guests.place(b, kHugeGuest);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("hugepages"), std::string::npos) << r.err;
  EXPECT_NE(run_command({"virsh", "-c", kUri, "domuuid", b}).exit_code, 0) << "the refused VM was defined";

  DaemonProcess daemon(config, state, kOwnVms);
  std::string reason, seen;
  for (int i = 0; i < 10 && reason.empty(); ++i) {
    const auto s = daemon.wait_for_tick(seen, 10s);
    ASSERT_TRUE(s) << daemon.log();
    seen = (*s)["last_tick_at"].get<std::string>();
    if (const json* vm = find_vm(*s, a); vm && vm->contains("balloon")) reason = (*vm)["balloon"].value("reason", "");
  }
  EXPECT_NE(reason.find("hugepage-backed"), std::string::npos) << reason;
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace llmorch::e2e
