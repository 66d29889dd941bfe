// cairn serve killed with SIGKILL while clients commit through it: every commit a client was
// told had succeeded is in the file when it is opened again, and the file opens clean (at most
// a torn tail is cut). CAIRN_TORTURE_ROUNDS sets the rounds (10 by default; `make torture` 100).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "net/remote_store.h"
#include "support/child_process.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;

int rounds() {
  const char* env = std::getenv("CAIRN_TORTURE_ROUNDS");
  return env != nullptr ? std::max(1, std::atoi(env)) : 10;
}

class ServerKill : public ::testing::TestWithParam<const char*> {};

TEST_P(ServerKill, NoAcknowledgedCommitIsLost) {
  TempDir dir;
  std::string db = dir.file("served.cairn");
  constexpr int clients = 4;
  std::mt19937 rng(std::random_device{}());
  std::int64_t acknowledged_total = 0;
  // What each client last saw acknowledged, and last attempted, per round.
  for (int round = 0; round < rounds(); ++round) {
    ServerProcess server(CAIRN_BINARY, {"--file", db, "--fsync", GetParam()},
                         dir.file("server.log"));
    std::vector<Oid> oids(clients);
    std::vector<std::atomic<std::int64_t>> acked(clients);
    std::vector<std::atomic<std::int64_t>> tried(clients);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        try {
          net::ClientOptions options;
          options.port = server.port();
          net::RemoteStore store(options);
          oids[c] = store.new_oids(1);
          go = true;
          for (std::int64_t i = 1;; ++i) {
            CommitRequest request;
            request.writes.push_back(WriteOp{oids[c], "", "", encode(Value(i))});
            tried[c] = i;
            store.commit(request);
            acked[c] = i;
          }
        } catch (const Error&) {
          // The server died: what was acknowledged before is what must survive.
        }
      });
    }
    while (!go)
      std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 200));
    server.process().kill();
    for (auto& t : threads)
      t.join();

    FileStoreOptions options;
    options.log = [](std::string_view) {};  // a torn tail may be cut: that is allowed
    auto store = FileStore::open(db, options);
    for (int c = 0; c < clients; ++c) {
      if (acked[c] == 0) continue;
      Oid one[] = {oids[c]};
      StoredObject got = store->load(one).objects[0];
      ASSERT_TRUE(got.exists()) << "round " << round << ": client " << c << "'s object is gone";
      std::int64_t value = decode(got.data).as_int();
      EXPECT_GE(value, acked[c].load()) << "round " << round << ": an acknowledged commit was lost";
      EXPECT_LE(value, tried[c].load()) << "round " << round << ": a value nobody wrote";
      acknowledged_total += acked[c];
    }
  }
  std::printf("kill -9 server torture (fsync %s): %d rounds, %lld acknowledged commits, lost: 0\n",
              GetParam(), rounds(), static_cast<long long>(acknowledged_total));
}

INSTANTIATE_TEST_SUITE_P(Fsync, ServerKill, ::testing::Values("always", "batch"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace cairn::testing
