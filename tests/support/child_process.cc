// Child processes that run alongside the test (child_process.h).
#include "support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "support/temp_dir.h"

namespace cairn::testing {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

int exit_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<std::string> serve_argv(const std::string& binary, const std::vector<std::string>& args,
                                    const std::string& token) {
  std::vector<std::string> argv{binary, "serve", "--port", "0"};
  if (!token.empty()) argv.insert(argv.end(), {"--token", token});
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& log_path,
                           bool read_stdout)
    : log_path_(log_path) {
  int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) fail("open " + log_path);
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null < 0) fail("open /dev/null");
  int out[2] = {-1, -1};
  if (read_stdout && pipe2(out, O_CLOEXEC) != 0) fail("pipe2");
  // Writes to a client that died must fail with EPIPE rather than end the test.
  signal(SIGPIPE, SIG_IGN);
  pid_ = fork();
  if (pid_ < 0) fail("fork");
  if (pid_ == 0) {
    dup2(null, 0);
    dup2(read_stdout ? out[1] : log, 1);
    dup2(log, 2);
    std::vector<char*> raw;
    for (const std::string& a : argv)
      raw.push_back(const_cast<char*>(a.c_str()));
    raw.push_back(nullptr);
    execv(raw[0], raw.data());
    _exit(127);
  }
  ::close(log);
  ::close(null);
  if (read_stdout) {
    ::close(out[1]);
    out_ = out[0];
  }
}

ChildProcess::~ChildProcess() {
  kill();
  if (out_ >= 0) ::close(out_);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (auto end = out_buf_.find('\n'); end != std::string::npos) {
      std::string line = out_buf_.substr(0, end);
      out_buf_.erase(0, end + 1);
      return line;
    }
    if (out_ < 0) return std::nullopt;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd fd{out_, POLLIN, 0};
    int n = poll(&fd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("poll");
    if (n == 0) return std::nullopt;
    char buf[4096];
    ssize_t r = ::read(out_, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(out_);
      out_ = -1;
      if (out_buf_.empty()) return std::nullopt;
      return std::exchange(out_buf_, {});
    }
    out_buf_.append(buf, static_cast<std::size_t>(r));
  }
}

std::string ChildProcess::read_rest(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::string text;
  while (auto line = read_line(std::chrono::duration_cast<std::chrono::milliseconds>(
             std::max<Clock::duration>(deadline - Clock::now(), Clock::duration::zero())))) {
    text += *line + "\n";
  }
  return text;
}

bool ChildProcess::send(int signal) {
  if (status_ || pid_ <= 0) return false;
  return ::kill(pid_, signal) == 0;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  if (pid_ <= 0) return std::nullopt;
  auto deadline = Clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = exit_status(status);
      return status_;
    }
    if (r < 0 && errno != EINTR) fail("waitpid");
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int ChildProcess::kill() {
  if (status_) return *status_;
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  status_ = exit_status(status);
  return *status_;
}

std::string ChildProcess::log() const {
  return read_file(log_path_);
}

ServerProcess::ServerProcess(const std::string& binary, const std::vector<std::string>& args,
                             const std::string& log_path, std::string token,
                             std::chrono::milliseconds startup)
    : token_(std::move(token)),
      process_(serve_argv(binary, args, token_), log_path, /*read_stdout=*/true) {
  auto line = process_.read_line(startup);
  std::smatch m;
  static const std::regex listening(R"(cairn serve: listening on [^ ]*:([0-9]+)\b.*)");
  if (!line || !std::regex_match(*line, m, listening)) {
    process_.kill();
    throw std::runtime_error("cairn serve did not start: stdout \"" + line.value_or("") +
                             "\", log:\n" + process_.log());
  }
  ready_line_ = *line;
  port_ = static_cast<std::uint16_t>(std::stoul(m[1]));
}

std::string ServerProcess::url() const {
  return "cairn://" + (token_.empty() ? std::string() : token_ + "@") + address();
}

}  // namespace cairn::testing
