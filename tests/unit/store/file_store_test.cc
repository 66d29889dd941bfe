// FileStore: the conformance suite under each fsync policy, plus what only a file promises:
// reopening, the lock, recovery reports, pack, info and the index's memory.
#include "cairn/file_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "conformance/store_conformance.h"
#include "core/checksum.h"
#include "store/file_format.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

std::string next_path() {
  static TempDir dir;
  static std::atomic<int> counter{0};
  return dir.file("conformance-" + std::to_string(counter++) + ".cairn");
}

template <FsyncPolicy policy>
struct FileFactory {
  static std::unique_ptr<Store> make() {
    FileStoreOptions options;
    options.fsync = policy;
    return FileStore::open(next_path(), options);
  }
};
struct FileUrlFactory {
  static std::unique_ptr<Store> make() { return open("file:" + next_path()); }
};

using FileBatch = FileFactory<FsyncPolicy::batch>;
using FileAlways = FileFactory<FsyncPolicy::always>;
using FileNever = FileFactory<FsyncPolicy::never>;
INSTANTIATE_TYPED_TEST_SUITE_P(FileBatch, StoreConformance, FileBatch);
INSTANTIATE_TYPED_TEST_SUITE_P(FileAlways, StoreConformance, FileAlways);
INSTANTIATE_TYPED_TEST_SUITE_P(FileNever, StoreConformance, FileNever);
INSTANTIATE_TYPED_TEST_SUITE_P(FileUrl, StoreConformance, FileUrlFactory);

class FileStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<FileStore> open_db(std::optional<FsyncPolicy> fsync = std::nullopt) {
    FileStoreOptions options;
    options.fsync = fsync;
    options.log = [this](std::string_view line) { log.emplace_back(line); };
    return FileStore::open(path, options);
  }
  TempDir dir;
  std::string path = dir.file("db.cairn");
  std::vector<std::string> log;
};

TEST_F(FileStoreTest, ReopenKeepsObjectsKeysTypesAndCsn) {
  Oid a;
  std::uint64_t csn = 0;
  {
    auto db = open_db();
    a = db->new_oids(2);
    put(*db, Oid::root(), Value(Value::Map{{"a", Value(Ref{a, "item"})}}));
    put(*db, a, Value("first"), "item", "alpha");
    csn = put(*db, a, Value("second"), "item", "beta");
    CommitRequest del;
    del.deletes.push_back(Oid(a.value() + 1));  // absent: allowed
    csn = db->commit(del);
  }
  auto db = open_db();
  StoredObject obj = get(*db, a);
  EXPECT_EQ(decode(obj.data), Value("second"));
  EXPECT_EQ(obj.type, "item");
  EXPECT_EQ(obj.key, "beta");
  EXPECT_EQ(obj.version, csn - 1);
  EXPECT_EQ(db->info().last_csn, csn);
  EXPECT_EQ(db->find_key("item", "beta"), a);
  EXPECT_EQ(db->find_key("item", "alpha"), std::nullopt);
  auto scan = db->scan_type("item", Oid::root(), 10);
  ASSERT_EQ(scan.size(), 1u);
  EXPECT_EQ(scan[0].key, "beta");
  EXPECT_EQ(put(*db, a, Value("third")), csn + 1) << "CSNs go on from where they were";
  EXPECT_TRUE(log.empty()) << log.front();
}

TEST_F(FileStoreTest, OidsAreNeverHandedOutTwiceAcrossReopens) {
  std::set<std::uint64_t> seen;
  for (int round = 0; round < 3; ++round) {
    auto db = open_db(round == 1 ? FsyncPolicy::never : FsyncPolicy::batch);
    for (int i = 0; i < 3; ++i) {
      Oid first = db->new_oids(3000);  // crosses the reservation step
      for (std::uint64_t o = first.value(); o < first.value() + 3000; ++o) {
        ASSERT_TRUE(seen.insert(o).second) << "oid " << o << " handed out twice";
      }
    }
  }
}

// A crash (the file's bytes as they are while the store is open) under every policy: oids
// handed out before it are not handed out again. Under never an oid mark waited in the process's
// buffer, a crash lost it, and the oid came again: a client's creation from before the crash then
// overwrote, as a blind write, the object another client had created since.
TEST_F(FileStoreTest, OidsAreNeverHandedOutTwiceAcrossACrash) {
  std::string copy = dir.file("crashed.cairn");
  for (FsyncPolicy policy : {FsyncPolicy::batch, FsyncPolicy::always, FsyncPolicy::never}) {
    std::filesystem::remove(path);
    std::filesystem::remove(copy);
    auto db = open_db(policy);
    put(*db, Oid::root(), Value(1));
    Oid handed = db->new_oids(1);
    write_file(copy, read_file(path));
    auto crashed = FileStore::open(copy);
    EXPECT_GT(crashed->new_oids(1), handed) << to_string(policy);
  }
}

TEST_F(FileStoreTest, SecondOpenerIsRefusedWithThePid) {
  auto db = open_db();
  try {
    open_db();
    FAIL() << "a second writer opened the database";
  } catch (const Busy& e) {
    EXPECT_NE(std::string(e.what()).find("in use by pid " + std::to_string(::getpid())),
              std::string::npos)
        << e.what();
  }
  FileStoreOptions ro;
  ro.read_only = true;
  EXPECT_THROW(FileStore::open(path, ro), Busy) << "a reader must not read under a writer";
  db.reset();
  EXPECT_NO_THROW(open_db()) << "the lock goes with the store";
}

