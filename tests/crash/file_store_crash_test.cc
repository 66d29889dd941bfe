// Crash tests of the FileStore: torn tails at every byte, single-byte flips everywhere, kill -9
// of committing and packing processes. CAIRN_TORTURE_ROUNDS sets the kill rounds (10 by
// default; `make torture` runs 100).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "store/file_format.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

namespace fs = std::filesystem;

FileStoreOptions quiet(std::optional<FsyncPolicy> fsync = std::nullopt) {
  FileStoreOptions options;
  options.fsync = fsync;
  options.log = [](std::string_view) {};
  return options;
}

int rounds() {
  const char* env = std::getenv("CAIRN_TORTURE_ROUNDS");
  return env != nullptr ? std::max(1, std::atoi(env)) : 10;
}

// A database of `commits` transactions, each writing object i (oid first+i) = i, closed after
// each one so that sizes[i] is the file's length after transaction i (sizes[0]: before any).
struct Built {
  Oid first;
  std::vector<std::uint64_t> sizes;
};

Built build_db(const std::string& path, int commits) {
  Built b;
  {
    auto db = FileStore::open(path, quiet(FsyncPolicy::never));
    b.first = db->new_oids(static_cast<std::uint32_t>(commits));
  }
  b.sizes.push_back(fs::file_size(path));
  for (int i = 0; i < commits; ++i) {
    auto db = FileStore::open(path, quiet());
    CommitRequest req;
    req.writes.push_back(WriteOp{Oid(b.first.value() + static_cast<std::uint64_t>(i)), "n",
                                 "k" + std::to_string(i), encode(Value(i))});
    db->commit(req);
    db.reset();
    b.sizes.push_back(fs::file_size(path));
  }
  return b;
}

// How many of the objects first..first+n-1 exist; they must be a prefix, each holding its index.
int present_prefix(Store& db, Oid first, int n) {
  int present = 0;
  for (int i = 0; i < n; ++i) {
    Oid oid[] = {Oid(first.value() + static_cast<std::uint64_t>(i))};
    StoredObject obj = db.load(oid).objects[0];
    if (!obj.exists()) break;
    EXPECT_EQ(decode(obj.data), Value(i));
    ++present;
  }
  for (int i = present; i < n; ++i) {
    Oid oid[] = {Oid(first.value() + static_cast<std::uint64_t>(i))};
    EXPECT_FALSE(db.load(oid).objects[0].exists()) << "object " << i << " after a gap";
  }
  return present;
}

// `file` with its sync slots saying the log was durable up to `end` (and no further).
std::string with_durable_end(std::string file, std::uint64_t end) {
  std::string slot = logfmt::encode_sync_slot({1000, end});
  file.replace(logfmt::sync_slots_offset, slot.size(), slot);
  file.replace(logfmt::sync_slots_offset + logfmt::sync_slot_size, logfmt::sync_slot_size,
               std::string(logfmt::sync_slot_size, '\0'));
  return file;
}

TEST(FileStoreCrash, TornTailAtEveryByteOfTheLastThreeTransactions) {
  TempDir dir;
  std::string path = dir.file("db.cairn");
  constexpr int n = 6;
  Built b = build_db(path, n);
  // As a crash leaves it: the last three transactions written but not yet synced, so the sync
  // slots record the durable end before them.
  std::string whole = with_durable_end(read_file(path), b.sizes[n - 3]);
  std::string cut = dir.file("cut.cairn");
  for (std::uint64_t offset = b.sizes[n - 3]; offset < b.sizes[n]; ++offset) {
    int complete = 0;
    while (complete < n && b.sizes[complete + 1] <= offset)
      ++complete;
    write_file(cut, std::string_view(whole).substr(0, offset));
    {
      FileStoreOptions ro = quiet();
      ro.read_only = true;
      auto db = FileStore::open(cut, ro);
      EXPECT_EQ(present_prefix(*db, b.first, n), complete) << "offset " << offset;
    }
    EXPECT_EQ(fs::file_size(cut), offset) << "a read-only open must not cut the file";
    std::vector<std::string> log;
    FileStoreOptions options = quiet();
    options.log = [&](std::string_view line) { log.emplace_back(line); };
    auto db = FileStore::open(cut, options);
    ASSERT_EQ(present_prefix(*db, b.first, n), complete) << "offset " << offset;
    std::uint64_t torn = offset - b.sizes[complete];
    EXPECT_EQ(db->info().torn_bytes, torn) << "offset " << offset;
    if (torn != 0) {
      ASSERT_EQ(log.size(), 1u);
      EXPECT_NE(log[0].find("dropped " + std::to_string(torn) + " bytes"), std::string::npos)
          << log[0];
      EXPECT_NE(log[0].find("offset " + std::to_string(b.sizes[complete])), std::string::npos);
    }
    // The store goes on after the cut, and what it writes next survives a reopen.
    CommitRequest req;
    req.writes.push_back(WriteOp{Oid::root(), "", "", encode(Value("after"))});
    db->commit(req);
    db.reset();
    db = FileStore::open(cut, quiet());
    EXPECT_EQ(db->info().torn_bytes, 0u);
    EXPECT_EQ(present_prefix(*db, b.first, n), complete);
    Oid root[] = {Oid::root()};
    EXPECT_EQ(decode(db->load(root).objects[0].data), Value("after"));
  }
}

