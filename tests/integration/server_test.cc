// `cairn serve` as users run it: real server processes on real sockets, driven by the cairn
// binary (shell --connect, info --connect, serve --stop), by signals, and by client processes
// built for these tests (support/bank_client.cc, support/lock_holder.cc). Every server listens
// on a free port (--port 0) and every process is killed and reaped if a test fails.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <cairn/database.h>
#include <cairn/error.h>
#include <cairn/file_store.h>
#include <cairn/store.h>
#include <cairn/value.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/child_process.h"
#include "support/process.h"
#include "support/serve_commands.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// How long a test waits for a server to exit after being asked to (a hung server, not a slow
// one: it finishes in-flight work and syncs first).
constexpr auto exit_patience = 30s;

class Serve : public ServeTest {
 protected:
  // `cairn shell --connect` running `commands`, with the server's token if it has one.
  static ProcessResult shell(const ServerProcess& server, const std::string& commands) {
    return shell_on(server, commands);
  }

  // `cairn serve --stop`, then waits for the server to exit; returns the server's status.
  static std::optional<int> stop(ServerProcess& server) { return stop_server(server); }
};

// ---- the Durus quick demo ----

TEST_F(Serve, DurusQuickDemoEndToEnd) {
  std::string db = dir_.file("demo.cairn");
  {
    auto server = serve({"--file", db});
    EXPECT_NE(server->ready_line().find(db), std::string::npos) << server->ready_line();

    ProcessResult a = shell(*server, R"(set /greeting "hello"; set /n 42; commit)");
    ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
    ProcessResult b = shell(*server, "get /greeting; get /n; ls");
    ASSERT_EQ(b.exit_code, 0) << b.err;
    EXPECT_EQ(b.out, text_of({R"("hello")", "42", "greeting", "n"}));

    std::optional<int> status = stop(*server);
    ASSERT_TRUE(status.has_value()) << "the server did not exit after --stop:\n" << server->log();
    EXPECT_EQ(*status, 0) << server->log();
    EXPECT_NE(server->process().read_rest(5s).find("cairn serve: stopped"), std::string::npos);
  }
  {
    auto again = serve({"--file", db});
    ProcessResult b = shell(*again, "get /greeting; get /n");
    ASSERT_EQ(b.exit_code, 0) << b.err;
    EXPECT_EQ(b.out, text_of({R"("hello")", "42"}));
    EXPECT_EQ(stop(*again), 0);
  }
  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(Serve, EachShellSeesTheCommitsOfTheShellsBeforeIt) {
  auto server = serve({"--memory"});
  ProcessResult a = shell(*server, "set /a 1; commit");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ProcessResult b = shell(*server, "get /a; set /b 2; commit");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(lines_of(b.out).front(), "1");
  ProcessResult c = shell(*server, "get /a; get /b");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, text_of({"1", "2"}));
  EXPECT_EQ(stop(*server), 0);
}

// Idle clients and a client blocked on a lock do not hold up a stop: the idle ones are
// closed, the waiter is answered (without the lock), and the server exits well before its
// deadline for stuck clients.
TEST_F(Serve, StopsPromptlyWithIdleAndWaitingClients) {
  auto server = serve({"--file", dir_.file("stop.cairn")});
  std::unique_ptr<Store> idle = cairn::open(server->url());
  std::unique_ptr<Store> holder = cairn::open(server->url());
  std::unique_ptr<Store> waiter = cairn::open(server->url());
  ASSERT_TRUE(holder->lock(LockRequest{"l", "holder", 60s, 0ms}).has_value());
  auto waited = std::async(std::launch::async, [&]() -> std::string {
    try {
      auto token = waiter->lock(LockRequest{"l", "waiter", 60s, 30s});
      return token ? "took a held lock" : "refused";
    } catch (const Error& e) {
      return std::string("error: ") + e.what();
    }
  });
  std::this_thread::sleep_for(200ms);  // the waiter is blocked on the server

  auto start = Clock::now();
  EXPECT_EQ(stop(*server), 0) << server->log();
  double took = seconds_since(start);
  EXPECT_LT(took, 5.0) << "the stop waited for idle clients";
  ASSERT_EQ(waited.wait_for(10s), std::future_status::ready) << "the lock waiter hangs";
  EXPECT_NE(waited.get(), "took a held lock");
}