// The lock file went beside the name given, so a symlink or a hard link to an open database
// got a lock file of its own, and two writers appended to one log: acknowledged commits were lost.
TEST_F(FileStoreTest, EveryNameOfADatabaseSharesItsLock) {
  namespace fs = std::filesystem;
  std::string symlink = dir.file("link.cairn");
  std::string hard = dir.file("hard.cairn");
  open_db().reset();
  fs::create_symlink("db.cairn", symlink);
  fs::create_hard_link(path, hard);
  FileStoreOptions ro;
  ro.read_only = true;
  for (const std::string* first : {&path, &symlink, &hard}) {
    auto db = FileStore::open(*first);
    for (const std::string* second : {&path, &symlink, &hard}) {
      EXPECT_THROW(FileStore::open(*second), Busy) << *first << " then " << *second;
      EXPECT_THROW(FileStore::open(*second, ro), Busy) << *first << " then " << *second;
      EXPECT_THROW(check_file(*second), Busy) << *first << " then " << *second;
    }
  }
}

// Pack wrote PATH.pack and renamed it over PATH: through a symlink, that replaced the link with
// a copy, and later commits through it never reached the database.
TEST_F(FileStoreTest, PackAndCreateThroughASymlinkKeepTheLink) {
  namespace fs = std::filesystem;
  std::string link = dir.file("link.cairn");
  fs::create_symlink("db.cairn", link);  // points nowhere yet: opening creates db.cairn
  {
    auto db = FileStore::open(link);
    put(*db, Oid::root(), Value(1));
    put(*db, Oid::root(), Value(2));
    db->pack();
    put(*db, Oid::root(), Value(3));
  }
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path)));
  auto db = open_db();
  EXPECT_EQ(decode(get(*db, Oid::root()).data), Value(3));
  EXPECT_FALSE(fs::exists(link + ".lock"));
}

