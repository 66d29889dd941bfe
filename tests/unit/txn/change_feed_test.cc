// The change feed behind databases on remote stores: commits pushed late must never make a
// transaction or view miss what this process already committed, nor show half a commit.
#include "txn/change_feed.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "cairn/database.h"
#include "support/forwarding_store.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;

// A memory store that says it is remote and reports each commit to listeners `delay` after it
// happened, from a thread of its own: a server's pushes, slowed down.
class SlowPushStore final : public ForwardingStore {
 public:
  explicit SlowPushStore(std::chrono::milliseconds delay) : delay_(delay) {
    inner_sub_ = inner_->subscribe([this](std::uint64_t csn, std::span<const Oid> oids) {
      std::lock_guard lock(mu_);
      queue_.push_back(
          {std::chrono::steady_clock::now() + delay_, csn, {oids.begin(), oids.end()}});
      cv_.notify_all();
    });
    pusher_ = std::thread([this] { push_loop(); });
  }
  ~SlowPushStore() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    pusher_.join();
  }
  bool is_remote() const override { return true; }
  Subscription subscribe(CommitListener listener) override {
    std::lock_guard lock(mu_);
    listeners_.push_back(std::move(listener));
    return Subscription([] {});  // lives as long as the store in these tests
  }

 private:
  struct Push {
    std::chrono::steady_clock::time_point due;
    std::uint64_t csn;
    std::vector<Oid> oids;
  };
  Store& inner() const override { return *inner_; }
  void push_loop() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (cv_.wait_until(lock, queue_.front().due) != std::cv_status::timeout) continue;
      Push p = std::move(queue_.front());
      queue_.pop_front();
      for (auto& listener : listeners_)
        listener(p.csn, p.oids);
    }
  }

  std::unique_ptr<Store> inner_ = make_memory_store();
  std::chrono::milliseconds delay_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Push> queue_;
  std::vector<CommitListener> listeners_;
  bool stop_ = false;
  Subscription inner_sub_;
  std::thread pusher_;
};

TEST(ChangeFeed, WhatThisProcessCommittedIsSeenBeforeItsPushArrives) {
  Database db(std::make_unique<SlowPushStore>(100ms));
  Oid counter = db.transaction([](Txn& tx) { return tx.create(Value(std::int64_t{0})).oid(); });
  for (std::int64_t i = 1; i <= 5; ++i) {
    // Each transaction and view may run on another pooled connection with an older snapshot.
    db.transaction([&](Txn& tx) { tx.modify(counter, [&](Value& v) { v = Value(i); }); });
    EXPECT_EQ(db.view([&](View& v) { return v.get(counter).get().as_int(); }), i)
        << "a view missed this process's own commit";
    EXPECT_EQ(db.transaction([&](Txn& tx) { return tx.get(counter).get().as_int(); }), i);
  }
  // Durus style: two connections; what one commits, the other sees at its next sync.
  Connection writer = db.connect();
  Connection reader = db.connect();
  ASSERT_EQ(reader.get(counter).get().as_int(), 5);
  for (std::int64_t i = 6; i <= 10; ++i) {
    writer.get(counter).set(Value(i));
    writer.commit();
    reader.sync();
    EXPECT_EQ(reader.get(counter).get().as_int(), i) << "sync missed this process's commit";
    // Let the push arrive: the feed then knows the reader's snapshot and would answer the next
    // sync by itself, without the commit the writer is about to make.
    std::this_thread::sleep_for(150ms);
  }
}

TEST(ChangeFeed, AnswersOnlyWhenItKnowsEveryCommitInTheRange) {
  auto store = make_memory_store();
  detail::ChangeFeed feed(*store, 2);
  Oid a = store->new_oids(3);
  CommitRequest write;
  write.writes.push_back(WriteOp{a, "", "", "\x01"});
  std::uint64_t c1 = store->commit(write);
  write.writes[0].oid = Oid(a.value() + 1);
  std::uint64_t c2 = store->commit(write);
  auto changes = feed.changes_since(c1, c2);
  ASSERT_TRUE(changes.has_value());
  EXPECT_EQ(changes->csn, c2);
  EXPECT_EQ(changes->oids, std::vector<Oid>{Oid(a.value() + 1)});
  EXPECT_FALSE(feed.changes_since(c1, c2 + 1).has_value()) << "answered past what it has seen";
  write.writes[0].oid = Oid(a.value() + 2);
  std::uint64_t c3 = store->commit(write);
  EXPECT_FALSE(feed.changes_since(c1 - 1, c3).has_value()) << "answered past its capacity";
  EXPECT_TRUE(feed.changes_since(c2, c3).has_value());
  feed.note_own_commit(c3 + 5);
  EXPECT_FALSE(feed.changes_since(c2, c3).has_value()) << "answered before its own commit came";
}

// A store whose commits the test reports to listeners by hand, as a reconnecting client would.
class ManualPushStore final : public OverMemoryStore {
 public:
  Subscription subscribe(CommitListener listener) override {
    listener_ = std::move(listener);
    return Subscription([] {});
  }
  void push(std::uint64_t csn, std::vector<Oid> oids) { listener_(csn, oids); }

 private:
  CommitListener listener_;
};

TEST(ChangeFeed, AGapInTheCommitsItHearsMakesItForgetWhatCameBefore) {
  ManualPushStore store;
  detail::ChangeFeed feed(store);  // starts at CSN 0
  feed.note_own_commit(0);
  store.push(1, {Oid(10)});
  store.push(2, {Oid(11)});
  ASSERT_TRUE(feed.changes_since(0, 2).has_value());
  // Commits 3 and 4 never came (the connection was down); 5 arrives, merged with what the
  // catch-up could find.
  store.push(5, {Oid(12)});
  EXPECT_FALSE(feed.changes_since(2, 5).has_value()) << "answered across commits it never saw";
  EXPECT_FALSE(feed.changes_since(0, 5).has_value());
  auto after = feed.changes_since(4, 5);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->oids, std::vector<Oid>{Oid(12)});
}

}  // namespace
}  // namespace cairn::testing