TEST_F(Serve, ASecondServerOnTheSameFileOrPortIsRefused) {
  std::string db = dir_.file("busy.cairn");
  auto server = serve({"--file", db});
  ASSERT_EQ(shell(*server, "set /a 1; commit").exit_code, 0);

  ProcessResult same_file =
      run_process({CAIRN_BINARY, "serve", "--file", db, "--port", "0"}, "", 15s);
  EXPECT_EQ(same_file.exit_code, 1) << same_file.out << same_file.err;
  EXPECT_NE(same_file.err.find("in use"), std::string::npos) << same_file.err;

  ProcessResult same_port = run_process(
      {CAIRN_BINARY, "serve", "--memory", "--port", std::to_string(server->port())}, "", 15s);
  EXPECT_EQ(same_port.exit_code, 1) << same_port.out << same_port.err;
  EXPECT_NE(same_port.err.find(fmt::format("cannot listen on {}", server->address())),
            std::string::npos)
      << same_port.err;

  ProcessResult still = shell(*server, "get /a");
  EXPECT_EQ(still.out, "1\n") << still.err;
  EXPECT_EQ(stop(*server), 0);
}

TEST_F(Serve, TheTokenMayComeFromAFileOrTheEnvironment) {
  write_file(dir_.file("token"), "from-a-file\n");
  auto server = serve({"--memory", "--token-file", dir_.file("token")});
  ProcessResult none = cairn({"shell", "--connect", server->address(), "-c", "ls"});
  EXPECT_EQ(none.exit_code, 1) << none.err;
  ProcessResult flag = cairn({"shell", "--connect", server->address(), "--token", "from-a-file",
                              "-c", "set /a 1; commit"});
  EXPECT_EQ(flag.exit_code, 0) << flag.err;
  setenv("CAIRN_TOKEN", "from-a-file", 1);
  ProcessResult env = cairn({"shell", "--connect", server->address(), "-c", "get /a"});
  ProcessResult env_stop = cairn({"serve", "--stop", "--port", std::to_string(server->port())});
  unsetenv("CAIRN_TOKEN");
  EXPECT_EQ(env.exit_code, 0) << env.err;
  EXPECT_EQ(env.out, "1\n");
  EXPECT_EQ(env_stop.exit_code, 0) << env_stop.err;
  std::optional<int> status = server->wait(exit_patience);
  ASSERT_TRUE(status.has_value()) << server->log();
  EXPECT_EQ(*status, 0);
}

// A token file of two lines (a key file given by mistake?) or a token given twice, by flag and
// by file, is refused rather than one of them taken silently.
TEST_F(Serve, AnAmbiguousTokenIsRefused) {
  write_file(dir_.file("two"), "first\nsecond\n");
  ProcessResult two = cairn({"serve", "--memory", "--port", "0", "--token-file", dir_.file("two")});
  EXPECT_EQ(two.exit_code, 1) << two.err;
  EXPECT_NE(two.err.find("more than one line"), std::string::npos) << two.err;
  write_file(dir_.file("one"), "only\n\n");
  ProcessResult both =
      cairn({"serve", "--memory", "--port", "0", "--token", "t", "--token-file", dir_.file("one")});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
}

// ---- signals ----

class ServeSignal : public Serve, public ::testing::WithParamInterface<int> {};