TEST(FileStoreCrash, ALogShorterThanItsDurableEndIsCorruption) {
  // Synced bytes cannot vanish in a crash: a file cut below its recorded durable end lost
  // acknowledged commits, and open must say so instead of cutting quietly.
  TempDir dir;
  std::string path = dir.file("db.cairn");
  Built b = build_db(path, 3);
  std::string whole = read_file(path);
  for (std::uint64_t offset : {b.sizes[2], b.sizes[2] + 5, b.sizes[3] - 1}) {
    write_file(path, std::string_view(whole).substr(0, offset));
    try {
      FileStore::open(path, quiet());
      ADD_FAILURE() << "a log cut at " << offset << " below its durable end opened";
    } catch (const Corruption& e) {
      EXPECT_NE(std::string(e.what()).find("recorded as durable"), std::string::npos) << e.what();
      // Cut inside a frame, the log does not end there: a partial frame does (it was said to
      // end at the frame's start).
      std::string what = e.what();
      if (offset == b.sizes[2]) {
        EXPECT_NE(what.find("the log ends at offset"), std::string::npos) << what;
      } else {
        EXPECT_NE(what.find("is incomplete, though it was written before"), std::string::npos)
            << what;
      }
    }
    EXPECT_EQ(read_file(path).size(), offset) << "nothing is written to a corrupt file";
    CheckReport report = check_file(path);
    EXPECT_FALSE(report.ok);
    // check once said such a frame would be cut at the next open, which refuses the file.
    for (const std::string& problem : report.problems) {
      EXPECT_EQ(problem.find("cut off at the next"), std::string::npos) << problem;
    }
  }
}

// `bytes` with one bit of byte `pos` flipped.
std::string flip_byte(std::string bytes, std::size_t pos) {
  bytes[pos] = static_cast<char>(bytes[pos] ^ 0x10);
  return bytes;
}

