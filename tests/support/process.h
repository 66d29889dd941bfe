// Runs a program as a child process with given stdin, capturing stdout, stderr and exit status.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace cairn::testing {

struct ProcessResult {
  int exit_code = -1;  // the exit status, or 128 + signal number if killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with arguments argv[1..], feeds `input` to its stdin, waits at most
// `timeout` (then kills it and reports exit_code 128 + SIGKILL).
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = "",
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace cairn::testing