// Creating a database wrote its header through a link left at PATH.new (renaming the link into
// place), and the pid through a link at PATH.lock: either destroyed the file the link named.
TEST_F(FileStoreTest, CreateAndLockNeverWriteThroughALinkBesideTheDatabase) {
  namespace fs = std::filesystem;
  auto write_file = [](const std::string& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  };
  auto read_file = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string victim = dir.file("notes.txt");
  write_file(victim, "precious");

  fs::create_symlink(victim, path + ".new");
  fs::create_hard_link(victim, dir.file("other.cairn.new"));
  for (const std::string& p : {path, dir.file("other.cairn")}) {
    auto db = FileStore::open(p);
    put(*db, Oid::root(), Value(1));
    EXPECT_FALSE(fs::is_symlink(p)) << p;
    EXPECT_EQ(fs::hard_link_count(p), 1u) << p;
  }
  EXPECT_EQ(read_file(victim), "precious");
  EXPECT_EQ(decode(get(*open_db(), Oid::root()).data), Value(1));

  // A symbolic link at PATH.lock is refused, naming it; a hard link is locked but not written.
  std::string linked = dir.file("linked.cairn");
  fs::create_symlink(victim, linked + ".lock");
  try {
    FileStore::open(linked);
    ADD_FAILURE() << "opened with a symbolic link as its lock file";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("linked.cairn.lock: it is a symbolic link"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(linked));
  std::string hard = dir.file("hard.cairn");
  fs::create_hard_link(victim, hard + ".lock");
  {
    auto db = FileStore::open(hard);
    put(*db, Oid::root(), Value(2));
    try {
      FileStore::open(hard);
      ADD_FAILURE() << "the lock file with two names did not lock";
    } catch (const Busy& e) {
      // What it holds is not a pid: not shown as one.
      EXPECT_NE(std::string(e.what()).find("in use by pid (unknown)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(read_file(victim), "precious");

  // Nor anything but a regular file (a FIFO once made the open wait for a writer).
  std::string fifo = dir.file("fifo.cairn");
  FileStore::open(fifo).reset();
  fs::remove(fifo + ".lock");
  ASSERT_EQ(::mkfifo((fifo + ".lock").c_str(), 0644), 0);
  FileStoreOptions read_only;
  read_only.read_only = true;
  for (const FileStoreOptions& options : {FileStoreOptions{}, read_only}) {
    try {
      FileStore::open(fifo, options);
      ADD_FAILURE() << "opened with a FIFO as its lock file";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
  }
}

// Preallocation (zeros written ahead of the log) failed on a disk too full for them, though the
// commit itself fitted: the commit failed, and the store refused every call after it, reads too,
// until reopened. A file size limit stands in for the full disk.
TEST_F(FileStoreTest, ACommitThatFitsSucceedsWhenPreallocationDoesNot) {
  {
    auto db = open_db(FsyncPolicy::batch);
    put(*db, Oid::root(), Value(std::string(300'000, 'z')));
  }
  auto size = static_cast<rlim_t>(std::filesystem::file_size(path));
  struct Limit {
    rlimit before{};
    void (*sigxfsz)(int) = ::signal(SIGXFSZ, SIG_IGN);  // writes past it fail with EFBIG
    explicit Limit(rlim_t bytes) {
      ::getrlimit(RLIMIT_FSIZE, &before);
      rlimit now = before;
      now.rlim_cur = bytes;
      ::setrlimit(RLIMIT_FSIZE, &now);
    }
    ~Limit() {
      ::setrlimit(RLIMIT_FSIZE, &before);
      ::signal(SIGXFSZ, sigxfsz);
    }
  };
  Oid a;
  {
    Limit limit(size + 8192);  // room for a few small commits, not for 1 MiB of zeros
    auto db = open_db(FsyncPolicy::batch);
    a = db->new_oids(1);
    ASSERT_NO_THROW(put(*db, a, Value("fits")));
    ASSERT_NO_THROW(put(*db, a, Value("fits again")));
    EXPECT_EQ(decode(get(*db, a).data), Value("fits again"));
    // A commit that does not fit still fails, and nothing after it is taken for durable.
    EXPECT_THROW(put(*db, Oid::root(), Value(std::string(20'000, 'y'))), IoError);
  }
  auto db = open_db();
  EXPECT_EQ(decode(get(*db, a).data), Value("fits again"));
  EXPECT_EQ(decode(get(*db, Oid::root()).data), Value(std::string(300'000, 'z')));
}

// The packed file replaces the original: it keeps its permission bits (a private database stayed
// private only until its first pack, which made it 0644) and, where the process may, its owner.
TEST_F(FileStoreTest, PackKeepsTheFilesModeAndOwner) {
  namespace fs = std::filesystem;
  auto db = open_db();
  put(*db, Oid::root(), Value(1));
  put(*db, Oid::root(), Value(2));
  for (auto mode : {fs::perms::owner_read | fs::perms::owner_write,
                    fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read}) {
    fs::permissions(path, mode);
    db->pack();
    EXPECT_EQ(fs::status(path).permissions(), mode);
  }
  if (::geteuid() == 0) {  // only root may give a file away
    ASSERT_EQ(::chown(path.c_str(), 4321, 4322), 0);
    db->pack();
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 4321u);
    EXPECT_EQ(st.st_gid, 4322u);
  }
  EXPECT_EQ(decode(get(*db, Oid::root()).data), Value(2));
}

// A pack writes a new file and renames it over the name it was opened by: another hard link
// would keep the old file, and the two names would part. Refused, changing nothing.
TEST_F(FileStoreTest, PackRefusesAFileWithOtherHardLinks) {
  namespace fs = std::filesystem;
  auto db = open_db();
  put(*db, Oid::root(), Value(1));
  put(*db, Oid::root(), Value(2));
  std::string other = dir.file("other-name.cairn");
  fs::create_hard_link(path, other);
  EXPECT_THROW(db->pack(), InvalidArgument);
  EXPECT_FALSE(fs::exists(path + ".pack"));
  EXPECT_TRUE(fs::equivalent(path, other));
  put(*db, Oid::root(), Value(3));
  fs::remove(other);
  EXPECT_NO_THROW(db->pack());
  EXPECT_EQ(decode(get(*db, Oid::root()).data), Value(3));
}

TEST_F(FileStoreTest, LiveOidsWalksTheLiveObjectsInOrderFromAnyOid) {
  auto db = open_db();
  // Across pages (1024 oids) and directories (2^20 oids) of the index, with gaps.
  std::vector<Oid> live;
  for (std::uint64_t oid : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{1023},
                            std::uint64_t{1024}, std::uint64_t{5000}, std::uint64_t{1} << 20,
                            (std::uint64_t{1} << 20) + 1, (std::uint64_t{1} << 35) + 7}) {
    live.emplace_back(oid);
  }
  Oid first = db->new_oids(4000);
  ASSERT_EQ(first, Oid(1));
  db->new_oids(std::numeric_limits<std::uint32_t>::max());
  db->new_oids(std::numeric_limits<std::uint32_t>::max());
  for (std::uint32_t i = 0; i < 8; ++i)  // up to 2^35 + 2^33 or so handed out
    db->new_oids(std::numeric_limits<std::uint32_t>::max());
  for (Oid oid : live)
    put(*db, oid, Value(1));
  put(*db, Oid(2), Value(1));
  CommitRequest gone;
  gone.deletes.push_back(Oid(2));
  db->commit(gone);
  EXPECT_EQ(db->live_oids(Oid::root(), 100), live);
  EXPECT_EQ(db->live_oids(Oid::root(), 3), (std::vector<Oid>{live[0], live[1], live[2]}));
  EXPECT_EQ(db->live_oids(Oid(1024), 2), (std::vector<Oid>{Oid(1024), Oid(5000)}));
  EXPECT_EQ(db->live_oids(Oid(5001), 100), (std::vector<Oid>{live[5], live[6], live[7]}));
  EXPECT_EQ(db->live_oids(Oid((std::uint64_t{1} << 35) + 8), 100), std::vector<Oid>{});
  EXPECT_EQ(db->live_oids(Oid::root(), 0), std::vector<Oid>{});
}

TEST_F(FileStoreTest, ReadOnlyOpenRefusesCommitsAndMissingFiles) {
  FileStoreOptions ro;
  ro.read_only = true;
  EXPECT_THROW(FileStore::open(path, ro), IoError);
  EXPECT_FALSE(std::filesystem::exists(path)) << "a read-only open must not create the file";
  EXPECT_FALSE(std::filesystem::exists(path + ".lock")) << "nor a lock file for it";
  EXPECT_THROW(check_file(path), IoError);
  EXPECT_FALSE(std::filesystem::exists(path + ".lock"));
  { open_db(); }
  auto db = FileStore::open(path, ro);
  EXPECT_THROW(put(*db, Oid::root(), Value(1)), InvalidArgument);
}

TEST_F(FileStoreTest, NotADatabaseIsCorruption) {
  std::ofstream(path) << "this is not a cairn database, just some text long enough to pass 64 "
                         "bytes of header";
  EXPECT_THROW(open_db(), Corruption);
}

// Pointing cairn at a file that is not a database leaves nothing beside it; a lock file that
// was there before stays.
TEST_F(FileStoreTest, OpeningSomethingElseLeavesNoLockFile) {
  for (const std::string& text : {std::string("short"), std::string(100, 'x')}) {
    std::ofstream(path) << text;
    FileStoreOptions ro;
    ro.read_only = true;
    EXPECT_THROW(open_db(), Corruption) << text;
    EXPECT_THROW(FileStore::open(path, ro), Corruption) << text;
    EXPECT_FALSE(check_file(path).ok) << text;
    EXPECT_FALSE(std::filesystem::exists(path + ".lock")) << text;
  }
  std::ofstream(path + ".lock") << "";
  EXPECT_THROW(open_db(), Corruption);
  EXPECT_FALSE(check_file(path).ok);
  EXPECT_TRUE(std::filesystem::exists(path + ".lock")) << "someone else's lock file was removed";
}

TEST_F(FileStoreTest, PackDropsGarbageKeepsOidsAndShrinksTheFile) {
  Oid kept;
  Oid dropped;
  {
    auto db = open_db(FsyncPolicy::never);
    kept = db->new_oids(2);
    dropped = Oid(kept.value() + 1);
    put(*db, Oid::root(), Value(Value::Map{{"kept", Value(Ref{kept, ""})}}));
    for (int i = 0; i < 200; ++i)
      put(*db, kept, Value(std::string(100, static_cast<char>('a' + i % 26))));
    put(*db, dropped, Value("nobody points here"));
    FileStoreInfo before = db->info();
    EXPECT_GT(before.garbage_bytes, 150u * 100u);
    std::uint64_t calls = 0;
    PackStats stats = db->pack([&](std::uint64_t done, std::uint64_t total) {
      ++calls;
      EXPECT_LE(done, total);
    });
    EXPECT_GT(calls, 0u);
    EXPECT_EQ(stats.objects_before, 3u);
    EXPECT_EQ(stats.objects_after, 2u);
    EXPECT_LT(stats.bytes_after * 10, stats.bytes_before) << "200 versions should shrink to 1";
    EXPECT_FALSE(get(*db, dropped).exists());
    EXPECT_EQ(decode(get(*db, kept).data), Value(std::string(100, 'a' + 199 % 26)));
    EXPECT_EQ(db->info().last_csn, before.last_csn);
    put(*db, kept, Value("after pack"));
  }
  EXPECT_EQ(std::filesystem::file_size(path), [&] {
    auto db = open_db();
    return db->info().file_bytes;
  }());
  auto db = open_db();
  EXPECT_EQ(decode(get(*db, kept).data), Value("after pack"));
  EXPECT_FALSE(get(*db, dropped).exists());
  EXPECT_GT(db->new_oids(1).value(), dropped.value()) << "pack must not give oids back";
  EXPECT_FALSE(std::filesystem::exists(path + ".pack"));
}

TEST_F(FileStoreTest, AsyncCommitsAnswerOnceDurableAndConflictAtOnce) {
  auto db = open_db(FsyncPolicy::batch);
  Oid a = db->new_oids(1);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::uint64_t> done;
  std::vector<std::uint64_t> heard;
  Subscription sub = db->subscribe([&](std::uint64_t csn, std::span<const Oid>) {
    std::lock_guard lock(mu);
    heard.push_back(csn);
  });
  std::uint64_t first = 0;
  for (int i = 0; i < 100; ++i) {
    CommitRequest request;
    request.writes.push_back(WriteOp{a, "", "", encode(Value(i))});
    ASSERT_TRUE(db->commit_async(request, [&](std::uint64_t csn, std::exception_ptr error) {
      EXPECT_FALSE(error);
      std::lock_guard lock(mu);
      done.push_back(csn);
      cv.notify_all();
    }));
    if (i == 0) first = db->changes_since(0).csn;
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return done.size() == 100; }));
    for (std::size_t i = 0; i < done.size(); ++i)
      EXPECT_EQ(done[i], first + i) << "answered out of CSN order";
    EXPECT_EQ(heard, done) << "listeners hear each commit before it is answered";
  }
  // A stale read conflicts before anything is queued.
  CommitRequest stale;
  stale.reads.push_back(ReadCheck{a, first});
  stale.writes.push_back(WriteOp{a, "", "", encode(Value(-1))});
  EXPECT_THROW(db->commit_async(stale, [](std::uint64_t, std::exception_ptr) {}), ConflictError);
  // Policies without a sync thread say so, and commit nothing.
  FileStoreOptions never_options;
  never_options.fsync = FsyncPolicy::never;
  never_options.log = [](std::string_view) {};
  auto never = FileStore::open(dir.file("never.cairn"), never_options);
  CommitRequest one;
  one.writes.push_back(WriteOp{never->new_oids(1), "", "", encode(Value(1))});
  EXPECT_FALSE(never->commit_async(one, [](std::uint64_t, std::exception_ptr) {}));
  EXPECT_EQ(never->changes_since(0).csn, 0u);
  // Everything answered is in the file after a reopen.
  sub.reset();
  db.reset();
  db = open_db();
  EXPECT_EQ(decode(get(*db, a).data), Value(99));
}

// Many committers at once under policy batch: blocking commits (which lead and join syncs) and
// commit_async() ones (made durable by the store's sync thread) share syncs; every one of them
// returns or is answered, and everything acknowledged is there after a reopen.
TEST_F(FileStoreTest, ConcurrentBatchCommittersAllReturnAndSurviveReopen) {
  auto db = open_db(FsyncPolicy::batch);
  constexpr int threads = 8;
  constexpr int per_thread = 100;
  Oid first = db->new_oids((threads + 1) * per_thread);
  auto oid_of = [&](int t, int i) {
    return Oid(first.value() + static_cast<std::uint64_t>(t * per_thread + i));
  };
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0;
  int finished = 0;  // workers whose every commit() returned
  bool async_failed = false;
  auto finish = [&] {
    std::lock_guard lock(mu);
    ++finished;
    cv.notify_all();
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        put(*db, oid_of(t, i), Value(t * 1000 + i));
      finish();
    });
  }
  workers.emplace_back([&] {
    for (int i = 0; i < per_thread; ++i) {
      CommitRequest request;
      request.writes.push_back(WriteOp{oid_of(threads, i), "", "", encode(Value(-i))});
      db->commit_async(request, [&](std::uint64_t, std::exception_ptr error) {
        std::lock_guard lock(mu);
        async_failed = async_failed || error != nullptr;
        ++answered;
        cv.notify_all();
      });
    }
    finish();
  });
  {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 30s,
                     [&] { return finished == threads + 1 && answered == per_thread; })) {
      // A committer never woken: the threads cannot be joined, so end the test program here.
      std::cerr << finished << " of " << threads + 1 << " committers returned, " << answered
                << " of " << per_thread << " async commits answered\n";
      std::abort();
    }
    EXPECT_FALSE(async_failed);
  }
  for (auto& w : workers)
    w.join();
  db.reset();
  db = open_db();
  for (int t = 0; t <= threads; ++t) {
    for (int i = 0; i < per_thread; ++i) {
      StoredObject obj = get(*db, oid_of(t, i));
      ASSERT_TRUE(obj.exists()) << "commit " << i << " of thread " << t << " lost";
      EXPECT_EQ(decode(obj.data), t < threads ? Value(t * 1000 + i) : Value(-i));
    }
  }
}

TEST_F(FileStoreTest, PackUnderConcurrentCommitsLosesNothing) {
  auto db = open_db(FsyncPolicy::never);
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  std::vector<std::vector<std::pair<Oid, int>>> acked(3);
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load() || i < 50; ++i) {
        Oid oid = db->new_oids(1);
        put(*db, oid, Value(i), "item");  // typed: a pack root
        Oid garbage = db->new_oids(1);
        put(*db, garbage, Value("garbage"));
        acked[t].emplace_back(oid, i);
      }
    });
  }
  std::string pack_error;
  try {
    for (int round = 0; round < 5; ++round)
      db->pack();
  } catch (const std::exception& e) {
    pack_error = e.what();
  }
  stop = true;
  for (auto& w : writers)
    w.join();
  ASSERT_EQ(pack_error, "") << "pack failed under concurrent commits";
  std::uint64_t typed = 0;
  for (const auto& list : acked)
    typed += list.size();
  PackStats last = db->pack();
  EXPECT_EQ(last.objects_after, typed) << "every untyped, unreferenced object is garbage";
  auto check = [&](Store& store) {
    for (const auto& list : acked) {
      for (auto [oid, i] : list) {
        StoredObject obj = get(store, oid);
        ASSERT_TRUE(obj.exists()) << "object " << oid.value() << " lost by pack";
        ASSERT_EQ(decode(obj.data), Value(i));
      }
    }
  };
  check(*db);
  db.reset();
  db = open_db();
  check(*db);
}

TEST_F(FileStoreTest, PackKeepsWhatACommitDuringPackStartsReferencing) {
  // An object unreachable at the snapshot but referenced by a commit made during the pack must
  // survive. The progress callback runs inside pack, after the snapshot: commit from there.
  auto db = open_db(FsyncPolicy::never);
  Oid orphan = db->new_oids(1);
  put(*db, orphan, Value("orphan"));
  put(*db, Oid::root(), Value(Value::Map{}));
  bool committed = false;
  db->pack([&](std::uint64_t, std::uint64_t) {
    if (committed) return;
    committed = true;
    put(*db, Oid::root(), Value(Value::Map{{"now", Value(Ref{orphan, ""})}}));
  });
  ASSERT_TRUE(committed);
  EXPECT_TRUE(get(*db, orphan).exists());
  db.reset();
  db = open_db();
  EXPECT_EQ(decode(get(*db, orphan).data), Value("orphan"));
}

TEST_F(FileStoreTest, IndexCostsAtMost64BytesPerObject) {
  auto db = open_db(FsyncPolicy::never);
  constexpr std::uint32_t n = 200'000;
  Oid first = db->new_oids(n);
  CommitRequest req;
  for (std::uint32_t i = 0; i < n; ++i) {
    req.writes.push_back(WriteOp{Oid(first.value() + i), i % 2 ? "even" : "odd", "", "\xc0"});
  }
  db->commit(req);
  FileStoreInfo info = db->info();
  EXPECT_EQ(info.objects, n);
  EXPECT_LE(info.index_bytes, 64u * n) << info.index_bytes / n << " bytes per object";
}

TEST_F(FileStoreTest, PackOfAStoreWithNothingToKeepKeepsTheCsn) {
  std::uint64_t csn = 0;
  {
    auto db = open_db();
    Oid a = db->new_oids(1);
    put(*db, a, Value("unreachable"));
    csn = put(*db, a, Value("still unreachable"));
    PackStats stats = db->pack();
    EXPECT_EQ(stats.objects_after, 0u);
  }
  auto db = open_db();
  EXPECT_EQ(db->info().last_csn, csn) << "CSNs must never go back";
  EXPECT_EQ(put(*db, Oid::root(), Value(1)), csn + 1);
}

TEST_F(FileStoreTest, OpenReplaysOnlyTheLogAfterTheNewestCheckpoint) {
  FileStoreOptions options;
  options.fsync = FsyncPolicy::never;
  options.checkpoint_bytes = 64 * 1024;
  std::map<std::uint64_t, Value> expected;
  std::uint64_t csn = 0;
  Oid first;
  {
    auto db = FileStore::open(path, options);
    first = db->new_oids(300);
    for (int round = 0; round < 20; ++round) {
      CommitRequest req;
      for (std::uint64_t i = 0; i < 300; i += 3) {
        Oid oid(first.value() + i + static_cast<std::uint64_t>(round % 3));
        Value v(std::string(200, static_cast<char>('a' + round)));
        req.writes.push_back(WriteOp{oid, "t", "k" + std::to_string(oid.value()), encode(v)});
        expected[oid.value()] = v;
      }
      if (round == 7) {
        req.deletes.push_back(Oid(first.value() + 299));
        expected.erase(first.value() + 299);
        std::erase_if(req.writes,
                      [&](const WriteOp& w) { return w.oid.value() == first.value() + 299; });
      }
      csn = db->commit(req);
    }
    EXPECT_NE(db->info().checkpoint_offset, 0u) << "the log passed checkpoint_bytes";
  }
  options.checkpoint_bytes = 0;  // so that close adds none: what open replays is the tail
  auto db = FileStore::open(path, options);
  FileStoreInfo info = db->info();
  EXPECT_NE(info.checkpoint_offset, 0u);
  EXPECT_LT(info.replayed_bytes, info.file_bytes / 4) << "open should start at the checkpoint";
  EXPECT_EQ(info.last_csn, csn);
  EXPECT_EQ(info.objects, expected.size());
  for (const auto& [oid, v] : expected) {
    StoredObject obj = get(*db, Oid(oid));
    ASSERT_TRUE(obj.exists()) << oid;
    EXPECT_EQ(decode(obj.data), v);
    EXPECT_EQ(obj.key, "k" + std::to_string(oid));
    EXPECT_EQ(db->find_key("t", obj.key), Oid(oid));
  }
  EXPECT_EQ(db->scan_type("t", Oid::root(), 1000).size(), expected.size());
  EXPECT_GE(db->new_oids(1).value(), first.value() + 300) << "the checkpoint keeps the oid mark";
  db.reset();
  EXPECT_TRUE(check_file(path).ok);
}

// Fencing tokens promise to grow per name forever (store.h), so a FileStore's must survive
// closing the file, a crash, checkpoints and pack.
std::uint64_t take(Store& db, const std::string& name, const std::string& owner) {
  std::optional<std::uint64_t> token = db.lock(LockRequest{name, owner, 10s, 0ms});
  EXPECT_TRUE(token.has_value()) << name << " is held";
  return token.value_or(0);
}

TEST_F(FileStoreTest, FencingTokensGrowAcrossReopen) {
  for (FsyncPolicy policy : {FsyncPolicy::batch, FsyncPolicy::always, FsyncPolicy::never}) {
    std::filesystem::remove(path);
    std::uint64_t first = 0;
    {
      auto db = open_db(policy);
      first = take(*db, "n", "A");
    }
    auto db = open_db(policy);
    EXPECT_GT(take(*db, "n", "B"), first) << to_string(policy);
  }
}

TEST_F(FileStoreTest, FencingTokensStrictlyIncreaseOverManyLocksAndReopens) {
  std::map<std::string, std::uint64_t> last;
  int taken = 0;
  for (int round = 0; round < 4; ++round) {
    auto db = open_db(round == 2 ? FsyncPolicy::never : FsyncPolicy::batch);
    // 1500 locks a round: more than one reservation, and the last one left partly unused.
    for (int i = 0; i < 1500; ++i) {
      std::string name = "n" + std::to_string(i % 7);
      std::string owner = "o" + std::to_string(round) + "-" + std::to_string(i);
      std::uint64_t token = take(*db, name, owner);
      ASSERT_GT(token, last[name]) << "lock " << taken << " of " << name;
      last[name] = token;
      ASSERT_TRUE(db->unlock(name, owner));
      ++taken;
    }
  }
  EXPECT_TRUE(check_file(path).ok);
}

TEST_F(FileStoreTest, FencingTokensFromManyThreadsAreUniqueAndIncreasePerName) {
  // Threads lock three shared names past several reservations, which they make among
  // themselves (one thread's reservation runs while others lock and unlock).
  auto db = open_db(FsyncPolicy::batch);
  constexpr int threads = 4;
  constexpr int per_thread = 1200;
  std::mutex mu;
  std::map<std::string, std::vector<std::uint64_t>> granted;  // in the order held
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        std::string name = "n" + std::to_string(i % 3);
        std::string owner = "t" + std::to_string(t);
        std::optional<std::uint64_t> token = db->lock(LockRequest{name, owner, 10s, 10s});
        if (!token) continue;  // counted below: every lock should have been granted
        {
          std::lock_guard lk(mu);
          granted[name].push_back(*token);  // still held: no other holder appends meanwhile
        }
        db->unlock(name, owner);
      }
    });
  }
  for (std::thread& w : workers)
    w.join();
  std::set<std::uint64_t> all;
  std::size_t count = 0;
  for (auto& [name, tokens] : granted) {
    for (std::size_t i = 1; i < tokens.size(); ++i)
      ASSERT_GT(tokens[i], tokens[i - 1]) << name << ", grant " << i;
    all.insert(tokens.begin(), tokens.end());
    count += tokens.size();
  }
  EXPECT_EQ(count, std::size_t{threads} * per_thread);
  EXPECT_EQ(all.size(), count) << "a token was handed out twice";
  db.reset();
  EXPECT_TRUE(check_file(path).ok);
}

