// One llmorchd per libvirt URI: the lock file's name, and flock between two holders (two ServiceLocks
// in one process conflict as two processes do: each opens the file anew).
#include "llmorch/orch/service_lock.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;

class ServiceLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("llmorch-lock-test-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
  const std::chrono::system_clock::time_point t0 = std::chrono::system_clock::time_point{} + std::chrono::hours(490000);
};

TEST(ServiceLockName, IsAFileNameThatKeepsTheUriReadableAndTellsSimilarUrisApart) {
  const std::string name = service_lock_name("qemu:///system");
  EXPECT_EQ(name.rfind("llmorchd.qemu____system.", 0), 0u) << name;
  EXPECT_EQ(name.size(), std::string("llmorchd.qemu____system.").size() + 8 + 5) << name;
  EXPECT_EQ(name.substr(name.size() - 5), ".lock");
  EXPECT_NE(service_lock_name("qemu:///system"), service_lock_name("qemu:///system/"));
  EXPECT_NE(service_lock_name("qemu:///system"), service_lock_name("qemu_///system"));
  EXPECT_EQ(service_lock_name("qemu:///system"), name);
  const std::string odd = service_lock_name("qemu+ssh://root@host/system?keyfile=/../../etc/passwd&x=" +
                                            std::string(500, 'y'));
  EXPECT_EQ(odd.find('/'), std::string::npos) << odd;
  EXPECT_LE(odd.size(), 200u);
}

// llmorchd --dry-run asks who holds the lock instead of taking it.
TEST_F(ServiceLockTest, TheHolderIsNamedWhileHeldAndNobodyBeforeOrAfterAndTheProbeCreatesNothing) {
  EXPECT_EQ(service_lock_holder(dir.string(), "qemu:///system"), std::nullopt);
  EXPECT_FALSE(fs::exists(dir)) << "the probe created the state directory";
  {
    ServiceLock held(dir.string(), "qemu:///system", 4242, t0);
    const std::optional<std::string> holder = service_lock_holder(dir.string(), "qemu:///system");
    ASSERT_TRUE(holder.has_value());
    EXPECT_EQ(holder->rfind("pid 4242, started_at ", 0), 0u) << *holder;
    EXPECT_EQ(service_lock_holder(dir.string(), "qemu:///session"), std::nullopt);  // another URI
    // The probe left the lock with its holder: a second holder is still refused.
    EXPECT_THROW(ServiceLock(dir.string(), "qemu:///system", 4343, t0), ServiceLockHeld);
  }
  EXPECT_EQ(service_lock_holder(dir.string(), "qemu:///system"), std::nullopt);  // file left, lock free
  // The probe does not hold it either: a new holder gets it.
  EXPECT_NO_THROW(ServiceLock(dir.string(), "qemu:///system", 4444, t0));
}

TEST_F(ServiceLockTest, ASecondHolderIsRefusedWithTheFirstsPidAndStartTime) {
  ServiceLock first(dir.string(), "qemu:///system", 4242, t0);
  std::ifstream in(first.path());
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().rfind("pid 4242\nstarted_at ", 0), 0u) << text.str();
  EXPECT_NE(text.str().find("\nuri qemu:///system\n"), std::string::npos) << text.str();
  try {
    ServiceLock second(dir.string(), "qemu:///system", 4343, t0);
    FAIL() << "the second lock was granted";
  } catch (const ServiceLockHeld& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("another llmorchd already manages qemu:///system (pid 4242, started_at "), std::string::npos)
        << what;
    EXPECT_NE(what.find(first.path()), std::string::npos) << what;
    EXPECT_NE(what.find("stop it first"), std::string::npos) << what;
  }
}

TEST_F(ServiceLockTest, OtherUrisLockApartAndTheLockIsFreeAgainOnceReleased) {
  {
    ServiceLock system(dir.string(), "qemu:///system", 1, t0);
    ServiceLock session(dir.string(), "qemu:///session", 2, t0);  // another URI: its own lock
    EXPECT_NE(system.path(), session.path());
  }
  ServiceLock again(dir.string(), "qemu:///system", 3, t0);  // the file stays; the flock went
  std::ifstream in(again.path());
  std::string first_line;
  std::getline(in, first_line);
  EXPECT_EQ(first_line, "pid 3");  // rewritten, not appended
}

TEST_F(ServiceLockTest, AnUnsafeStateDirectoryIsRefusedAsForTheStatusFile) {
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::all);  // world-writable
  EXPECT_THROW(ServiceLock(dir.string(), "qemu:///system", 1, t0), std::runtime_error);
}

}  // namespace
}  // namespace llmorch::orch