TEST(FileStoreCrash, EverySingleByteFlipIsDetected) {
  TempDir dir;
  std::string path = dir.file("db.cairn");
  build_db(path, 4);
  {  // a commit with several records, a delete and a pack-written snapshot frame too
    auto db = FileStore::open(path, quiet());
    Oid a = db->new_oids(2);
    CommitRequest req;
    req.writes.push_back(WriteOp{Oid::root(), "", "", encode(Value(Ref{a, ""}))});
    req.writes.push_back(WriteOp{a, "t", "key", encode(Value("x"))});
    req.deletes.push_back(Oid(a.value() + 1));
    db->commit(req);
  }
  std::string whole = read_file(path);
  std::string flipped_path = dir.file("flipped.cairn");
  for (std::size_t pos = 0; pos < whole.size(); ++pos) {
    std::string bytes = flip_byte(whole, pos);
    write_file(flipped_path, bytes);
    CheckReport report = check_file(flipped_path);
    EXPECT_FALSE(report.ok) << "flip at " << pos << " passed check";
    bool names_offset = false;
    for (const auto& p : report.problems)
      names_offset = names_offset || p.find("offset") != std::string::npos;
    EXPECT_TRUE(names_offset) << "flip at " << pos;
    try {
      FileStore::open(flipped_path, quiet());
      ADD_FAILURE() << "flip at " << pos << " opened";
    } catch (const Corruption& e) {
      EXPECT_NE(std::string(e.what()).find("offset"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_file(flipped_path), bytes)
        << "open wrote to a corrupt file (flip " << pos << ")";
  }
  EXPECT_TRUE(check_file(path).ok);
}

TEST(FileStoreCrash, EveryByteFlipInACheckpointedDatabaseIsFoundByCheck) {
  TempDir dir;
  std::string path = dir.file("db.cairn");
  std::map<std::uint64_t, Value> expected;
  {
    FileStoreOptions options = quiet(FsyncPolicy::never);
    options.checkpoint_bytes = 512;
    auto db = FileStore::open(path, options);
    Oid first = db->new_oids(8);
    for (int i = 0; i < 12; ++i) {
      CommitRequest req;
      Oid oid(first.value() + static_cast<std::uint64_t>(i % 8));
      req.writes.push_back(WriteOp{oid, "t", "k" + std::to_string(i % 8), encode(Value(i))});
      expected[oid.value()] = Value(i);
      db->commit(req);
    }
    ASSERT_NE(db->info().checkpoint_offset, 0u);
  }
  ASSERT_TRUE(check_file(path).ok);
  std::string whole = read_file(path);
  std::string flipped_path = dir.file("flipped.cairn");
  for (std::size_t pos = 0; pos < whole.size(); ++pos) {
    std::string bytes = flip_byte(whole, pos);
    write_file(flipped_path, bytes);
    EXPECT_FALSE(check_file(flipped_path).ok) << "flip at " << pos << " passed check";
    // Open skips what the checkpoint covers, so it may not notice a flip there; but whatever
    // it returns must be the data committed.
    try {
      auto db = FileStore::open(flipped_path, quiet());
      for (const auto& [oid, v] : expected) {
        Oid one[] = {Oid(oid)};
        StoredObject obj = db->load(one).objects[0];
        ASSERT_TRUE(obj.exists()) << "flip at " << pos;
        ASSERT_EQ(decode(obj.data), v) << "flip at " << pos;
      }
    } catch (const Corruption&) {
    }
  }
}

TEST(FileStoreCrash, DamagePastTheDurableEndIsATornTailEvenWithDataAfterIt) {
  // A power loss during an unsynced append can leave later pages of the write on disk and
  // earlier ones not. Past the end the sync slots record, that is a torn tail, not corruption.
  TempDir dir;
  std::string path = dir.file("db.cairn");
  Built b = build_db(path, 3);
  std::string whole = read_file(path);
  std::string later_page(300, 'x');  // bytes of a later page of the same write
  for (std::string damage : {std::string(40, '\0') + later_page,  // zeroed start, data after
                             std::string("ctxn garbage header bytes..") + later_page}) {
    std::string cut = dir.file("cut.cairn");
    write_file(cut, whole + damage);
    CheckReport report = check_file(cut);
    ASSERT_EQ(report.problems.size(), 1u);
    EXPECT_NE(report.problems[0].find("torn transaction at offset " + std::to_string(whole.size())),
              std::string::npos)
        << report.problems[0];
    std::vector<std::string> log;
    FileStoreOptions options = quiet();
    options.log = [&](std::string_view line) { log.emplace_back(line); };
    auto db = FileStore::open(cut, options);
    EXPECT_EQ(present_prefix(*db, b.first, 3), 3);
    EXPECT_EQ(db->info().torn_offset, whole.size());
    EXPECT_EQ(log.size(), 1u);
    db.reset();
    EXPECT_EQ(read_file(cut).size(), whole.size()) << "the damage is cut off";
    EXPECT_TRUE(check_file(cut).ok);
  }
  // The same bytes inside the durable log are corruption.
  std::string inside = whole;
  inside.replace(b.sizes[1] + 2, 10, "0123456789");
  write_file(path, inside);
  EXPECT_THROW(FileStore::open(path, quiet()), Corruption);
}

// Reads 16-byte acknowledgements (thread, number) from `fd` until `deadline`, or until EOF.
void read_acks(int fd, std::chrono::steady_clock::time_point deadline,
               std::map<std::uint64_t, std::int64_t>& last_ack, bool drain) {
  std::string pending;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!drain && left.count() <= 0) return;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, drain ? 1000 : static_cast<int>(left.count()));
    if (r <= 0) return;
    std::uint64_t msg[2];
    ssize_t got = ::read(fd, msg, sizeof msg);
    if (got <= 0) return;
    ASSERT_EQ(got, static_cast<ssize_t>(sizeof msg)) << "acks are written whole";
    last_ack[msg[0]] = std::max<std::int64_t>(last_ack[msg[0]], static_cast<std::int64_t>(msg[1]));
  }
}

// The child: `threads` committers, each committing pairs ("a/t/i", "b/t/i") of type "n" in
// numbered transactions, acknowledging each over `ack_fd` once commit() returns.
[[noreturn]] void commit_forever(const std::string& path, FsyncPolicy policy, int threads,
                                 std::uint64_t checkpoint_bytes, int ack_fd) {
  try {
    FileStoreOptions options = quiet(policy);
    options.checkpoint_bytes = checkpoint_bytes;
    auto db = FileStore::open(path, options);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        // Continue numbering after what earlier rounds left.
        std::uint64_t i = db->scan_keys("n", "a/" + std::to_string(t) + "/", "", SIZE_MAX).size();
        for (;; ++i) {
          Oid oid = db->new_oids(2);
          std::string suffix = std::to_string(t) + "/" + std::to_string(i);
          CommitRequest req;
          req.writes.push_back(WriteOp{oid, "n", "a/" + suffix, encode(Value(std::int64_t(i)))});
          req.writes.push_back(
              WriteOp{Oid(oid.value() + 1), "n", "b/" + suffix, encode(Value(std::int64_t(i)))});
          db->commit(req);
          std::uint64_t msg[2] = {static_cast<std::uint64_t>(t), i};
          if (::write(ack_fd, msg, sizeof msg) != sizeof msg) ::_exit(3);
        }
      });
    }
    for (auto& w : workers)
      w.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
  }
  ::_exit(2);
}