// A client commits as fast as it can while the signal arrives: the server answers or refuses
// each commit, exits 0, and every commit it acknowledged is in the file, which checks clean.
TEST_P(ServeSignal, FinishesInFlightCommitsAndExitsZero) {
  std::string db = dir_.file("signal.cairn");
  auto server = serve({"--file", db, "--fsync", "batch"});

  std::atomic<std::int64_t> acknowledged{0};
  std::atomic<bool> done{false};
  std::string writer_error;
  std::thread writer([&] {
    try {
      Database remote = Database::open(server->url());
      while (!done) {
        std::int64_t n = remote.transaction([](Txn& tx) {
          PersistentMap root = tx.root();
          const Value* old = root.find("n");
          std::int64_t next = (old != nullptr ? old->as_int() : 0) + 1;
          root.set("n", next);
          return next;
        });
        acknowledged = n;
      }
    } catch (const std::exception& e) {
      writer_error = e.what();  // the server went away: expected once it has stopped
    }
    done = true;
  });

  auto start = Clock::now();
  while (acknowledged < 50 && !done && Clock::now() - start < 20s)
    std::this_thread::sleep_for(5ms);
  ASSERT_GE(acknowledged.load(), 50) << "the writer made no progress: " << writer_error;
  server->process().send(GetParam());
  std::optional<int> status = server->wait(exit_patience);
  done = true;
  writer.join();
  ASSERT_TRUE(status.has_value()) << "the server did not exit on the signal:\n" << server->log();
  EXPECT_EQ(*status, 0) << server->log();
  EXPECT_NE(server->log().find(GetParam() == SIGINT ? "SIGINT" : "SIGTERM"), std::string::npos)
      << server->log();

  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  Database local(FileStore::open(db));
  std::int64_t stored = local.view([](View& v) { return v.root().get("n").as_int(); });
  EXPECT_GE(stored, acknowledged.load()) << "an acknowledged commit was lost";
}

INSTANTIATE_TEST_SUITE_P(Signals, ServeSignal, ::testing::Values(SIGTERM, SIGINT),
                         [](const ::testing::TestParamInfo<int>& param) {
                           return std::string(param.param == SIGINT ? "SIGINT" : "SIGTERM");
                         });

// ---- the bank invariant ----

// CAIRN_BANK_SECONDS overrides how long the clients run (the issue asks for 20 s).
double bank_seconds() {
  const char* env = std::getenv("CAIRN_BANK_SECONDS");
  return env != nullptr && *env != '\0' ? std::stod(env) : 20.0;
}