TEST_F(FileStoreTest, FencingTokensGrowAfterACrash) {
  // A crash: the file's bytes as they are while the store is open, once lock() has returned.
  std::string copy = dir.file("crashed.cairn");
  for (FsyncPolicy policy : {FsyncPolicy::batch, FsyncPolicy::never}) {
    std::filesystem::remove(path);
    std::filesystem::remove(copy);
    auto db = open_db(policy);
    std::uint64_t token = take(*db, "n", "A");
    write_file(copy, read_file(path));
    {
      auto crashed = FileStore::open(copy);
      std::uint64_t again = take(*crashed, "n", "B");
      EXPECT_GT(again, token) << to_string(policy);
      token = std::max(token, again);
    }
    // The same after many locks, past the first reservation.
    for (int i = 0; i < 3000; ++i)
      token = std::max(token, take(*db, "m" + std::to_string(i), "A"));
    EXPECT_TRUE(db->unlock("n", "A"));
    token = std::max(token, take(*db, "n", "A"));
    write_file(copy, read_file(path));
    auto crashed = FileStore::open(copy);
    EXPECT_GT(take(*crashed, "n", "B"), token) << to_string(policy);
  }
}

TEST_F(FileStoreTest, FencingTokensGrowAfterACheckpoint) {
  FileStoreOptions options;
  options.checkpoint_bytes = 16 * 1024;
  options.log = [this](std::string_view line) { log.emplace_back(line); };
  std::string copy = dir.file("crashed.cairn");
  std::uint64_t token = 0;
  {
    auto db = FileStore::open(path, options);
    token = take(*db, "n", "A");
    for (int i = 0; i < 100; ++i)
      put(*db, Oid::root(), Value(std::string(500, 'x')));
    ASSERT_NE(db->info().checkpoint_offset, 0u) << "the log passed checkpoint_bytes";
    write_file(copy, read_file(path));
    EXPECT_TRUE(db->unlock("n", "A"));
  }
  for (const std::string& p : {path, copy}) {
    auto db = FileStore::open(p, options);
    EXPECT_NE(db->info().checkpoint_offset, 0u);
    EXPECT_LT(db->info().replayed_bytes, 16u * 1024) << "open should start at the checkpoint";
    EXPECT_GT(take(*db, "n", "B"), token) << p;
  }
  EXPECT_TRUE(check_file(path).ok);
  EXPECT_TRUE(check_file(copy).ok);
}