TEST(FileStoreCrash, KillNineNeverLosesAnAcknowledgedCommit) {
  TempDir dir;
  std::string path = dir.file("db.cairn");
  std::mt19937 rng(std::random_device{}());
  std::map<std::uint64_t, std::int64_t> acked;  // thread -> highest acknowledged number
  for (int round = 0; round < rounds(); ++round) {
    bool batch = round % 2 == 1;
    int threads = batch ? 4 : 1;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      // Every third round writes index checkpoints often, so that kills land inside them too.
      std::uint64_t checkpoint_bytes = round % 3 == 2 ? 16 * 1024 : std::uint64_t{64} << 20;
      commit_forever(path, batch ? FsyncPolicy::batch : FsyncPolicy::always, threads,
                     checkpoint_bytes, fds[1]);
    }
    ::close(fds[1]);
    auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 250)(rng));
    read_acks(fds[0], std::chrono::steady_clock::now() + delay, acked, false);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child died on its own, status " << status;
    read_acks(fds[0], {}, acked, true);  // acks sent before the kill are still in the pipe
    ::close(fds[0]);

    auto db = FileStore::open(path, quiet());
    // Per thread: the pairs present are exactly 0..m with m >= the highest ack, each whole.
    std::map<std::string, Value> objects;
    for (const ScanEntry& e : db->scan_type("n", Oid::root(), SIZE_MAX)) {
      Oid one[] = {e.oid};
      objects[e.key] = decode(db->load(one).objects[0].data);
    }
    for (int t = 0; t < 4; ++t) {
      std::int64_t present = 0;
      while (objects.contains("a/" + std::to_string(t) + "/" + std::to_string(present)))
        ++present;
      auto it = acked.find(static_cast<std::uint64_t>(t));
      if (it != acked.end()) {
        ASSERT_GT(present, it->second)
            << "round " << round << ": thread " << t << " lost acknowledged commit " << it->second;
      }
      for (std::int64_t i = 0; i < present; ++i) {
        std::string suffix = std::to_string(t) + "/" + std::to_string(i);
        ASSERT_TRUE(objects.contains("b/" + suffix)) << "half a transaction: " << suffix;
        EXPECT_EQ(objects["a/" + suffix], Value(i));
        objects.erase("a/" + suffix);
        objects.erase("b/" + suffix);
      }
    }
    EXPECT_TRUE(objects.empty()) << objects.size() << " objects outside the committed prefixes, "
                                 << "e.g. " << objects.begin()->first;
  }
  // What `make torture` reports: every acknowledged commit was checked after every round.
  std::int64_t acknowledged = 0;
  for (const auto& [thread, last] : acked)
    acknowledged += last + 1;
  std::printf("kill -9 torture: %d rounds, %lld acknowledged commits, lost: %s\n", rounds(),
              static_cast<long long>(acknowledged),
              ::testing::Test::HasFailure() ? "see the failures above" : "0");
}

TEST(FileStoreCrash, KillDuringPackLeavesTheOldOrTheNewFileWhole) {
  TempDir dir;
  std::string path = dir.file("db.cairn");
  constexpr int n = 3000;
  Oid first;
  {
    auto db = FileStore::open(path, quiet(FsyncPolicy::never));
    first = db->new_oids(n * 2);
    for (int rewrite = 0; rewrite < 2; ++rewrite) {
      CommitRequest req;
      for (int i = 0; i < n; ++i) {
        req.writes.push_back(
            WriteOp{Oid(first.value() + static_cast<std::uint64_t>(i)), "n", "", encode(Value(i))});
        req.writes.push_back(WriteOp{Oid(first.value() + n + static_cast<std::uint64_t>(i)), "", "",
                                     encode(Value("garbage"))});
      }
      db->commit(req);
    }
  }
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < rounds(); ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        auto db = FileStore::open(path, quiet());
        for (;;) {
          db->pack();
          CommitRequest req;  // make some garbage for the next pack
          req.writes.push_back(WriteOp{first, "n", "", encode(Value(0))});
          db->commit(req);
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
      }
      ::_exit(2);
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 120)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child died on its own, status " << status;
    {
      auto db = FileStore::open(path, quiet());
      EXPECT_EQ(present_prefix(*db, first, n), n) << "round " << round;
    }
    CheckReport report = check_file(path);
    EXPECT_TRUE(report.ok) << "round " << round << ": " << report.problems.front();
  }
}

}  // namespace
}  // namespace cairn::testing