TEST_F(Serve, BankInvariantHoldsForThirtyTwoClientProcesses) {
  constexpr std::size_t clients = 32, accounts = 64;
  constexpr std::int64_t opening_balance = 1000;
  constexpr std::int64_t total = static_cast<std::int64_t>(accounts) * opening_balance;
  double seconds = bank_seconds();
  std::string db = dir_.file("bank.cairn");
  auto server = serve({"--file", db, "--fsync", "batch"}, "bank-token");

  Database setup = Database::open(server->url());
  setup.transaction([&](Txn& tx) {
    Value::List account_refs, counter_refs;
    for (std::size_t i = 0; i < accounts; ++i)
      account_refs.push_back(tx.create(Value::Map{{"balance", opening_balance}}).ref());
    for (std::size_t i = 0; i < clients; ++i)
      counter_refs.push_back(tx.create(Value::Map{{"transfers", 0}}).ref());
    PersistentMap root = tx.root();
    root.set("total", total);
    root.set("accounts", std::move(account_refs));
    root.set("counters", std::move(counter_refs));
  });

  auto start = Clock::now();
  std::vector<std::unique_ptr<ChildProcess>> running;
  for (std::size_t i = 0; i < clients; ++i) {
    running.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{CAIRN_BANK_CLIENT, server->url(), std::to_string(i),
                                 fmt::format("{}", seconds)},
        dir_.file(fmt::format("client-{}.log", i)), /*read_stdout=*/true));
  }
  std::vector<std::int64_t> transfers(clients, -1);
  std::int64_t all_transfers = 0, all_conflicts = 0;
  auto deadline = start + std::chrono::duration<double>(seconds) + 120s;
  for (std::size_t i = 0; i < clients; ++i) {
    ChildProcess& client = *running[i];
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    std::optional<std::string> line = client.read_line(std::max(left, 1ms));
    std::optional<int> status = client.wait(std::max(left, 1ms));
    ASSERT_TRUE(status.has_value()) << "client " << i << " did not finish:\n" << client.log();
    ASSERT_EQ(*status, 0) << "client " << i << ":\n" << client.log();
    std::smatch m;
    ASSERT_TRUE(line && std::regex_match(*line, m,
                                         std::regex("ok transfers=([0-9]+) views=([0-9]+) "
                                                    "conflicts=([0-9]+)")))
        << "client " << i << ": " << line.value_or("(nothing)");
    transfers[i] = std::stoll(m[1]);
    all_transfers += transfers[i];
    all_conflicts += std::stoll(m[3]);
  }
  double elapsed = seconds_since(start);

  // Every transfer a client was told committed is in the store, and nothing else.
  setup.view([&](View& v) {
    PersistentMap root = v.root();
    std::int64_t sum = 0;
    for (const Value& ref : root.get("accounts").as_list())
      sum += v.get(ref.as_ref()).get().find("balance")->as_int();
    EXPECT_EQ(sum, total);
    const Value::List& counters = root.get("counters").as_list();
    for (std::size_t i = 0; i < clients; ++i) {
      EXPECT_EQ(v.get(counters[i].as_ref()).get().find("transfers")->as_int(), transfers[i])
          << "client " << i;
    }
  });
  EXPECT_GT(all_transfers, 0);
  std::cout << fmt::format(
      "[ bank     ] {} clients, {:.1f} s: {} transfers ({:.0f}/s), {} gave up on conflicts\n",
      clients, elapsed, all_transfers, static_cast<double>(all_transfers) / elapsed, all_conflicts);

  EXPECT_EQ(stop(*server), 0) << server->log();
  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

// ---- locks ----

class ServeLocks : public Serve {
 protected:
  // The heartbeat timeout: the server drops a client silent for this long.
  static constexpr auto idle_timeout = 2s;

  void SetUp() override {
    Serve::SetUp();
    server_ = serve({"--memory", "--idle-timeout", "2"}, "lock-token");
    holder_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{CAIRN_LOCK_HOLDER, server_->url(), "job", "600"},
        dir_.file("holder.log"), /*read_stdout=*/true);
    std::optional<std::string> line = holder_->read_line(30s);
    ASSERT_TRUE(line && line->starts_with("locked ")) << holder_->log();
    holder_token_ = std::stoull(line->substr(7));
    waiter_ = cairn::open(server_->url());
    ASSERT_FALSE(waiter_->lock(LockRequest{"job", "waiter", 60s, 0ms}).has_value())
        << "the lock was free while its holder lived";
  }

  // Waits (blocking, at most 30 s) for the lock in another thread while `act` runs; how long
  // after `act` the lock came, and its token.
  std::pair<double, std::optional<std::uint64_t>> lock_after(const std::function<void()>& act) {
    std::promise<void> asked;
    auto got = std::async(std::launch::async, [&] {
      asked.set_value();
      auto token = waiter_->lock(LockRequest{"job", "waiter", 60s, 30s});
      return std::make_pair(Clock::now(), token);
    });
    asked.get_future().wait();
    std::this_thread::sleep_for(200ms);  // the blocking lock is waiting on the server
    auto start = Clock::now();
    act();
    auto [when, token] = got.get();
    return {std::chrono::duration<double>(when - start).count(), token};
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<ChildProcess> holder_;
  std::uint64_t holder_token_ = 0;
  std::unique_ptr<Store> waiter_;
};