TEST_F(FileStoreTest, FencingTokensGrowAfterPack) {
  std::string copy = dir.file("crashed.cairn");
  std::uint64_t token = 0;
  {
    auto db = open_db();
    Oid a = db->new_oids(1);
    for (int i = 0; i < 50; ++i)
      put(*db, a, Value(i));  // garbage, unreachable: pack drops all of it
    token = take(*db, "n", "A");
    EXPECT_TRUE(db->unlock("n", "A"));
    db->pack();
    std::uint64_t after = take(*db, "n", "B");
    EXPECT_GT(after, token);
    token = after;
    write_file(copy, read_file(path));
  }
  {
    auto crashed = FileStore::open(copy);
    EXPECT_GT(take(*crashed, "n", "C"), token) << "a crash after pack";
  }
  {
    auto db = open_db();
    std::uint64_t again = take(*db, "n", "C");
    EXPECT_GT(again, token) << "a reopen after pack";
    token = again;
    EXPECT_TRUE(db->unlock("n", "C"));
    db->pack();  // a pack whose snapshot holds the mark, with no lock since
  }
  auto db = open_db();
  EXPECT_GT(take(*db, "n", "D"), token) << "a reopen after a second pack";
  db.reset();
  EXPECT_TRUE(check_file(path).ok);
}

