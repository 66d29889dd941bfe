// Runs a program as a child process with given stdin, capturing stdout, stderr and exit status.
#pragma once

#include <chrono>
#include <sstream>
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

#ifdef CAIRN_BINARY
// Runs the cairn binary under test with `args`.
inline ProcessResult cairn(std::vector<std::string> args, const std::string& input = "") {
  args.insert(args.begin(), CAIRN_BINARY);
  return run_process(args, input);
}
#endif

// The lines of `text`, without their newlines.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

}  // namespace cairn::testing
