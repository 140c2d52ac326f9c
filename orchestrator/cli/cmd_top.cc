// llmorch top: a live per-VM view of llmorchd's status file (like virt-top / htop). The frame is
// render_top (top_view.h, pure and unit-tested); this file only reads status.json every interval and
// draws. Plain ANSI escapes, no ncurses: a dozen lines redrawn in full each interval need nothing more,
// and the package keeps one library fewer.
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <ctime>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "top_view.h"

namespace llmorch::cli {

namespace {

namespace po = boost::program_options;

constexpr const char* kHelp = R"(usage: llmorch top [--interval SECONDS] [--once] [--state-dir DIR]

A live view of the VMs llmorchd manages, read from its status file DIR/status.json (default
/run/llmorch), heaviest weight first, redrawn every interval:
  PRIO SRC     effective priority and where it comes from (agent, template, stale, hostile)
  WEIGHT       the VM's weight; SHARES its planned cpu_shares
  CPU%         CPU used by the VM's QEMU between two status files, in % of one host CPU
  VCPU         vCPUs online (when llmorchd manages the count)
  BAL/FLOOR    balloon now / its floor, MiB
  AGE          age of the agent's last report
  FLAGS        hostile, flapping, unresponsive, stale, no-agent, ballooning, and any other problem

  --interval SECONDS  time between frames (default 2; at least 0.1)
  --once              print one frame without terminal control and exit; waits up to one interval for
                      a newer status file so that CPU % is known (--interval 0: at once, CPU % "-")
  --state-dir DIR     llmorchd's state directory (default /run/llmorch)

Keys: q quits (so does Ctrl-C); the terminal is restored on the way out.
Exit status: 0 done; 1 --once and llmorchd's status file cannot be read or is stale; 2 bad arguments.
)";

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

std::string clock_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// The status file now and the last one with another last_tick_at (for CPU %).
struct Samples {
  DaemonView now;
  std::optional<orch::StatusFile> previous;

  void read(const std::string& state_dir) {
    DaemonView next = read_daemon_view(state_dir, now_unix_seconds());
    if (now.status && next.status && next.status->last_tick_at != now.status->last_tick_at)
      previous = std::move(now.status);
    now = std::move(next);
  }
  TopInput input(bool live) const {
    return {.status = now.status ? &*now.status : nullptr,
            .previous = previous ? &*previous : nullptr,
            .why_not = now.running ? "" : now.why_not,
            .age_s = now.age_s,
            .clock = clock_text(),
            .live = live};
  }
};

// The terminal while top runs: raw keys (no echo, no line buffering; Ctrl-C still sends SIGINT), the
// alternate screen, no cursor. The destructor puts everything back.
class Terminal {
 public:
  Terminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      restore_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    write("\x1b[?1049h\x1b[?25l");
  }
  ~Terminal() {
    write("\x1b[?25h\x1b[?1049l");
    if (restore_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  static void size(std::size_t& width, std::size_t& height) {
    winsize ws{};
    width = 80, height = 24;
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) width = ws.ws_col, height = ws.ws_row;
  }
  static void write(const std::string& s) {
    std::size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(STDOUT_FILENO, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  termios saved_{};
  bool restore_ = false;
};

// Waits up to `seconds` for a key; true when it was q/Q (or a stop signal arrived).
bool wait_for_quit(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_stop) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return false;
    if (n > 0) {
      char c = 0;
      const ssize_t got = ::read(STDIN_FILENO, &c, 1);
      if (got == 0) return true;  // stdin closed: nobody can press q any more
      if (got == 1 && (c == 'q' || c == 'Q')) return true;
    }
  }
  return true;
}

int run_once(const std::string& state_dir, double interval, Io io) {
  Samples samples;
  samples.read(state_dir);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(interval);
  while (samples.now.running && !samples.previous && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    samples.read(state_dir);
  }
  for (const std::string& line : render_top(samples.input(false), 200)) io.out << line << "\n";
  return samples.now.running ? kExitOk : kExitFailure;
}

}  // namespace

int cmd_top(const std::vector<std::string>& args, Io io) {
  return guarded("top", io, [&] {
    double interval = 2.0;
    bool once = false, help = false;
    std::string state_dir = orch::kDefaultStateDir;
    po::options_description options;
    options.add_options()("help,h", po::bool_switch(&help), "help")(
        "interval", po::value(&interval), "seconds between frames")("once", po::bool_switch(&once), "one frame")(
        "state-dir", po::value(&state_dir), "llmorchd's state directory");
    parse_args(args, options);
    if (help) {
      io.out << kHelp;
      return kExitOk;
    }
    if (!(interval >= 0) || (!once && interval < 0.1))
      throw UsageError("--interval must be at least 0.1 seconds (0 only with --once), not " + fixed(interval, 2));
    if (once) return run_once(state_dir, interval, io);
    if (!::isatty(STDOUT_FILENO))
      throw UsageError("llmorch top draws on a terminal; redirected, use 'llmorch top --once' (or 'llmorch status')");

    g_stop = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;  // no SA_RESTART: poll returns at once
    struct sigaction old_int {
    }, old_term{};
    ::sigaction(SIGINT, &sa, &old_int);
    ::sigaction(SIGTERM, &sa, &old_term);
    {
      Terminal terminal;
      Samples samples;
      do {
        samples.read(state_dir);
        std::size_t width = 0, height = 0;
        Terminal::size(width, height);
        std::vector<std::string> lines = render_top(samples.input(true), width);
        if (lines.size() > height) lines.resize(height);
        std::string frame = "\x1b[H";
        for (std::size_t i = 0; i < lines.size(); ++i)
          frame += lines[i] + "\x1b[K" + (i + 1 < lines.size() ? "\r\n" : "");
        frame += "\x1b[J";
        Terminal::write(frame);
      } while (!wait_for_quit(interval));
    }
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    return kExitOk;
  });
}

}  // namespace llmorch::cli
