// `cairn serve` reached the other ways users run it: over TLS (--tls-cert/--tls-key, and the
// clients' --tls, --tls-ca and --insecure), over a unix socket (--unix), and packing by itself
// (--gc-bytes). Real server processes on free ports, driven by the cairn binary.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/child_process.h"
#include "support/process.h"
#include "support/serve_commands.h"
#include "support/temp_dir.h"
#include "support/tls_files.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

using ServeTransport = ServeTest;

// ---- TLS ----

TEST_F(ServeTransport, TlsWithTheRightCaWorksAndEveryOtherClientFailsCleanly) {
  TlsFiles files;
  auto server =
      serve({"--memory", "--tls-cert", files.cert(), "--tls-key", files.key()}, "tls-token");
  EXPECT_NE(server->ready_line().find("(TLS)"), std::string::npos) << server->ready_line();

  ProcessResult write = shell_on(*server, "set /a 1; commit", {"--tls-ca", files.ca()});
  ASSERT_EQ(write.exit_code, 0) << write.err;
  ProcessResult read = shell_on(*server, "get /a", {"--tls", "--tls-ca", files.ca()});
  EXPECT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "1\n");

  // Signed by a CA the client was not told to trust.
  ProcessResult wrong_ca = shell_on(*server, "get /a", {"--tls-ca", files.other_ca()});
  EXPECT_EQ(wrong_ca.exit_code, 1) << wrong_ca.err;
  EXPECT_NE(wrong_ca.err.find("certificate is not trusted"), std::string::npos) << wrong_ca.err;
  EXPECT_NE(wrong_ca.err.find(files.other_ca()), std::string::npos) << wrong_ca.err;
  EXPECT_EQ(wrong_ca.out, "") << "data was returned";
  // --tls alone trusts the system's CAs, which did not sign this server.
  ProcessResult system_ca = shell_on(*server, "get /a", {"--tls"});
  EXPECT_EQ(system_ca.exit_code, 1) << system_ca.err;
  EXPECT_NE(system_ca.err.find("the system's CAs"), std::string::npos) << system_ca.err;

  // A plaintext client to the TLS port: a clear error, at once, not a hang.
  auto start = Clock::now();
  ProcessResult plain = run_process({CAIRN_BINARY, "shell", "--connect", server->address(),
                                     "--token", server->token(), "-c", "get /a"},
                                    "", 20s);
  double took = seconds_since(start);
  EXPECT_EQ(plain.exit_code, 1) << plain.err;
  EXPECT_NE(plain.err.find("TLS"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("--tls"), std::string::npos) << "no hint what to do: " << plain.err;
  EXPECT_EQ(plain.out, "");
  EXPECT_LT(took, 10.0) << plain.err;

  // The explicit opt-out skips verification.
  ProcessResult insecure = shell_on(*server, "get /a", {"--insecure"});
  EXPECT_EQ(insecure.exit_code, 0) << insecure.err;
  EXPECT_EQ(insecure.out, "1\n");
  // --connect is a place, not a URL: parameters in it would quietly override the flags (here,
  // turn off the verification --tls-ca asks for).
  for (const std::string& place : {server->address() + "?insecure=1",
                                   "cairn://" + server->address(), "tok@" + server->address()}) {
    ProcessResult odd =
        cairn({"shell", "--connect", place, "--tls-ca", files.other_ca(), "-c", "get /a"});
    EXPECT_EQ(odd.exit_code, 2) << place << ": " << odd.err;
    EXPECT_NE(odd.err.find("HOST:PORT"), std::string::npos) << odd.err;
    EXPECT_EQ(odd.out, "") << place;
  }
  // TLS and the token are separate checks: the right CA with a wrong token is still refused.
  ProcessResult no_token = cairn({"shell", "--connect", server->address(), "--tls-ca", files.ca(),
                                  "--token", "wrong", "-c", "get /a"});
  EXPECT_EQ(no_token.exit_code, 1) << no_token.err;
  EXPECT_NE(no_token.err.find("token"), std::string::npos) << no_token.err;

  ProcessResult info = cairn({"info", "--connect", server->address(), "--token", server->token(),
                              "--tls-ca", files.ca(), "--json"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  Json j = Json::parse(info.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object() && j.contains("clients")) << info.out;
  ProcessResult info_wrong = cairn({"info", "--connect", server->address(), "--token",
                                    server->token(), "--tls-ca", files.other_ca()});
  EXPECT_EQ(info_wrong.exit_code, 1) << info_wrong.err;

  // --stop speaks TLS too; without it the stop request never reaches the server.
  ProcessResult plain_stop = run_process({CAIRN_BINARY, "serve", "--stop", "--port",
                                          std::to_string(server->port()), "--token", "tls-token"},
                                         "", 20s);
  EXPECT_EQ(plain_stop.exit_code, 1) << plain_stop.err;
  EXPECT_FALSE(server->wait(0ms).has_value()) << "a plaintext stop stopped the TLS server";
  std::optional<int> status = stop_server(*server, {"--tls-ca", files.ca()});
  ASSERT_TRUE(status.has_value()) << server->log();
  EXPECT_EQ(*status, 0) << server->log();
}

TEST_F(ServeTransport, TlsClientFlagsAreCheckedBeforeConnecting) {
  // Usage errors (status 2), each naming what is wrong.
  ProcessResult both =
      cairn({"shell", "--connect", "127.0.0.1:1", "--tls-ca", "ca.pem", "--insecure", "-c", "ls"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_NE(both.err.find("--insecure"), std::string::npos) << both.err;
  ProcessResult unix_tls =
      cairn({"shell", "--connect", "unix:" + dir_.file("s.sock"), "--tls", "-c", "ls"});
  EXPECT_EQ(unix_tls.exit_code, 2) << unix_tls.err;
  EXPECT_NE(unix_tls.err.find("unix socket"), std::string::npos) << unix_tls.err;
  ProcessResult no_connect = cairn({"shell", "--memory", "--tls", "-c", "ls"});
  EXPECT_EQ(no_connect.exit_code, 2) << no_connect.err;
  EXPECT_NE(no_connect.err.find("--connect"), std::string::npos) << no_connect.err;

  ProcessResult help = cairn({"shell", "--help"});
  for (const char* text : {"--tls", "--tls-ca", "--insecure", "unix:PATH"})
    EXPECT_NE(help.out.find(text), std::string::npos) << text << "\n" << help.out;
  ProcessResult info_help = cairn({"info", "--help"});
  for (const char* text : {"--tls", "--tls-ca", "--insecure", "unix:PATH"})
    EXPECT_NE(info_help.out.find(text), std::string::npos) << text << "\n" << info_help.out;
  ProcessResult serve_help = cairn({"serve", "--help"});
  for (const char* text : {"--tls", "--tls-ca", "--insecure"})
    EXPECT_NE(serve_help.out.find(text), std::string::npos) << text << "\n" << serve_help.out;
}

// ---- unix sockets ----

TEST_F(ServeTransport, UnixSocketServesReplacesAStaleSocketAndRefusesALiveOne) {
  std::string socket = dir_.file("cairn.sock");
  std::string db = dir_.file("unix.cairn");
  std::string where = "unix:" + socket;
  auto server = serve({"--file", db, "--unix", socket});
  EXPECT_NE(server->ready_line().find(socket), std::string::npos) << server->ready_line();

  ProcessResult write = cairn({"shell", "--connect", where, "-c", "set /a 1; commit"});
  ASSERT_EQ(write.exit_code, 0) << write.err;
  ProcessResult read = cairn({"shell", "--connect", where, "-c", "get /a"});
  EXPECT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "1\n");
  ProcessResult info = cairn({"info", "--connect", where, "--json"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("\"clients\""), std::string::npos) << info.out;

  // A second server on the live socket is refused, and the first one is unharmed.
  ProcessResult second =
      run_process({CAIRN_BINARY, "serve", "--memory", "--port", "0", "--unix", socket}, "", 15s);
  EXPECT_EQ(second.exit_code, 1) << second.out << second.err;
  EXPECT_NE(second.err.find("another server is listening on " + socket), std::string::npos)
      << second.err;
  EXPECT_EQ(cairn({"shell", "--connect", where, "-c", "get /a"}).out, "1\n");

  // A server killed outright leaves its socket file; the next one replaces it.
  EXPECT_EQ(server->process().kill(), 128 + SIGKILL);
  ASSERT_TRUE(std::filesystem::exists(socket)) << "no stale socket to test with";
  auto again = serve({"--file", db, "--unix", socket});
  ProcessResult after = cairn({"shell", "--connect", where, "-c", "get /a; set /b 2; commit"});
  EXPECT_EQ(after.exit_code, 0) << after.err << again->log();
  EXPECT_EQ(lines_of(after.out).front(), "1");

  // Stopped through the socket, the server removes it.
  ProcessResult stop = cairn({"serve", "--stop", "--unix", socket});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  std::optional<int> status = again->wait(30s);
  ASSERT_TRUE(status.has_value()) << again->log();
  EXPECT_EQ(*status, 0) << again->log();
  EXPECT_FALSE(std::filesystem::exists(socket));
  ProcessResult gone = cairn({"shell", "--connect", where, "-c", "ls"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("cannot connect to " + socket), std::string::npos) << gone.err;
}

// ---- --gc-bytes ----

std::uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  std::uintmax_t size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<std::uint64_t>(size);
}

// info --connect --json, as JSON (null if it failed).
Json server_info(const ServerProcess& server) {
  ProcessResult r = cairn({"info", "--connect", server.address(), "--json"});
  if (r.exit_code != 0) return nullptr;
  return Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
}

TEST_F(ServeTransport, GcBytesPacksByItselfWhileTheServerKeepsServing) {
  constexpr std::uint64_t gc_bytes = 200'000;
  constexpr int overwrites = 40;
  const std::string blob(20'000, 'x');  // 40 commits of 20 KB: 800 KB, 4 x --gc-bytes
  std::string db = dir_.file("gc.cairn");
  auto server = serve({"--file", db, "--fsync", "never", "--gc-bytes", std::to_string(gc_bytes)});

  // Commands through stdin: a 20 KB string is fine on a line, 800 KB is too long for argv.
  std::string script;
  for (int i = 0; i < overwrites; ++i)
    script += fmt::format("set /blob \"{}{}\"\ncommit\n", blob, i);
  ProcessResult write =
      cairn({"shell", "--connect", server->address()}, script + "set /small 1\ncommit\n");
  ASSERT_EQ(write.exit_code, 0) << write.err;
  std::uint64_t written = overwrites * blob.size();

  // Packs follow within a tick or two of the commits: the garbage left is less than --gc-bytes
  // (plus the live data), however the packs fell among the commits.
  std::uint64_t size = file_bytes(db);
  Json info;
  for (auto deadline = Clock::now() + 15s; Clock::now() < deadline;) {
    info = server_info(*server);
    size = file_bytes(db);
    if (info.is_object() && info.value("packs", 0) >= 1 && size < gc_bytes + 2 * blob.size()) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(info.is_object()) << server->log();
  EXPECT_GE(info.value("packs", 0), 1) << info.dump() << "\n" << server->log();
  EXPECT_LT(size, gc_bytes + 2 * blob.size())
      << "the file did not shrink after " << written << " bytes of overwrites\n"
      << server->log();
  EXPECT_NE(server->log().find("packed automatically"), std::string::npos) << server->log();

  // Still serving, the newest values intact, and commits go on.
  ProcessResult read = shell_on(*server, "get /small; set /after 2; commit; get /after");
  EXPECT_EQ(read.exit_code, 0) << read.err;
  std::vector<std::string> lines = lines_of(read.out);
  ASSERT_EQ(lines.size(), 3u) << read.out;
  EXPECT_EQ(lines[0], "1");
  EXPECT_TRUE(lines[1].starts_with("committed ")) << lines[1];
  EXPECT_EQ(lines[2], "2");
  ProcessResult last = shell_on(*server, "get /blob");
  EXPECT_EQ(last.out, fmt::format("\"{}{}\"\n", blob, overwrites - 1));

  EXPECT_EQ(stop_server(*server), 0) << server->log();
  ProcessResult file_info = cairn({"info", db, "--json"});
  ASSERT_EQ(file_info.exit_code, 0) << file_info.err;
  Json fi = Json::parse(file_info.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(fi.is_object()) << file_info.out;
  EXPECT_LT(fi["file_bytes"].get<std::uint64_t>(), gc_bytes + 2 * blob.size()) << fi.dump();
  EXPECT_LT(fi["garbage_bytes"].get<std::uint64_t>(), gc_bytes + blob.size()) << fi.dump();
  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

// `cairn pack --connect` has the server pack the file it holds (which `cairn pack PATH` cannot
// open while the server runs), waits for it, and prints what it reclaimed; the server serves on.
TEST_F(ServeTransport, PackConnectPacksTheServedFile) {
  std::string db = dir_.file("packed.cairn");
  auto server = serve({"--file", db, "--fsync", "never"}, "pack-token");
  const std::string blob(20'000, 'y');
  std::string script = "new /gone\n";
  for (int i = 0; i < 10; ++i)
    script += fmt::format("set /gone/blob \"{}{}\"\ncommit\n", blob, i);
  script += "set /kept 7\ndel /gone\ncommit\n";
  ProcessResult write =
      cairn({"shell", "--connect", server->address(), "--token", server->token()}, script);
  ASSERT_EQ(write.exit_code, 0) << write.err;

  ProcessResult local = cairn({"pack", db});
  EXPECT_EQ(local.exit_code, 1) << "packed a file its server holds: " << local.out;

  ProcessResult refused = cairn({"pack", "--connect", server->address(), "--token", "wrong"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("token"), std::string::npos) << refused.err;

  ProcessResult packed = cairn({"pack", "--connect", server->address(), "--token", "pack-token"});
  ASSERT_EQ(packed.exit_code, 0) << packed.err << server->log();
  // The root and /kept's map entry survive; the map at /gone does not.
  EXPECT_TRUE(packed.out.starts_with("objects: 2 -> 1, bytes: ")) << packed.out;
  ProcessResult info_run =
      cairn({"info", "--connect", server->address(), "--token", "pack-token", "--json"});
  Json info = Json::parse(info_run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(info.is_object()) << info_run.err << server->log();
  EXPECT_EQ(info.value("packs", 0), 1) << info.dump();
  EXPECT_LT(file_bytes(db), 5 * blob.size()) << "the file did not shrink";

  ProcessResult read = shell_on(*server, "get /kept");
  EXPECT_EQ(read.out, "7\n") << read.err;
  for (const std::vector<std::string>& usage :
       {std::vector<std::string>{"pack", db, "--connect", server->address()},
        std::vector<std::string>{"pack", "--fsync", "never", "--connect", server->address()},
        std::vector<std::string>{"pack"},
        // Client flags without --connect would be ignored.
        std::vector<std::string>{"pack", db, "--token", "pack-token"},
        std::vector<std::string>{"pack", db, "--tls"},
        std::vector<std::string>{"info", db, "--token", "pack-token"},
        std::vector<std::string>{"info", db, "--insecure"}}) {
    ProcessResult r = cairn(usage);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  }
  EXPECT_EQ(stop_server(*server), 0) << server->log();
}

// ---- unix socket paths that cannot be used ----

// A socket path longer than a unix socket address holds (sun_path) ended every command with an
// uncaught std::system_error ("terminate called...", status 134).
TEST_F(ServeTransport, AUnixSocketPathTooLongIsRefusedInOneLine) {
  std::string socket = dir_.file(std::string(120, 'd') + ".sock");
  std::string limit = std::to_string(sizeof(sockaddr_un{}.sun_path) - 1);
  const std::vector<std::vector<std::string>> commands = {
      {"serve", "--memory", "--port", "0", "--unix", socket},
      {"shell", "--connect", "unix:" + socket, "-c", "get /"},
      {"info", "--connect", "unix:" + socket},
      {"pack", "--connect", "unix:" + socket},
      {"serve", "--stop", "--unix", socket}};
  for (const auto& args : commands) {
    std::vector<std::string> argv{CAIRN_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = run_process(argv, "", 15s);
    std::string shown = args[0] + " " + args[1];
    EXPECT_EQ(r.exit_code, 1) << shown << ": " << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << shown << ": " << r.err;
    EXPECT_TRUE(r.err.starts_with("cairn: ")) << shown << ": " << r.err;
    EXPECT_NE(r.err.find(socket), std::string::npos) << shown << ": " << r.err;
    EXPECT_NE(r.err.find(limit + " bytes"), std::string::npos)
        << shown << ": the limit is not named: " << r.err;
    EXPECT_EQ(r.out, "") << shown;
  }
  EXPECT_FALSE(std::filesystem::exists(socket));
}

// A path that exists and is not a socket (a file given by mistake) was reported as "Address
// already in use"; the file is left alone.
TEST_F(ServeTransport, AUnixPathThatIsNotASocketIsNamedAsSuch) {
  std::string file = dir_.file("regular");
  write_file(file, "keep me\n");
  for (const std::string& path : {file, dir_.path()}) {
    ProcessResult r =
        run_process({CAIRN_BINARY, "serve", "--memory", "--port", "0", "--unix", path}, "", 15s);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("cairn: cannot listen on " + path + ": it exists and is not a socket"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;
  }
  EXPECT_EQ(read_file(file), "keep me\n") << "the file was changed";
}

}  // namespace
}  // namespace cairn::testing
