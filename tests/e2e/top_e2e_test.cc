// End-to-end (issue 14): `llmorch top` under a real terminal. Two idle TCG test guests with agent
// priorities 1 and 4, a real llmorchd, and `llmorch top` running in a detached tmux session (its own
// server socket, so other tmux users are untouched). `tmux capture-pane` must show both VMs' rows,
// heavier first, with the weights llmorchd wrote to status.json and a measured CPU %; then `q` must end
// top with status 0 and leave the terminal as it found it (stty settings, cursor shown, normal screen);
// so must Ctrl-C in a second session.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "llmorch-e2e-top-";
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

// A tmux server of our own (-L): started by the first new-session, killed in the destructor.
class Tmux {
 public:
  Tmux() : socket_("llmorch-e2e-top-" + std::to_string(::getpid())) {}
  ~Tmux() { run({"kill-server"}); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  CommandResult run(std::vector<std::string> args) const {
    args.insert(args.begin(), {"tmux", "-L", socket_, "-f", "/dev/null"});
    return run_command(args, 10s);
  }
  std::string screen() const { return run({"capture-pane", "-p", "-t", "top"}).out; }
  // Waits until the screen contains every one of `words`; returns the last screen.
  std::string wait_for(const std::vector<std::string>& words, std::chrono::seconds timeout) const {
    std::string s;
    for (auto deadline = SteadyClock::now() + timeout; SteadyClock::now() < deadline;) {
      s = screen();
      bool all = true;
      for (const auto& w : words) all = all && s.find(w) != std::string::npos;
      if (all) return s;
      std::this_thread::sleep_for(200ms);
    }
    return s;
  }

 private:
  std::string socket_;
};

// The screen line that starts with the VM's name, or empty.
std::string row_of(const std::string& screen, const std::string& vm) {
  std::istringstream in(screen);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(vm + " ", 0) == 0) return line;
  return "";
}

std::string weight_text(const json& status, const std::string& vm) {
  const json* v = find_vm(status, vm);
  if (!v) return "?";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v->at("weight").get<double>());
  return buf;
}