TEST_F(ServeLocks, KillingAHolderReleasesItsLockToABlockedWaiter) {
  auto [after, token] = lock_after([&] { EXPECT_EQ(holder_->kill(), 128 + SIGKILL); });
  ASSERT_TRUE(token.has_value()) << "the waiter never got the lock";
  EXPECT_GT(*token, holder_token_) << "fencing tokens must increase";
  EXPECT_LT(after, std::chrono::duration<double>(idle_timeout).count())
      << "released " << after << " s after the kill";
  std::cout << fmt::format("[ locks    ] released {:.3f} s after SIGKILL\n", after);
}

// A holder that stops answering without closing its socket (a frozen process, a dead host) is
// dropped by the heartbeat timeout, and its lock with it, well before the lock's TTL.
TEST_F(ServeLocks, AFrozenHolderLosesItsLockAfterTheHeartbeatTimeout) {
  auto [after, token] = lock_after([&] { ASSERT_TRUE(holder_->send(SIGSTOP)); });
  ASSERT_TRUE(token.has_value()) << "the waiter never got the lock";
  EXPECT_GT(*token, holder_token_);
  double timeout = std::chrono::duration<double>(idle_timeout).count();
  EXPECT_GE(after, timeout / 2) << "released before the heartbeat timeout";
  EXPECT_LT(after, timeout + 2) << "released " << after << " s after the holder froze";
  std::cout << fmt::format("[ locks    ] released {:.3f} s after SIGSTOP\n", after);
}

// ---- command line ----