TEST_F(FileStoreTest, ALockDuringPackMakesThePackedFileVersion2) {
  std::uint64_t token = 0;
  {
    auto db = open_db();
    put(*db, Oid::root(), Value(1));
    ASSERT_EQ(db->info().format_version, 1u);
    // The first token of a version-1 file, taken while pack copies (from its own thread).
    db->pack([&](std::uint64_t, std::uint64_t) {
      if (token == 0) token = take(*db, "n", "A");
    });
    ASSERT_NE(token, 0u);
    EXPECT_EQ(db->info().format_version, 2u);
  }
  auto db = open_db();
  EXPECT_EQ(db->info().format_version, 2u) << "the packed file holds a fence mark";
  EXPECT_GT(take(*db, "n", "B"), token);
  db.reset();
  EXPECT_TRUE(check_file(path).ok);
}

TEST_F(FileStoreTest, ReadOnlyOpenRefusesLocksAndWritesNothing) {
  { take(*open_db(), "n", "A"); }
  std::string before = read_file(path);
  FileStoreOptions ro;
  ro.read_only = true;
  {
    auto db = FileStore::open(path, ro);
    EXPECT_THROW(db->lock(LockRequest{"n", "B", 10s, 0ms}), InvalidArgument);
  }
  EXPECT_EQ(read_file(path), before);
}

