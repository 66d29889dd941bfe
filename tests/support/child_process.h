// Long-running child processes for integration tests: a server to talk to while it runs, client
// processes started together and reaped later. Unlike run_process (process.h), starting one
// does not wait for it. A ChildProcess still running when destroyed is killed (SIGKILL) and
// reaped, so a failed assertion never leaves processes behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cairn::testing {

class ChildProcess {
 public:
  // Runs argv[0] (a path) with arguments argv[1..] and stdin from /dev/null. Its stderr is
  // appended to `log_path`; so is its stdout, unless `read_stdout`, in which case read_line()
  // reads it from a pipe.
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path,
               bool read_stdout = false);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // The next line of stdout, without its newline; nullopt at end of output or after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // The rest of stdout until it ends, at most `timeout`.
  std::string read_rest(std::chrono::milliseconds timeout);

  // Sends `signal`; false if the process has already been reaped.
  bool send(int signal);
  // Waits at most `timeout` for the process to end: its exit status (128 + signal number if a
  // signal ended it), or nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // SIGKILL and reap, if still running; its exit status.
  int kill();
  // What it wrote to its log so far.
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  int out_ = -1;
  std::string out_buf_;
  std::string log_path_;
};

// `cairn serve --port 0 ARGS...` started and ready: the constructor waits for its "listening on"
// line and learns the port from it (throwing, with the server's log, if that does not come).
// Logs go to `log_path`.
class ServerProcess {
 public:
  ServerProcess(const std::string& binary, const std::vector<std::string>& args,
                const std::string& log_path, std::string token = {},
                std::chrono::milliseconds startup = std::chrono::seconds(30));

  std::uint16_t port() const { return port_; }
  const std::string& token() const { return token_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // cairn://TOKEN@127.0.0.1:PORT
  std::string url() const;
  ChildProcess& process() { return process_; }
  const std::string& ready_line() const { return ready_line_; }

  // Waits at most `timeout` for the server to exit; its exit status, or nullopt.
  std::optional<int> wait(std::chrono::milliseconds timeout) { return process_.wait(timeout); }
  std::string log() const { return process_.log(); }

 private:
  std::string token_;
  ChildProcess process_;
  std::string ready_line_;
  std::uint16_t port_ = 0;
};

}  // namespace cairn::testing