TEST_F(Serve, HelpListsTheOptions) {
  ProcessResult r = cairn({"serve", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* option :
       {"--file", "--memory", "--redis", "--host", "--port", "--unix", "--token", "--token-file",
        "--tls-cert", "--tls-key", "--fsync", "--gc-bytes", "--max-clients", "--max-frame-bytes",
        "--idle-timeout", "--stop"}) {
    EXPECT_NE(r.out.find(option), std::string::npos) << option << "\n" << r.out;
  }
  ProcessResult top = cairn({"--help"});
  EXPECT_NE(top.out.find("serve"), std::string::npos) << top.out;
}

TEST_F(Serve, ANonLoopbackAddressWithoutATokenIsRefused) {
  ProcessResult r =
      run_process({CAIRN_BINARY, "serve", "--memory", "--host", "0.0.0.0", "--port", "0"}, "", 15s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 128 + SIGKILL) << "it served instead of refusing";
  EXPECT_NE(r.err.find("without a token"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--token"), std::string::npos) << "the message does not say what to do";
  EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;

  // With a token the same address is served.
  auto server = serve({"--memory", "--host", "0.0.0.0"}, "s3cret");
  EXPECT_NE(server->ready_line().find("0.0.0.0:"), std::string::npos) << server->ready_line();
  ProcessResult ok = shell(*server, "set /a 1; commit; get /a");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(stop(*server), 0);
}

TEST_F(Serve, ClientsMustPresentTheToken) {
  auto server = serve({"--memory"}, "s3cret");
  ProcessResult write = shell(*server, "set /secret 42; commit");
  ASSERT_EQ(write.exit_code, 0) << write.err;

  std::string addr = server->address();
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"shell", "--connect", addr, "-c", "get /secret"},
           {"shell", "--connect", addr, "--token", "wrong", "-c", "get /secret"},
           {"info", "--connect", addr},
           {"info", "--connect", addr, "--token", "wrong", "--json"},
           {"serve", "--stop", "--port", std::to_string(server->port())},
       }) {
    std::string what = fmt::format("{}", fmt::join(args, " "));
    ProcessResult r = cairn(args);
    EXPECT_EQ(r.exit_code, 1) << what << "\n" << r.err;
    EXPECT_NE(r.err.find("token"), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(r.err.find("s3cret"), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(r.out.find("42"), std::string::npos) << what << ": data was returned: " << r.out;
  }
  EXPECT_FALSE(server->wait(0ms).has_value()) << "a stop without the token stopped the server";
  ProcessResult read = shell(*server, "get /secret");
  EXPECT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "42\n");
  EXPECT_EQ(stop(*server), 0);
}

// A server at --max-clients refuses more clients, but `info --connect` and `serve --stop` still
// reach it.
TEST_F(Serve, AFullServerCanStillBeInspectedAndStopped) {
  auto server = serve({"--memory", "--max-clients", "1"});
  std::unique_ptr<Store> holder = cairn::open(server->url());
  ProcessResult refused = shell(*server, "get /");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("limit of 1 clients"), std::string::npos) << refused.err;
  ProcessResult info = cairn({"info", "--connect", server->address(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(Json::parse(info.out).at("clients"), 2) << info.out;  // the holder and info itself
  EXPECT_EQ(stop(*server), 0) << server->log();
}

// A server allowed fewer open files than --max-clients needs accepted clients until it ran out,
// then spun on accept while the clients past them waited, unanswered. It now serves as many
// clients as its descriptors allow, refusing the rest with code 11 (and raises its soft limit
// first when the hard one allows: not here, where both are 64).
TEST_F(Serve, MaxClientsIsFittedToTheLimitOnOpenFiles) {
  std::string wrapper = dir_.file("limited.sh");
  std::ofstream(wrapper) << "#!/bin/sh\nulimit -n 64 || exit 99\nexec " << CAIRN_BINARY
                         << " \"$@\"\n";
  std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
  ServerProcess server(wrapper, {"--memory"}, dir_.file("limited.log"));
  EXPECT_NE(server.log().find("--max-clients 1024 needs 1072 open files, and this process may "
                              "open 64: serving at most 16 clients"),
            std::string::npos)
      << server.log();
  std::vector<std::unique_ptr<Store>> holders;
  for (int i = 0; i < 16; ++i)
    holders.push_back(cairn::open(server.url()));
  ProcessResult refused = shell(server, "get /");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("limit of 16 clients"), std::string::npos) << refused.err;
  holders.clear();
  EXPECT_EQ(stop(server), 0) << server.log();
}

TEST_F(Serve, InfoConnectShowsClientsCsnCommitsAndUptime) {
  auto server = serve({"--memory"});
  ASSERT_EQ(shell(*server, "set /a 1; commit; set /b 2; commit").exit_code, 0);
  // A client that stays connected while info asks.
  std::unique_ptr<Store> other = cairn::open(server->url());

  ProcessResult text = cairn({"info", "--connect", server->address()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  std::map<std::string, std::string> fields;
  for (const std::string& line : lines_of(text.out)) {
    auto colon = line.find(": ");
    ASSERT_NE(colon, std::string::npos) << line;
    fields[line.substr(0, colon)] = line.substr(colon + 2);
  }
  for (const char* name : {"server", "clients", "csn", "commits", "commits_per_second", "bytes_in",
                           "bytes_out", "uptime_seconds"}) {
    EXPECT_TRUE(fields.contains(name)) << name << " missing from\n" << text.out;
  }
  EXPECT_GE(std::stoull(fields["clients"]), 2u) << "info's own connection and `other`";
  EXPECT_GE(std::stoull(fields["csn"]), 2u);
  EXPECT_GE(std::stoull(fields["commits"]), 2u);

  ProcessResult json = cairn({"info", "--connect", server->address(), "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  Json j = Json::parse(json.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << json.out;
  ASSERT_TRUE(j.is_object()) << json.out;
  for (const char* name : {"clients", "csn", "commits", "uptime_seconds"})
    EXPECT_TRUE(j.contains(name) && j[name].is_number_unsigned()) << name << ": " << json.out;
  EXPECT_TRUE(j["server"].is_string()) << json.out;
  EXPECT_GE(j["commits"].get<std::uint64_t>(), 2u);
  other.reset();
  EXPECT_EQ(stop(*server), 0);
}

TEST_F(Serve, ConnectingToNoServerFailsClearly) {
  // A port nothing listens on: one a server had and gave back.
  std::uint16_t port = 0;
  {
    auto server = serve({"--memory"});
    port = server->port();
    ASSERT_EQ(stop(*server), 0);
  }
  std::string addr = fmt::format("127.0.0.1:{}", port);
  ProcessResult r = cairn({"shell", "--connect", addr, "--token", "s3cret", "-c", "ls"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot connect to"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("s3cret"), std::string::npos) << "the token was printed: " << r.err;
  ProcessResult stop_nothing = cairn({"serve", "--stop", "--port", std::to_string(port)});
  EXPECT_EQ(stop_nothing.exit_code, 1) << stop_nothing.err;
  EXPECT_NE(stop_nothing.err.find("cannot connect to"), std::string::npos) << stop_nothing.err;
}

// ---- backends and fsync policies ----

struct Backend {
  std::string name;
  std::vector<std::string> args;  // "DB" stands for a database file in the test's directory
  std::string described;          // what the ready line says it serves
  bool durable;
};

void PrintTo(const Backend& backend, std::ostream* os) {
  *os << backend.name;
}

class ServeBackend : public Serve, public ::testing::WithParamInterface<Backend> {};

TEST_P(ServeBackend, CommitsAndReads) {
  std::vector<std::string> args = GetParam().args;
  for (std::string& a : args)
    if (a == "DB") a = dir_.file("backend.cairn");
  auto server = serve(args);
  EXPECT_NE(server->ready_line().find(GetParam().described), std::string::npos)
      << server->ready_line();
  ProcessResult w = shell(*server, R"(set /list [1, 2, 3]; set /name "x"; commit)");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  ProcessResult r = shell(*server, "get /list; get /name");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, text_of({"[1,2,3]", R"("x")"}));
  EXPECT_EQ(stop(*server), 0) << server->log();

  auto again = serve(args);
  ProcessResult after = shell(*again, "ls");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out, GetParam().durable ? text_of({"list", "name"}) : "");
  EXPECT_EQ(stop(*again), 0) << again->log();
}

INSTANTIATE_TEST_SUITE_P(
    Backends, ServeBackend,
    ::testing::Values(
        Backend{"Memory", {"--memory"}, "in-memory", false},
        Backend{"FsyncNever", {"--file", "DB", "--fsync", "never"}, "fsync never", true},
        Backend{"FsyncAlways", {"--file", "DB", "--fsync", "always"}, "fsync always", true}),
    [](const ::testing::TestParamInfo<Backend>& param) { return param.param.name; });

// ---- flags refused at start-up ----

// `cairn serve ARGS... --port 0`, for a server expected to refuse to start (killed after 10 s if
// it serves instead).
ProcessResult serve_refused(std::vector<std::string> args) {
  args.insert(args.begin(), {CAIRN_BINARY, "serve"});
  args.insert(args.end(), {"--port", "0"});
  return run_process(args, "", 10s);
}

// --idle-timeout is kept in milliseconds: 1e10 s and more overflowed, nan was undefined, and a
// few milliseconds or less dropped each client before its first heartbeat. Each started a server
// that dropped every client.
TEST_F(Serve, AnIdleTimeoutOutOfRangeIsRefused) {
  for (const char* value :
       {"1e10", "9e15", "1e20", "1e300", "inf", "nan", "1e-9", "0.001", "0.4", "0", "-1"}) {
    ProcessResult r = serve_refused({"--memory", "--idle-timeout", value});
    EXPECT_EQ(r.exit_code, 2) << value << ": " << r.err;
    EXPECT_NE(r.err.find(fmt::format("--idle-timeout: {} is not a number of seconds from 0.5 to "
                                     "1000000",
                                     value)),
              std::string::npos)
        << value << ": " << r.err;
    EXPECT_LT(r.err.size(), 200u) << r.err;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << value;
  }
  ProcessResult help = cairn({"serve", "--help"});
  EXPECT_NE(help.out.find("0.5 to 1000000"), std::string::npos) << help.out;
  // The ends of the range serve.
  for (const char* value : {"0.5", "1000000"}) {
    auto server = serve({"--memory", "--idle-timeout", value});
    ProcessResult ok = shell(*server, "set /a 1; commit; get /a");
    EXPECT_EQ(ok.exit_code, 0) << value << ": " << ok.err;
    EXPECT_EQ(stop(*server), 0) << value;
  }
}

// A number out of range for --max-clients was reported as "Value 0 not in range 0.000000 to"
// and the largest double written out in full, 309 digits.
TEST_F(Serve, ANumericFlagOutOfRangeIsReportedReadably) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : {
           Case{{"--max-clients", "0"},
                "--max-clients: 0 is not a whole number from 1 to 18446744073709551615"},
           Case{{"--max-clients", "-3"},
                "--max-clients: -3 is not a whole number from 1 to 18446744073709551615"},
           Case{{"--max-clients", "1.5"},
                "--max-clients: 1.5 is not a whole number from 1 to 18446744073709551615"},
           Case{{"--max-clients", "18446744073709551616"},
                "--max-clients: 18446744073709551616 is not a whole number from 1 to "
                "18446744073709551615"},
           Case{{"--port", "65536"}, "--port: 65536 is not a whole number from 0 to 65535"},
           Case{{"--port", "x"}, "--port: x is not a whole number from 0 to 65535"},
           Case{{"--gc-bytes", "-1"},
                "--gc-bytes: -1 is not a whole number from 0 to 18446744073709551615"},
           Case{{"--workers", "many"},
                "--workers: many is not a whole number from 0 to 18446744073709551615"},
       }) {
    std::vector<std::string> args{"--memory"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    ProcessResult r = serve_refused(args);
    EXPECT_EQ(r.exit_code, 2) << c.message << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_LT(r.err.size(), 200u) << r.err;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << c.message;
  }
}

// Flags that did nothing: --fsync on a store that is not a file, an empty --token (a server
// open to anyone), an empty --unix, and a --max-frame-bytes too small for a hello, with which
// the server started and then failed every client.
TEST_F(Serve, FlagsThatWouldDoNothingAreRefused) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : {
           Case{{"--memory", "--fsync", "always"}, "--fsync is for database files"},
           Case{{"--redis", "redis://127.0.0.1:1", "--fsync", "never"},
                "--fsync is for database files"},
           Case{{"--memory", "--token", ""}, "--token: the token is empty"},
           Case{{"--stop", "--token", ""}, "--token: the token is empty"},
           Case{{"--memory", "--unix", ""}, "--unix: the path is empty"},
           Case{{"--memory", "--max-frame-bytes", "0"},
                "--max-frame-bytes: 0 is not a whole number from 65536 to 4294967295"},
           Case{{"--memory", "--max-frame-bytes", "10"},
                "--max-frame-bytes: 10 is not a whole number from 65536 to 4294967295"},
           Case{{"--memory", "--max-frame-bytes", "65535"},
                "--max-frame-bytes: 65535 is not a whole number from 65536 to 4294967295"},
       }) {
    ProcessResult r = serve_refused(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << c.message;
  }
  // The smallest frame limit still serves: a hello and small requests fit.
  auto server = serve({"--memory", "--max-frame-bytes", "65536"});
  ProcessResult ok = shell(*server, "set /a \"x\"; commit; get /a");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(ok.out.ends_with("\"x\"\n")) << ok.out;
  ProcessResult big = shell(*server, "set /a \"" + std::string(70'000, 'y') + "\"; commit");
  EXPECT_EQ(big.exit_code, 1) << big.err;
  EXPECT_EQ(stop(*server), 0);
}

// A token file that is a directory was reported as "token file DIR is empty".
TEST_F(Serve, ATokenFileThatCannotBeReadIsSaidSo) {
  ProcessResult r = serve_refused({"--memory", "--token-file", dir_.path()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cairn: cannot read token file " + dir_.path() + ": Is a directory"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace cairn::testing