TEST_F(FileStoreTest, AFileIsFormatVersion1UntilItHoldsAFenceMark) {
  {
    auto db = open_db();
    put(*db, Oid::root(), Value(1));
    EXPECT_EQ(db->info().format_version, 1u) << "readable by readers of version 1";
    take(*db, "n", "A");
    EXPECT_EQ(db->info().format_version, 2u);
  }
  auto db = open_db();
  EXPECT_EQ(db->info().format_version, 2u);
  EXPECT_EQ(decode(get(*db, Oid::root()).data), Value(1));
  EXPECT_GE(db->info().fence_mark, 2u);
}

TEST_F(FileStoreTest, RaiseFenceMarkMovesTokensUpDurablyAndNeverDown) {
  {
    auto db = open_db(FsyncPolicy::never);
    db->raise_fence_mark(5000);
    EXPECT_EQ(db->info().format_version, 2u);
    EXPECT_EQ(take(*db, "n", "A"), 5000u);
    db->raise_fence_mark(10);  // below the tokens already handed out: nothing changes
    EXPECT_EQ(take(*db, "m", "A"), 5001u);
    EXPECT_THROW(db->raise_fence_mark((std::uint64_t{1} << 62) + 1), InvalidArgument);
  }
  {
    auto db = open_db();
    EXPECT_GT(take(*db, "o", "A"), 5001u);
  }
  // Synced before it returns, even under never: a copy taken then (a crash) has it.
  {
    auto db = open_db(FsyncPolicy::never);
    db->raise_fence_mark(90'000);
    std::filesystem::copy_file(path, path + ".crash");
  }
  FileStoreOptions options;
  options.log = [](std::string_view) {};
  auto crashed = FileStore::open(path + ".crash", options);
  EXPECT_GE(take(*crashed, "n", "B"), 90'000u);
  crashed.reset();
  FileStoreOptions read_only;
  read_only.read_only = true;
  EXPECT_THROW(FileStore::open(path, read_only)->raise_fence_mark(100'000), InvalidArgument);
}

TEST_F(FileStoreTest, CheckAcceptsKeysThatMoveBetweenObjectsInOneCommit) {
  {
    auto db = open_db();
    Oid a = db->new_oids(3);
    Oid b(a.value() + 1);
    Oid c(a.value() + 2);
    put(*db, a, Value(1), "T", "k");
    put(*db, b, Value(1), "T", "j");
    CommitRequest swap;  // a and b trade keys; c takes a key that a gives up later in order
    swap.writes.push_back(WriteOp{c, "T", "k", encode(Value(3))});
    swap.writes.push_back(WriteOp{a, "T", "x", encode(Value(1))});
    swap.writes.push_back(WriteOp{b, "T", "j2", encode(Value(1))});
    db->commit(swap);
    CommitRequest back;
    back.deletes.push_back(c);
    back.writes.push_back(WriteOp{a, "T", "j", encode(Value(1))});
    back.writes.push_back(WriteOp{b, "T", "k", encode(Value(1))});
    db->commit(back);
  }
  CheckReport report = check_file(path);
  EXPECT_TRUE(report.ok) << ::testing::PrintToString(report.problems);
}

// A frame with valid checksums, as a hand-made or foreign writer could append it.
std::string frame(logfmt::TxnKind kind, std::uint64_t csn, std::uint32_t count, std::string body) {
  std::string out = logfmt::encode_txn_header({kind, body.size(), csn, count});
  out += body;
  logfmt::put_u64(out, checksum64(body));
  return out;
}

// check passed files that break the format's own rules, whose checksums were all good: a key
// held by two live objects of one type (whose dump restore then refused), an object recorded
// twice in one commit, and marks with a CSN.
TEST_F(FileStoreTest, CheckFindsFramesThatBreakTheFormatsRules) {
  using logfmt::RecordOp;
  using logfmt::TxnKind;
  Oid a;
  std::uint64_t csn = 0;
  {
    auto db = open_db();
    a = db->new_oids(2);
    csn = put(*db, a, Value(1), "T", "k");
  }
  EXPECT_TRUE(check_file(path).ok);
  std::string clean = read_file(path);
  Oid b(a.value() + 1);
  auto record = [](Oid oid, std::uint64_t version, std::string_view key) {
    std::string out;
    logfmt::append_record(out, oid, version, RecordOp::write, "T", key, encode(Value(2)));
    return out;
  };
  struct Case {
    std::string problem;
    std::string appended;
  };
  std::vector<Case> cases = {
      {"both hold key \"k\"", frame(TxnKind::commit, csn + 1, 1, record(b, csn + 1, "k"))},
      {"records object " + std::to_string(a.value()) + " twice",
       frame(TxnKind::commit, csn + 1, 2, record(a, csn + 1, "k") + record(a, csn + 1, "j"))},
      {"malformed oid frame",
       [] {
         std::string body;
         logfmt::put_u64(body, 10'000);
         return frame(TxnKind::oids, 7, 0, body);
       }()},
      {"malformed fence frame",
       [] {
         std::string body;
         logfmt::put_u64(body, 10'000);
         return frame(TxnKind::fences, 7, 0, body);
       }()},
  };
  for (const Case& c : cases) {
    write_file(path, clean + c.appended);
    CheckReport report = check_file(path);
    EXPECT_FALSE(report.ok) << c.problem;
    bool named = std::any_of(report.problems.begin(), report.problems.end(),
                             [&](auto& p) { return p.find(c.problem) != std::string::npos; });
    EXPECT_TRUE(named) << c.problem << ": " << ::testing::PrintToString(report.problems);
  }
}

TEST(FsyncPolicy, ParsesAndPrints) {
  for (auto p : {FsyncPolicy::always, FsyncPolicy::batch, FsyncPolicy::never}) {
    EXPECT_EQ(parse_fsync_policy(to_string(p)), p);
  }
  EXPECT_THROW(parse_fsync_policy("sometimes"), InvalidArgument);
}

}  // namespace
}  // namespace cairn::testing