TEST(TopE2e, ShowsTheVmsByWeightUnderTmuxAndRestoresTheTerminalOnQAndCtrlC) {
  const auto test_start = SteadyClock::now();
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(dir.path(), {.shared_cpus = "1", .reserved_cpus = "0", .interval_ms = 500});
  Guests guests(config, state);
  const std::string heavy = domain_name("top-a"), light = domain_name("top-b");
  for (const auto& [vm, prio] : {std::pair{heavy, 1}, std::pair{light, 4}}) {
    const auto r = guests.place(vm, {"priority=" + std::to_string(prio), "max_vcpus=1",
                                     kernel_args("llmorch.workload=idle llmorch.priority=" + std::to_string(prio))});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  DaemonProcess daemon(config, state, {"--domain-prefix", kPrefix});

  // Both agents reporting (their priorities in force) and the CPU times in status.json.
  json status;
  bool ready = false;
  for (auto deadline = SteadyClock::now() + 60s; !ready && SteadyClock::now() < deadline;) {
    if (auto s = daemon.wait_for_tick("", 5s)) {
      status = *s;
      const json *h = find_vm(status, heavy), *l = find_vm(status, light);
      ready = h && l && h->value("priority_source", "") == "agent" && l->value("priority_source", "") == "agent" &&
              h->value("cpu_time_s", json()).is_number() && l->value("cpu_time_s", json()).is_number();
    }
    if (!ready) std::this_thread::sleep_for(250ms);
  }
  ASSERT_TRUE(ready) << "both guests' agents never reported; status:\n" << status.dump(2) << daemon.log();
  const auto booted = SteadyClock::now();

  // top in a 120x30 terminal; the shell around it records the terminal before and after, and the exit.
  Tmux tmux;
  const std::string top_cmd = std::string(LLMORCH_CLI) + " top --interval 0.5 --state-dir " + state.string();
  const std::string shell = "before=$(stty -g); " + top_cmd +
                            "; rc=$?; [ \"$(stty -g)\" = \"$before\" ] && echo TTY-RESTORED; echo TOP-EXIT=$rc; "
                            "sleep 60";
  auto r = tmux.run({"new-session", "-d", "-s", "top", "-x", "120", "-y", "30", shell});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::string screen = tmux.wait_for({"llmorch top", heavy, light, "FLAGS"}, 10s);
  ASSERT_NE(row_of(screen, heavy), "") << screen;
  // The second frame has two status files: CPU % is a number, not "-". Wait for it.
  for (auto deadline = SteadyClock::now() + 10s; SteadyClock::now() < deadline; std::this_thread::sleep_for(200ms)) {
    screen = tmux.screen();
    std::istringstream row(row_of(screen, light));
    std::string name, prio, src, weight, shares, cpu;
    row >> name >> prio >> src >> weight >> shares >> cpu;
    if (!cpu.empty() && cpu != "-") break;
  }
  std::printf("screen:\n%s", screen.c_str());
  const auto latest = daemon.wait_for_tick("", 5s);
  ASSERT_TRUE(latest);
  // Heavier first, each with its weight as status.json has it (the frame may be one tick older).
  const std::string heavy_row = row_of(screen, heavy), light_row = row_of(screen, light);
  EXPECT_LT(screen.find(heavy_row), screen.find(light_row)) << screen;
  for (const auto& [vm, row, want_prio] : {std::tuple{heavy, heavy_row, "1.0"}, std::tuple{light, light_row, "4.0"}}) {
    std::istringstream in(row);
    std::string name, prio, src, weight, shares, cpu;
    in >> name >> prio >> src >> weight >> shares >> cpu;
    EXPECT_EQ(prio, want_prio) << row;
    EXPECT_EQ(src, "agent") << row;
    EXPECT_TRUE(weight == weight_text(status, vm) || weight == weight_text(*latest, vm)) << row;
    EXPECT_NE(cpu, "-") << "no CPU % after two frames: " << row;
  }
  EXPECT_GT(std::stod(weight_text(status, heavy)), std::stod(weight_text(status, light)));

  // q: top ends with 0, stty settings back, cursor visible, top's frame gone with its alternate screen.
  const auto quit = SteadyClock::now();
  r = tmux.run({"send-keys", "-t", "top", "q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  screen = tmux.wait_for({"TOP-EXIT="}, 5s);
  const double quit_s = std::chrono::duration<double>(SteadyClock::now() - quit).count();
  EXPECT_NE(screen.find("TOP-EXIT=0"), std::string::npos) << screen;
  EXPECT_NE(screen.find("TTY-RESTORED"), std::string::npos) << "stty settings differ after top:\n" << screen;
  EXPECT_EQ(screen.find("FLAGS"), std::string::npos) << "top's frame is still on the screen:\n" << screen;
  EXPECT_EQ(tmux.run({"display-message", "-p", "-t", "top", "#{cursor_flag}"}).out, "1\n") << "cursor hidden";
  EXPECT_EQ(tmux.run({"display-message", "-p", "-t", "top", "#{alternate_on}"}).out, "0\n") << "alternate screen";

  // Ctrl-C (SIGINT from the terminal) ends it the same way.
  r = tmux.run({"new-session", "-d", "-s", "top2", "-x", "100", "-y", "20", shell});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string screen2;
  for (auto deadline = SteadyClock::now() + 10s; SteadyClock::now() < deadline; std::this_thread::sleep_for(200ms)) {
    screen2 = tmux.run({"capture-pane", "-p", "-t", "top2"}).out;
    if (screen2.find(heavy) != std::string::npos) break;
  }
  ASSERT_NE(screen2.find(heavy), std::string::npos) << screen2;
  ASSERT_EQ(tmux.run({"send-keys", "-t", "top2", "C-c"}).exit_code, 0);
  for (auto deadline = SteadyClock::now() + 5s; SteadyClock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    screen2 = tmux.run({"capture-pane", "-p", "-t", "top2"}).out;
    if (screen2.find("TOP-EXIT=") != std::string::npos) break;
  }
  EXPECT_NE(screen2.find("TOP-EXIT=0"), std::string::npos) << screen2;
  EXPECT_NE(screen2.find("TTY-RESTORED"), std::string::npos) << screen2;
  EXPECT_EQ(tmux.run({"display-message", "-p", "-t", "top2", "#{cursor_flag}"}).out, "1\n") << "cursor hidden";

  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
  figure("top_quit_s", quit_s);
  figure("top_guests_ready_s", std::chrono::duration<double>(booted - test_start).count());
  figure("top_e2e_test_s", std::chrono::duration<double>(SteadyClock::now() - test_start).count());
}

}  // namespace
}  // namespace llmorch::e2e
