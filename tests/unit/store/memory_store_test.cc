// MemoryStore: the conformance suite plus what only the in-memory backend promises.
#include <gtest/gtest.h>

#include "cairn/store.h"
#include "conformance/store_conformance.h"

namespace cairn::testing {
namespace {

struct MemoryFactory {
  static std::unique_ptr<Store> make() { return make_memory_store(); }
};
struct MemoryUrlFactory {
  static std::unique_ptr<Store> make() { return open("memory:"); }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Memory, StoreConformance, MemoryFactory);
INSTANTIATE_TYPED_TEST_SUITE_P(MemoryUrl, StoreConformance, MemoryUrlFactory);

TEST(MemoryStore, ChangesSinceReportsIncompleteOnceHistoryIsTrimmed) {
  auto store = make_memory_store();
  Oid oid = store->new_oids(1);
  CommitRequest req;
  req.writes.push_back(WriteOp{oid, "", "", encode(Value(1))});
  std::uint64_t first = store->commit(req);
  for (int i = 0; i < 70'000; ++i)
    store->commit(req);
  Changes old = store->changes_since(first);
  EXPECT_FALSE(old.complete) << "history of 70,001 commits should have been trimmed";
  EXPECT_TRUE(old.oids.empty());
  Changes recent = store->changes_since(old.csn - 5);
  EXPECT_TRUE(recent.complete);
  EXPECT_EQ(recent.oids, std::vector<Oid>{oid});
}

TEST(MemoryStore, ListenersSeeStrictlyIncreasingCsnsUnderConcurrentCommits) {
  auto store = make_memory_store();
  std::vector<std::uint64_t> seen;  // only the listener touches it, one call at a time
  Subscription sub =
      store->subscribe([&](std::uint64_t csn, std::span<const Oid>) { seen.push_back(csn); });
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        CommitRequest req;
        req.writes.push_back(WriteOp{store->new_oids(1), "", "", encode(Value(i))});
        store->commit(req);
      }
    });
  }
  for (auto& th : pool)
    th.join();
  ASSERT_EQ(seen.size(), 2000u);
  for (std::size_t i = 0; i < seen.size(); ++i)
    EXPECT_EQ(seen[i], i + 1);
}

TEST(MemoryStore, PackRefusesUndecodableDataAndKeepsEverything) {
  auto store = make_memory_store();
  CommitRequest req;
  // A list of two holding one: cut short. (A lone c1 byte is no longer undecodable: it is a blob.)
  req.writes.push_back(WriteOp{Oid::root(), "", "", std::string("\x92\x01", 2)});
  store->commit(req);
  EXPECT_THROW(store->pack(), Corruption);
  Oid root[] = {Oid::root()};
  EXPECT_TRUE(store->load(root).objects[0].exists());
}

TEST(Open, UnknownSchemesAndUnreachableServersGiveClearErrors) {
  EXPECT_THROW(open("mongodb://localhost"), InvalidArgument);
  EXPECT_THROW(open("cairn://localhost?colour=blue"), InvalidArgument) << "unknown parameter";
  try {
    open("cairn://s3cret@127.0.0.1:1");  // nothing listens on port 1
    FAIL();
  } catch (const IoError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("cannot connect to 127.0.0.1:1"), std::string::npos) << message;
    EXPECT_EQ(message.find("s3cret"), std::string::npos) << "the token was shown: " << message;
  }
}

// A MemoryStore's fencing tokens die with it: a new one (a `cairn serve --memory` restarted)
// must not hand out a token an earlier one did, or a holder from before the restart could commit
// under the lock of whoever takes it after.
TEST(MemoryStore, ANewStoresTokensStartPastAnEarlierOnes) {
  std::uint64_t last = 0;
  {
    auto earlier = make_memory_store();
    for (int i = 0; i < 1000; ++i) {
      last = earlier->lock(LockRequest{"job", "a", std::chrono::seconds(10), {}}).value();
      ASSERT_TRUE(earlier->unlock("job", "a"));
    }
  }
  auto later = make_memory_store();
  EXPECT_GT(later->lock(LockRequest{"job", "b", std::chrono::seconds(10), {}}).value(), last);
}

}  // namespace
}  // namespace cairn::testing
