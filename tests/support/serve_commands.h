// The cairn commands the server's integration tests run against a ServerProcess: a shell
// connected to it, and `cairn serve --stop` followed by the wait for the server to exit.
#pragma once

#include <gtest/gtest.h>

#include <stdlib.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace cairn::testing {

// `cairn shell --connect HOST:PORT [--token T] EXTRA... -c COMMANDS`.
inline ProcessResult shell_on(const ServerProcess& server, const std::string& commands,
                              const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"shell", "--connect", server.address()};
  if (!server.token().empty()) args.insert(args.end(), {"--token", server.token()});
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), {"-c", commands});
  return cairn(args);
}

// `cairn serve --stop --port P [--token T] EXTRA...`, then waits at most 30 s for the server to
// exit; the server's exit status, or nullopt if it did not.
inline std::optional<int> stop_server(ServerProcess& server,
                                      const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"serve", "--stop", "--port", std::to_string(server.port())};
  if (!server.token().empty()) args.insert(args.end(), {"--token", server.token()});
  args.insert(args.end(), extra.begin(), extra.end());
  ProcessResult r = cairn(args);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return server.wait(std::chrono::seconds(30));
}

// The lines as one text, each ended by a newline.
inline std::string text_of(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines)
    text += line + "\n";
  return text;
}

// Seconds since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

#ifdef CAIRN_BINARY
// A fixture for tests that start servers: each gets its own log in a directory of the test's,
// and no CAIRN_TOKEN from the environment reaches the clients and servers it starts.
class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override { unsetenv("CAIRN_TOKEN"); }

  std::unique_ptr<ServerProcess> serve(const std::vector<std::string>& args,
                                       std::string token = {}) {
    std::string log = dir_.file("serve-" + std::to_string(++servers_) + ".log");
    return std::make_unique<ServerProcess>(CAIRN_BINARY, args, log, std::move(token));
  }

  TempDir dir_;
  int servers_ = 0;
};
#endif

}  // namespace cairn::testing
