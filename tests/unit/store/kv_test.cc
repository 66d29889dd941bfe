// The key-value view (eric-sse's KvStorage contract) over a store.
#include "cairn/kv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "cairn/error.h"

namespace cairn {
namespace {

class KvViewTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> store = make_memory_store();
  KvView kv{*store};

  std::vector<std::string> keys(std::string_view prefix) {
    std::vector<std::string> out;
    for (auto& [k, v] : kv.fetch_by_prefix(prefix))
      out.push_back(k);
    return out;
  }
};

TEST_F(KvViewTest, UpsertInsertsThenReplaces) {
  kv.upsert("channel:1", Value::Map{{"name", "news"}});
  EXPECT_EQ(kv.fetch_one("channel:1"), Value(Value::Map{{"name", "news"}}));
  kv.upsert("channel:1", "replaced");
  EXPECT_EQ(kv.fetch_one("channel:1"), Value("replaced"));
  EXPECT_EQ(store->scan_keys(std::string(KvView::default_namespace), "", "", 10).size(), 1u)
      << "an upsert of an existing key created a second object";
}

TEST_F(KvViewTest, FetchOneOfAbsentKeyThrowsNotFound) {
  try {
    kv.fetch_one("nope");
    FAIL();
  } catch (const NotFound& e) {
    EXPECT_EQ(std::string(e.what()), "key \"nope\" not found");
  }
  EXPECT_FALSE(kv.fetch("nope").has_value());
}

TEST_F(KvViewTest, FetchByPrefixIsOrderedAndSegmentAware) {
  for (const char* k : {"a:2", "a1:x", "a", "b", "a:1", "a:1:deep", "ab", "a:10"})
    kv.upsert(k, k);
  // Bytewise order: "a:10" < "a:1:deep" because '0' < ':'.
  EXPECT_EQ(keys("a"), (std::vector<std::string>{"a", "a:1", "a:10", "a:1:deep", "a:2"}));
  EXPECT_EQ(keys("a:"), (std::vector<std::string>{"a:1", "a:10", "a:1:deep", "a:2"}));
  EXPECT_EQ(keys("a:1"), (std::vector<std::string>{"a:1", "a:1:deep"}));
  EXPECT_EQ(keys("a1"), (std::vector<std::string>{"a1:x"}));
  EXPECT_TRUE(keys("c").empty());
  EXPECT_EQ(keys("").size(), 8u);
  for (auto& [k, v] : kv.fetch_by_prefix("a"))
    EXPECT_EQ(v, Value(k));
}

TEST_F(KvViewTest, RemoveIsIdempotentAndReportsExistence) {
  kv.upsert("k", 1);
  EXPECT_TRUE(kv.remove("k"));
  EXPECT_FALSE(kv.remove("k"));
  EXPECT_FALSE(kv.remove("never"));
  EXPECT_THROW(kv.fetch_one("k"), NotFound);
  kv.upsert("k", 2);  // a removed key can come back
  EXPECT_EQ(kv.fetch_one("k"), Value(2));
}

TEST_F(KvViewTest, RemovingWhileIteratingVisitsEveryRemainingKeyOnce) {
  for (int i = 0; i < 100; ++i)
    kv.upsert("q:" + std::to_string(1000 + i), i);
  KvCursor cursor = kv.scan_prefix("q", 7);
  std::vector<std::string> visited;
  while (auto entry = cursor.next()) {
    visited.push_back(entry->first);
    int n = std::stoi(entry->first.substr(2));
    bool removed = kv.remove(entry->first);  // delete the current key
    if (n % 10 != 5) {
      EXPECT_TRUE(removed) << n;
    }
    if (n % 10 == 0 && n + 5 < 1100) kv.remove("q:" + std::to_string(n + 5));  // and one ahead
  }
  // Every key that stayed is visited exactly once, in order; keys removed ahead of the cursor
  // are visited at most once (only if their page had already been read).
  EXPECT_TRUE(std::is_sorted(visited.begin(), visited.end()));
  EXPECT_EQ(std::adjacent_find(visited.begin(), visited.end()), visited.end());
  std::set<std::string> seen(visited.begin(), visited.end());
  for (int i = 0; i < 100; ++i) {
    if ((1000 + i) % 10 != 5) {
      EXPECT_TRUE(seen.contains("q:" + std::to_string(1000 + i))) << i;
    }
  }
  EXPECT_LT(visited.size(), 100u) << "no removed-ahead key was skipped at all";
  EXPECT_TRUE(keys("q").empty());
}

TEST_F(KvViewTest, KeysAreValidatedAtTheLimit) {
  EXPECT_THROW(kv.upsert("", 1), InvalidArgument);
  EXPECT_NO_THROW(kv.upsert(std::string(max_key_length, 'k'), 1));
  EXPECT_THROW(kv.upsert(std::string(max_key_length + 1, 'k'), 1), InvalidArgument);
  EXPECT_THROW(kv.fetch_one(std::string(max_key_length + 1, 'k')), InvalidArgument);
  EXPECT_THROW(kv.scan_prefix("a", 0), InvalidArgument);
}

TEST_F(KvViewTest, NamespacesAreSeparate) {
  KvView other(*store, "other");
  kv.upsert("k", "mine");
  other.upsert("k", "theirs");
  EXPECT_EQ(kv.fetch_one("k"), Value("mine"));
  EXPECT_EQ(other.fetch_one("k"), Value("theirs"));
  EXPECT_THROW(KvView(*store, ""), InvalidArgument);
}

TEST_F(KvViewTest, ConcurrentUpsertsOfOneNewKeyMakeOneEntry) {
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i)
        kv.upsert("shared:" + std::to_string(i), t);
    });
  }
  for (auto& th : pool)
    th.join();
  auto all = kv.fetch_by_prefix("shared");
  EXPECT_EQ(all.size(), 200u);
  EXPECT_EQ(store->scan_keys(std::string(KvView::default_namespace), "", "", 1000).size(), 200u);
}

TEST_F(KvViewTest, ConcurrentRemovesReportTrueExactlyOnce) {
  for (int round = 0; round < 50; ++round) {
    kv.upsert("once", round);
    std::atomic<int> trues{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t) {
      pool.emplace_back([&] {
        if (kv.remove("once")) ++trues;
      });
    }
    for (auto& th : pool)
      th.join();
    EXPECT_EQ(trues.load(), 1);
  }
}

}  // namespace
}  // namespace cairn
