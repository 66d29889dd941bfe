// LockTable with tokens from a source outside it (as a FileStore's are): reserving tokens, which
// may wait for the disk, holds up no one else's unlock or renewal, and a lock taken meanwhile is
// seen afterwards.
#include "store/lock_table.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "cairn/error.h"

namespace cairn {
namespace {

using namespace std::chrono_literals;

// Tokens handed out from a counter; `next` gives none until `reserve` has made some available.
// The first reserve() call can be held at a gate, as a reservation waiting for the disk would.
class GatedTokens {
 public:
  explicit GatedTokens(std::uint64_t at_hand) : at_hand_(at_hand) {}

  LockTable::TokenSource source() {
    return {[this]() -> std::optional<std::uint64_t> {
              std::lock_guard lk(mu_);
              if (at_hand_ == 0) return std::nullopt;
              --at_hand_;
              return ++last_;
            },
            [this] { reserve(); }};
  }
  void hold_first_reserve() { gated_ = true; }
  void fail_next_reserve() { fail_ = true; }
  // Waits until a reserve() is at the gate.
  void wait_at_gate() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return at_gate_; });
  }
  void open_gate() {
    std::lock_guard lk(mu_);
    gated_ = false;
    cv_.notify_all();
  }

 private:
  void reserve() {
    std::unique_lock lk(mu_);
    if (fail_) {
      fail_ = false;
      throw IoError("reserve: the disk failed");
    }
    if (gated_ && !at_gate_) {  // the first caller only
      at_gate_ = true;
      cv_.notify_all();
      cv_.wait(lk, [&] { return !gated_; });
    }
    at_hand_ += 4;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t at_hand_;
  std::uint64_t last_ = 0;
  bool gated_ = false;
  bool at_gate_ = false;
  bool fail_ = false;
};

LockRequest request(std::string name, std::string owner, std::chrono::milliseconds wait = 0ms) {
  return LockRequest{std::move(name), std::move(owner), 60s, wait};
}

TEST(LockTableTest, ReservingTokensHoldsUpNoOtherCall) {
  GatedTokens tokens(1);
  LockTable table(tokens.source());
  ASSERT_EQ(table.lock(request("a", "x")), 1u);
  tokens.hold_first_reserve();
  // "b" needs a token and there is none at hand: its reservation waits at the gate.
  auto b = std::async(std::launch::async, [&] { return table.lock(request("b", "y")); });
  tokens.wait_at_gate();
  // Meanwhile the table serves everything that needs no new token.
  auto others = std::async(std::launch::async, [&] {
    bool renewed = table.renew("a", "x", 30s);
    bool unlocked = table.unlock("a", "x");
    bool wrong_owner = table.unlock("b", "x");
    return renewed && unlocked && !wrong_owner;
  });
  bool done = others.wait_for(20s) == std::future_status::ready;
  tokens.open_gate();  // in every case, so that the test ends
  ASSERT_TRUE(done) << "renew and unlock waited for the token reservation";
  EXPECT_TRUE(others.get());
  EXPECT_EQ(b.get(), 2u);
}

TEST(LockTableTest, ALockTakenWhileReservingIsSeenAfterwards) {
  GatedTokens tokens(0);
  LockTable table(tokens.source());
  tokens.hold_first_reserve();
  auto first = std::async(std::launch::async, [&] { return table.lock(request("a", "x")); });
  tokens.wait_at_gate();
  // A second caller reserves (not gated), and takes "a" while the first waits at the gate.
  ASSERT_EQ(table.lock(request("a", "y")), 1u);
  tokens.open_gate();
  EXPECT_EQ(first.get(), std::nullopt) << "the lock was taken meanwhile, and it may not wait";
  EXPECT_FALSE(table.unlock("a", "x"));
  EXPECT_TRUE(table.unlock("a", "y"));
}

TEST(LockTableTest, AWaiterGetsTheLockWithATokenReservedAfterTheUnlock) {
  GatedTokens tokens(1);
  LockTable table(tokens.source());
  ASSERT_EQ(table.lock(request("a", "x")), 1u);
  auto waiter = std::async(std::launch::async, [&] { return table.lock(request("a", "y", 20s)); });
  std::this_thread::sleep_for(10ms);  // most likely waiting by now; either way the result holds
  ASSERT_TRUE(table.unlock("a", "x"));
  EXPECT_EQ(waiter.get(), 2u);
}

TEST(LockTableTest, AFailedReservationTakesNothing) {
  GatedTokens tokens(0);
  LockTable table(tokens.source());
  tokens.fail_next_reserve();
  EXPECT_THROW(table.lock(request("a", "x")), IoError);
  EXPECT_FALSE(table.unlock("a", "x"));
  EXPECT_EQ(table.lock(request("a", "y")), 1u);
}

TEST(LockTableTest, InMemoryTokensCountPerName) {
  LockTable table;
  EXPECT_EQ(table.lock(request("a", "x")), 1u);
  EXPECT_EQ(table.lock(request("b", "x")), 1u);
  ASSERT_TRUE(table.unlock("a", "x"));
  EXPECT_EQ(table.lock(request("a", "y")), 2u);
  EXPECT_EQ(table.lock(request("a", "z")), std::nullopt);
}

}  // namespace
}  // namespace cairn
