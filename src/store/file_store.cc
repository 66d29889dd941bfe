// FileStore (include/cairn/file_store.h): the log, its replay, group commit and online pack.
//
// Concurrency. `mu_` (shared_mutex) guards the index and the CSN: loads and scans share it,
// commits take it alone while they validate, append their frame to the log buffer and update the
// index. `log_mu_` guards the log buffer and what is written and synced; it is taken inside
// `mu_` (never the other way round). Durability waits happen after `mu_` is released (policy
// batch), so that many committers wait for one fdatasync together: the first to find no sync
// running writes the whole buffer and syncs it, the others wait. Syncs are numbered: a frame
// appended while sync k runs (or before it starts) is covered by sync k+1 (or k). Waiters sleep
// on a counter bumped by each finished sync (not on a condition variable of log_mu_), so that
// those it covered return without queueing for log_mu_ again, and the first of the others to
// take it leads the next sync.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <unordered_set>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/value.h"
#include "core/checksum.h"
#include "store/file_format.h"
#include "store/file_index.h"
#include "store/file_io.h"
#include "store/file_replay.h"
#include "store/history.h"
#include "store/listeners.h"
#include "store/lock_table.h"
#include "store/store_util.h"

namespace cairn {

using namespace logfmt;  // NOLINT(google-build-using-namespace): the format is this file's topic
using fileio::Fd;

std::string_view to_string(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::always:
      return "always";
    case FsyncPolicy::batch:
      return "batch";
    case FsyncPolicy::never:
      return "never";
  }
  return "?";
}

FsyncPolicy parse_fsync_policy(std::string_view text) {
  if (text == "always") return FsyncPolicy::always;
  if (text == "batch") return FsyncPolicy::batch;
  if (text == "never") return FsyncPolicy::never;
  throw InvalidArgument(fmt::format("unknown fsync policy \"{}\" (always, batch or never)", text));
}

namespace {

constexpr std::uint64_t oid_reserve_step = 4096;
constexpr std::uint64_t fence_reserve_step = 1024;       // fencing tokens reserved per fence mark
constexpr std::size_t never_flush_bytes = 1 << 20;       // policy never: write() every 1 MiB
constexpr std::uint64_t snapshot_frame_bytes = 8 << 20;  // pack writes frames of this size
constexpr std::uint64_t max_frame_body = std::uint64_t{1} << 40;
constexpr std::uint64_t max_csn = std::uint64_t{1} << 62;  // beyond any real history

// Address space reserved for the read mapping of a log of `size` bytes: room to grow.
std::uint64_t map_reserve(std::uint64_t size) {
  return std::max<std::uint64_t>(std::uint64_t{64} << 30, size * 2);
}

bool all_zero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

// ---------------------------------------------------------------------------------------------
// Replay: reads the log into a FileIndex.

// A torn frame is one whose write did not complete: the file ends inside it, or (on a disk that
// lost some sectors of it) it fails its checksum and nothing but zeros follows it and part of it
// is zeros too. Anything else that fails a check is corruption.
bool looks_torn(std::string_view frame, std::string_view after) {
  if (!all_zero(after)) return false;
  if (frame.size() >= txn_trailer_size && all_zero(frame.substr(frame.size() - txn_trailer_size))) {
    return true;
  }
  for (std::size_t i = 512; i + 512 <= frame.size(); i += 512) {
    if (all_zero(frame.substr(i, 512))) return true;
  }
  return false;
}

class Replayer {
 public:
  // check = true: collect problems and go on where possible instead of throwing Corruption.
  Replayer(std::string_view file, const std::string& path, FileIndex& index, bool check,
           std::uint64_t from, const ReplayResult& start, std::uint64_t durable_end)
      : file_(file),
        path_(path),
        index_(index),
        check_(check),
        from_(from),
        durable_end_(durable_end) {
    result_.csn = start.csn;
    result_.next_oid = start.next_oid;
    result_.fence_mark = start.fence_mark;
    result_.transactions = start.transactions;
  }

  ReplayResult run() {
    std::uint64_t pos = from_;
    while (pos < file_.size()) {
      std::string_view rest = file_.substr(pos);
      if (all_zero(rest.substr(0, std::min(rest.size(), txn_header_size)))) {
        // The end of the log, followed by space the store preallocated (zeros).
        if (!all_zero(rest)) {
          auto bad = pos + static_cast<std::uint64_t>(std::find_if(rest.begin(), rest.end(),
                                                                   [](char c) { return c != 0; }) -
                                                      rest.begin());
          damage(pos,
                 fmt::format("the log ends at offset {} but bytes follow at offset {}", pos, bad));
        }
        break;
      }
      if (rest.size() < txn_header_size) {
        torn(pos, rest.size());
        break;
      }
      std::optional<TxnHeader> header = decode_txn_header(rest);
      if (!header) {
        if (all_zero(rest.substr(txn_header_size))) {
          torn(pos, txn_header_size);
        } else {
          damage(pos, fmt::format("bad transaction header at offset {}", pos));
        }
        break;
      }
      if (header->body_length > max_frame_body ||
          txn_header_size + header->body_length + txn_trailer_size > rest.size()) {
        torn(pos, rest.size());  // the file ends inside this frame
        break;
      }
      std::size_t total = txn_header_size + header->body_length + txn_trailer_size;
      std::string_view frame = rest.substr(0, total);
      std::string_view body = frame.substr(txn_header_size, header->body_length);
      if (get_u64(frame.data() + txn_header_size + header->body_length) != checksum64(body)) {
        if (looks_torn(frame, rest.substr(total))) {
          torn(pos, total);
          break;
        }
        if (damage(pos, fmt::format("transaction checksum mismatch at offset {}", pos))) break;
        pos += total;  // check mode: the header is sound, so the next frame can be found
        continue;
      }
      apply(pos, *header, body);
      pos += total;
    }
    result_.end = stopped_at_ != 0 ? stopped_at_ : std::min<std::uint64_t>(pos, file_.size());
    if (result_.torn_bytes != 0) result_.end = result_.torn_offset;
    // Everything before the durable end was synced whole: a log that ends (or tears) before
    // it lost acknowledged commits — the file was truncated or overwritten.
    if (result_.end < durable_end_ && stopped_at_ == 0) {
      if (result_.torn_bytes != 0) {
        corrupt(result_.end,
                fmt::format("the transaction at offset {} ({} bytes) is incomplete, though it "
                            "was written before offset {} that was recorded as durable: the "
                            "file lost bytes it had synced",
                            result_.end, result_.torn_bytes, durable_end_));
      } else {
        corrupt(result_.end, fmt::format("the log ends at offset {}, before offset {} that was "
                                         "recorded as durable",
                                         result_.end, durable_end_));
      }
    }
    return std::move(result_);
  }

 private:
  void torn(std::uint64_t pos, std::uint64_t bytes) {
    result_.torn_offset = pos;
    result_.torn_bytes = bytes;
  }

  // Damage at `pos`: past the durable end it is what a crash left of writes never synced (the
  // disk may store the pages of one write in any order), a torn tail to cut; before it, the
  // bytes were on disk and changed since: corruption. Returns whether it was a torn tail.
  bool damage(std::uint64_t pos, const std::string& what) {
    if (pos >= durable_end_) {
      std::string_view rest = file_.substr(pos);
      auto last = rest.find_last_not_of('\0');
      torn(pos, last == std::string_view::npos ? rest.size() : last + 1);
      return true;
    }
    corrupt(pos, what);
    return false;
  }

  void corrupt(std::uint64_t pos, const std::string& what) {
    if (!check_) throw Corruption(fmt::format("{}: {}", path_, what));
    result_.problems.push_back(what);
    if (stopped_at_ == 0) stopped_at_ = pos;
  }

  void apply(std::uint64_t pos, const TxnHeader& header, std::string_view body) {
    std::uint64_t body_offset = pos + txn_header_size;
    if (header.kind == TxnKind::checkpoint) {
      std::uint64_t end = body_offset + body.size() + txn_trailer_size;
      result_.checkpoints.emplace_back(pos, end);
      FileIndex scratch;
      if (check_ && !scratch.decode_checkpoint(body, header.count)) {
        corrupt(pos, fmt::format("checkpoint at offset {} does not decode", pos));
      }
      return;
    }
    ++result_.transactions;
    if (header.kind == TxnKind::oids) {
      if (header.count != 0 || header.csn != 0 || body.size() != 8) {
        corrupt(pos, fmt::format("malformed oid frame at offset {}", pos));
        return;
      }
      std::uint64_t mark = get_u64(body.data());
      if (mark > file_store_max_oid) {
        corrupt(pos, fmt::format("oid mark at offset {} is past the largest oid", pos));
        return;
      }
      result_.next_oid = std::max(result_.next_oid, mark);
      return;
    }
    if (header.kind == TxnKind::fences) {
      if (header.count != 0 || header.csn != 0 || body.size() != 8) {
        corrupt(pos, fmt::format("malformed fence frame at offset {}", pos));
        return;
      }
      std::uint64_t mark = get_u64(body.data());
      if (mark == 0 || mark > max_fence_mark) {
        corrupt(pos, fmt::format("fence mark {} at offset {} is out of range", mark, pos));
        return;
      }
      result_.fence_mark = std::max(result_.fence_mark, mark);
      return;
    }
    if (header.csn >= max_csn) {
      corrupt(pos, fmt::format("transaction at offset {} has CSN {}, past the largest", pos,
                               header.csn));
      return;
    }
    if (header.kind == TxnKind::commit && header.csn <= result_.csn) {
      corrupt(pos, fmt::format("transaction at offset {} has CSN {} after CSN {}", pos, header.csn,
                               result_.csn));
      return;
    }
    std::size_t at = 0;
    // check: the records of this frame, to look for an oid written twice and a key that two
    // live objects of one type hold once it is applied.
    std::vector<std::pair<RecordView, std::optional<Oid>>> records;  // with the key's holder then
    for (std::uint32_t i = 0; i < header.count; ++i) {
      std::optional<RecordView> r = decode_record(body.substr(at));
      if (!r) {
        corrupt(body_offset + at,
                fmt::format("bad object record at offset {} (transaction at offset {})",
                            body_offset + at, pos));
        return;
      }
      // Every oid but the root was handed out after an oid mark that covers it.
      if ((header.kind == TxnKind::commit && r->version != header.csn) ||
          (header.kind == TxnKind::snapshot && (r->version == 0 || r->version > header.csn)) ||
          (!r->oid.is_root() && r->oid.value() >= result_.next_oid)) {
        corrupt(body_offset + at,
                fmt::format("object record at offset {} has oid {} version {} "
                            "in a transaction of CSN {}",
                            body_offset + at, r->oid.value(), r->version, header.csn));
        return;
      }
      if (check_) {
        std::optional<Oid> holder;
        if (r->op == RecordOp::write && !r->key.empty())
          holder = index_.key_holder(r->type, r->key);
        records.emplace_back(*r, holder);
      }
      if (r->op == RecordOp::write) {
        index_.put(r->oid, body_offset + at, static_cast<std::uint32_t>(r->size), r->version,
                   r->type, r->key);
      } else {
        index_.remove(r->oid);
      }
      ++result_.records;
      at += r->size;
    }
    if (check_) check_frame(pos, records);
    if (at != body.size()) {
      corrupt(pos, fmt::format("transaction at offset {} holds {} bytes after its records", pos,
                               body.size() - at));
      return;
    }
    result_.csn = std::max(result_.csn, header.csn);
  }

  // What check finds wrong in a frame's records that replay alone would take as it comes: an
  // object recorded twice (a commit names each oid once), and a key left held by two objects
  // (the one a record gives it, and the one that held it before or holds it now).
  void check_frame(std::uint64_t pos,
                   const std::vector<std::pair<RecordView, std::optional<Oid>>>& records) {
    std::vector<Oid> oids;
    oids.reserve(records.size());
    for (const auto& [r, before] : records)
      oids.push_back(r.oid);
    std::sort(oids.begin(), oids.end());
    auto twice = std::adjacent_find(oids.begin(), oids.end());
    if (twice != oids.end()) {
      corrupt(pos,
              fmt::format("transaction at offset {} records object {} twice", pos, twice->value()));
    }
    auto holds = [&](Oid oid, const RecordView& r) {
      const IndexEntry* live = index_.find(oid);
      return live != nullptr && index_.type_name(live->type) == r.type && index_.has_key(oid) &&
             index_.key_of(oid) == r.key;
    };
    for (const auto& [r, before] : records) {
      if (r.op != RecordOp::write || r.key.empty() || !holds(r.oid, r)) continue;
      for (std::optional<Oid> other : {before, index_.key_holder(r.type, r.key)}) {
        if (other && *other != r.oid && holds(*other, r)) {
          corrupt(pos, fmt::format("after the transaction at offset {}, objects {} and {} of "
                                   "type \"{}\" both hold key \"{}\"",
                                   pos, std::min(r.oid, *other).value(),
                                   std::max(r.oid, *other).value(), r.type, r.key));
          return;
        }
      }
    }
  }

  std::string_view file_;
  const std::string& path_;
  FileIndex& index_;
  bool check_;
  std::uint64_t from_;
  std::uint64_t durable_end_;
  std::uint64_t stopped_at_ = 0;
  ReplayResult result_;
};

// ---------------------------------------------------------------------------------------------
// The lock file PATH.lock: flock'd exclusively by the one writer (shared by read-only openers),
// holding the writer's pid so that a second opener can say who has the database.

class LockFile {
 public:
  LockFile(const std::string& db_path, bool exclusive) : path_(db_path + ".lock") {
    // Never through a symbolic link: the pid written below would go into whatever file it names.
    // O_NONBLOCK: a FIFO left there must not hang the open (it is refused below).
    constexpr int flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | flags, 0644);
    if (fd >= 0) {
      created_ = true;
    } else if (errno == EEXIST) {
      fd = ::open(path_.c_str(), O_RDWR | O_CREAT | flags, 0644);
    }
    if (fd < 0 && !exclusive && (errno == EACCES || errno == EROFS || errno == EPERM)) {
      // A reader in a directory it cannot write: lock the lock file if a writer made one; if
      // there is none, no writer can be at work there either.
      fd = ::open(path_.c_str(), O_RDONLY | flags);
      if (fd < 0 && errno == ENOENT) return;
    }
    if (fd < 0 && errno == ENOENT) {
      // The directory is missing: say so of the database, not of a file the user never named.
      throw IoError(fmt::format("cannot open {}: its directory does not exist", db_path));
    }
    if (fd < 0 && errno == ELOOP) {
      throw IoError(
          fmt::format("cannot open lock file {}: it is a symbolic link, which cairn "
                      "never makes; remove it",
                      path_));
    }
    if (fd < 0) fileio::throw_errno("cannot open lock file", path_);
    fd_ = Fd(fd);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) fileio::throw_errno("cannot stat", path_);
    if (!S_ISREG(st.st_mode)) {
      throw IoError(fmt::format("cannot use {} as the lock file: it is not a regular file", path_));
    }
    // A lock file with other names (a copy made with hard links) is locked all the same, but its
    // contents are left alone: they are the other names' too.
    bool writable = st.st_nlink == 1;
    if (::flock(fd_.get(), (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) fileio::throw_errno("cannot lock", path_);
      char buf[32] = {};
      ssize_t n = ::pread(fd_.get(), buf, sizeof buf - 1, 0);
      std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
        pid.pop_back();
      // Only a pid: a lock file with other names may hold anything.
      if (!std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; }))
        pid.clear();
      throw Busy(fmt::format("{}: database is in use by pid {}", db_path,
                             pid.empty() ? std::string("(unknown)") : pid));
    }
    if (exclusive && writable) {
      std::string pid = fmt::format("{}\n", ::getpid());
      fileio::truncate_file(fd_.get(), 0, path_);
      fileio::pwrite_all(fd_.get(), pid, 0, path_);
    }
  }

  // After the file turned out not to be a database: removes the lock file if this opener made
  // it and nobody else holds it, so that pointing cairn at some other file leaves nothing
  // beside it. (One who opened it meanwhile and locks it after the unlink holds a lock on a
  // name-less file; the flock on the database file itself still keeps writers apart.)
  void remove_if_made_here() noexcept {
    if (!created_ || !fd_) return;
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) return;
    ::unlink(path_.c_str());
  }

 private:
  std::string path_;
  Fd fd_;
  bool created_ = false;  // by this opener
};

// ---------------------------------------------------------------------------------------------

class FileStoreImpl final : public FileStore {
 public:
  FileStoreImpl(std::string path, FileStoreOptions options);
  ~FileStoreImpl() override;

  LoadResult load(std::span<const Oid> oids) override;
  std::uint64_t commit(const CommitRequest& request) override;
  bool commit_async(const CommitRequest& request, CommitCallback done) override;
  Changes changes_since(std::uint64_t csn) override {
    std::shared_lock lk(mu_);
    return history_.since(csn, csn_);
  }
  const std::atomic<std::uint64_t>* csn_watch() const override { return &csn_; }
  Subscription subscribe(CommitListener listener) override {
    return listeners_.add(std::move(listener));
  }
  Oid new_oids(std::uint32_t count) override;
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override;
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override;
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override {
    std::shared_lock lk(mu_);
    return index_.key_holder(type, key);
  }
  std::optional<std::uint64_t> lock(const LockRequest& request) override {
    check_usable();
    if (options_.read_only) {
      // Its tokens could not be recorded, so a later writer could hand them out again.
      throw InvalidArgument(path_ + " is open read-only: it cannot hand out fencing tokens");
    }
    return locks_.lock(request);
  }
  bool unlock(std::string_view name, std::string_view owner) override {
    return locks_.unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return locks_.renew(name, owner, ttl);
  }
  void raise_fence_mark(std::uint64_t mark) override;
  using FileStore::pack;
  PackStats pack(const PackProgress& progress) override;
  FileStoreInfo info() override;
  std::vector<Oid> live_oids(Oid from, std::size_t limit) override {
    std::vector<Oid> out;
    if (limit == 0) return out;
    std::shared_lock lk(mu_);
    index_.scan_oids(from, [&](Oid oid) {
      out.push_back(oid);
      return out.size() < limit;
    });
    return out;
  }

 private:
  // Where the log stands; guarded by log_mu_.
  std::uint64_t log_end() const { return buffer_start_ + buffer_.size(); }
  // Appends a frame to the log buffer; returns its offset. log_mu_ held.
  std::uint64_t append_frame(std::string frame);
  // Writes the buffer to the file (growing the preallocated space first). log_mu_ held.
  void write_buffer();
  // Grows the preallocated space to cover `end` and more, or as far as the disk allows.
  void preallocate(std::uint64_t end);
  // The number of the sync that will cover a frame appended now. log_mu_ held.
  std::uint64_t covering_sync() const { return started_ + 1; }
  // Returns once sync number `sync` has completed.
  void wait_durable(std::uint64_t sync);
  // Reads `length` bytes at `offset` of the log, buffered or not. mu_ held (shared or not).
  void read_into(std::uint64_t offset, std::uint32_t length, char* out);
  // Reads and verifies the record of a live object. mu_ held.
  RecordView read_record(Oid oid, const IndexEntry& entry, std::string& storage);
  void wake_all();  // log_mu_ held
  // Records in a sync slot that the log is durable up to `end` (log_mu_ held). Not synced
  // here: the next fdatasync carries it; until then the previous slot stands.
  void record_durable(std::uint64_t end);
  void check_usable() const {
    if (failed_.load()) {
      throw IoError(path_ + ": a write or fdatasync failed earlier; the database must be reopened");
    }
  }
  // Appends an oid mark; returns the sync that will cover it.
  std::uint64_t append_oid_mark(std::uint64_t next);
  // For locks_ (which calls it with its own mutex held, so that tokens are handed out in the
  // order locks are taken): the next fencing token under the durable fence mark; or none if
  // they are used up, or fence_mu_ is busy (the lock table then calls reserve_fence_tokens
  // without its own mutex, and asks again).
  std::optional<std::uint64_t> next_fence_token();
  // Appends a fence mark fence_reserve_step past the next token and waits until it is durable,
  // unless tokens are still at hand. Throws IoError if the tokens are exhausted.
  void reserve_fence_tokens();
  // Appends the fence mark `mark` and returns once it is durable. fence_mu_ held.
  void write_fence_mark(std::uint64_t mark);
  // Rewrites the file header as version 2, synced, before the first fence mark. log_mu_ held.
  void upgrade_header_for_fences();
  // Loads the newest checkpoint, if a slot names one, and replays the log after it.
  ReplayResult open_log(std::string_view file);
  // Appends a checkpoint of the index and points a slot at it, both synced.
  void write_checkpoint();
  void maybe_checkpoint();
  void log_line(std::string_view line) const {
    if (options_.log) {
      options_.log(line);
    } else {
      std::cerr << "cairn: " << line << "\n";
    }
  }

  const std::string path_;
  const FileStoreOptions options_;
  FsyncPolicy policy_ = FsyncPolicy::batch;
  std::optional<LockFile> lock_file_;  // taken once the file is known to exist (or may be made)
  Fd fd_;
  FileHeader header_;

  mutable std::shared_mutex mu_;
  FileIndex index_;
  // Written under mu_ (exclusive); read under it, or without it through csn_watch().
  std::atomic<std::uint64_t> csn_{0};
  std::atomic<std::uint64_t> transactions_{0};  // frames replay counts (commits, marks, ...)
  CommitHistory history_;
  std::uint64_t torn_offset_ = 0;
  std::uint64_t torn_bytes_ = 0;
  std::uint64_t replay_from_ = log_start;  // where open() began replaying
  std::uint64_t replayed_bytes_ = 0;

  // Index checkpoints (docs/file-format.md §2.8); checkpoint_mu_ is taken before alloc_mu_.
  std::mutex checkpoint_mu_;
  std::uint64_t checkpoint_sequence_ = 0;                 // of the newest slot written or read
  std::atomic<std::uint64_t> checkpoint_end_{log_start};  // log end the newest one covers
  std::uint64_t checkpoint_offset_ = 0;

  std::mutex alloc_mu_;
  std::atomic<std::uint64_t> next_oid_{1};
  std::atomic<std::uint64_t> reserved_oid_{1};  // oids below it are in a durable oid mark
  std::uint64_t marked_oid_ = 1;                // the highest oid mark appended to the log; log_mu_
  std::uint64_t last_commit_sync_ = 0;  // the sync covering the newest commit frame; log_mu_
  std::uint64_t sync_sequence_ = 0;     // of the newest sync slot; log_mu_
  std::uint64_t opened_durable_end_ = log_start;  // what the sync slots said at open
  std::uint64_t recorded_end_ = log_start;        // the newest sync slot's end; log_mu_

  // Fencing tokens: one counter for every lock name, so that each name's tokens increase.
  std::mutex fence_mu_;  // before log_mu_; only tried inside locks_'s mutex (next_fence_token)
  std::uint64_t next_fence_ = 1;      // the next token; fence_mu_
  std::uint64_t reserved_fence_ = 1;  // tokens below it are in a durable fence mark; fence_mu_
  std::uint64_t marked_fence_ = 1;    // the highest fence mark appended to the log; log_mu_

  std::mutex log_mu_;
  std::condition_variable log_cv_;  // a sync finished (pack waits for this)
  // Bumped (log_mu_ held) whenever a sync completes or the store fails. Committers waiting for
  // a running sync wait on it without log_mu_, and return without taking it again once
  // `completed_` covers them: a round's committers, woken together, do not queue for the lock.
  // (32 bits: the size the standard library waits on with a bare futex.)
  std::atomic<std::uint32_t> sync_events_{0};
  std::condition_variable gather_cv_;  // a commit reached the log while a leader gathers
  bool gathering_ = false;
  int gather_target_ = 0;  // while gathering: how many commit frames the leader waits for
  std::chrono::steady_clock::duration last_sync_{};  // how long the last fdatasync took
  std::atomic<int> in_commit_{0};                    // threads inside commit() (policy batch)
  int round_peak_ = 0;              // the most of them at once since the last sync began
  int frames_waiting_ = 0;          // commit frames appended since the last sync began
  std::string buffer_;              // frames not yet written
  std::uint64_t buffer_start_ = 0;  // file offset of buffer_[0] (= bytes written)
  // Loads read written bytes through a shared mapping of the file instead of a pread each (as
  // LMDB does): `written_` (= buffer_start_, readable without log_mu_) bounds what may be read
  // there. The mapping reserves address space well past the file; reads past it use pread.
  std::atomic<std::uint64_t> written_{0};
  // log_end(), readable without log_mu_ (may lag a concurrent append): for cheap checks only.
  std::atomic<std::uint64_t> end_hint_{0};
  std::unique_ptr<fileio::Mapping> map_;
  std::uint64_t started_ = 0;  // syncs started
  // Syncs completed (all of them up to this one); written with log_mu_ held, read without it.
  std::atomic<std::uint64_t> completed_{0};
  std::uint64_t allocated_ = 0;  // the file's size, including preallocated zeros
  bool syncing_ = false;
  std::atomic<bool> failed_{false};

  std::mutex pack_mu_;
  ListenerRegistry listeners_;

  // A commit applied to the index and the log, not yet durable (batch and always policies).
  struct Applied {
    std::uint64_t csn = 0;
    std::uint64_t sync = 0;  // the sync that makes it durable
    std::vector<Oid> changed;
    bool empty = false;  // wrote nothing: validated its reads only
  };
  Applied apply(const CommitRequest& request);
  // commit_async(): commits waiting for their sync, in CSN order, and the thread that runs the
  // syncs for them and then calls their callbacks (started by the first such commit).
  struct AsyncCommit {
    Applied applied;
    CommitCallback done;
  };
  void async_loop();
  void stop_async();
  std::mutex async_mu_;
  std::condition_variable async_cv_;
  std::deque<AsyncCommit> async_;
  bool async_stop_ = false;
  std::thread async_thread_;
  LockTable locks_{{[this] { return next_fence_token(); }, [this] { reserve_fence_tokens(); }}};
};

FileStoreImpl::FileStoreImpl(std::string path, FileStoreOptions options)
    : path_(std::move(path)), options_(std::move(options)) {
  bool exists = fileio::database_exists(path_);
  if (!exists && (options_.read_only || !options_.create)) {
    throw IoError(fmt::format("cannot open {}: no such database", path_));
  }
  lock_file_.emplace(path_, !options_.read_only);
  if (!options_.read_only) {
    // A pack that crashed before its rename leaves its unfinished copy; the original is whole.
    std::error_code ignored;
    std::filesystem::remove(path_ + ".pack", ignored);
  }
  if (!exists) {
    // A new database appears whole or not at all: its header is written and synced under a
    // temporary name, renamed into place, and the directory synced.
    header_.created_micros =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    header_.fsync = static_cast<std::uint8_t>(options_.fsync.value_or(FsyncPolicy::batch));
    std::random_device rd;
    for (auto& b : header_.database_id)
      b = static_cast<std::uint8_t>(rd());
    std::string start = encode_file_header(header_);
    start.resize(log_start, '\0');  // and two empty checkpoint slots
    const std::string tmp_path = path_ + ".new";
    {
      // Made anew, never through a link left at PATH.new: that would write the header into
      // whatever file the link names, and rename the link into place.
      if (::unlink(tmp_path.c_str()) != 0 && errno != ENOENT) {
        fileio::throw_errno("cannot remove", tmp_path);
      }
      Fd tmp = fileio::open_file(tmp_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, "cannot create");
      fileio::pwrite_all(tmp.get(), start, 0, tmp_path);
      fileio::sync_data(tmp.get(), tmp_path);
    }
    if (::rename(tmp_path.c_str(), path_.c_str()) != 0) {
      fileio::throw_errno("cannot rename into place", tmp_path);
    }
    fileio::sync_parent_dir(path_);
  }
  fd_ = fileio::open_file(path_, options_.read_only ? O_RDONLY : O_RDWR, "cannot open");
  fileio::lock_database_file(fd_.get(), !options_.read_only, path_);
  std::uint64_t size = fileio::file_size(fd_.get(), path_);
  {
    fileio::Mapping map(fd_.get(), size, path_);
    std::string_view file = map.bytes();
    try {
      header_ = decode_file_header(file.substr(0, std::min<std::size_t>(file.size(), 64)));
    } catch (const Corruption& e) {
      lock_file_->remove_if_made_here();
      throw Corruption(fmt::format("{}: {}", path_, e.what()));  // which file, for the user
    }
    if (file.size() < log_start) {
      lock_file_->remove_if_made_here();
      throw Corruption(fmt::format("{}: {} bytes, shorter than a database's {}-byte header", path_,
                                   file.size(), log_start));
    }
    ReplayResult r = open_log(file);
    csn_.store(r.csn, std::memory_order_release);
    transactions_ = r.transactions;
    replayed_bytes_ = r.end - replay_from_;
    next_oid_ = r.next_oid;
    reserved_oid_ = r.next_oid;
    marked_oid_ = r.next_oid;
    // Every token handed out before is below the newest fence mark, which was durable first.
    next_fence_ = r.fence_mark;
    reserved_fence_ = r.fence_mark;
    marked_fence_ = r.fence_mark;
    torn_offset_ = r.torn_offset;
    torn_bytes_ = r.torn_bytes;
    buffer_start_ = r.end;
    allocated_ = size;
    if (r.torn_bytes != 0 && options_.read_only) {
      log_line(
          fmt::format("{}: ignoring {} bytes of a torn transaction at offset {} (a write that did "
                      "not complete before a crash); read-only, so the file is left as it is",
                      path_, r.torn_bytes, r.torn_offset));
    } else if (r.torn_bytes != 0) {
      log_line(
          fmt::format("{}: dropped {} bytes of a torn transaction at offset {} (a write that did "
                      "not complete before a crash)",
                      path_, r.torn_bytes, r.torn_offset));
    }
  }
  if (torn_bytes_ != 0 && !options_.read_only) {
    // Cut the torn frame off, and make the cut durable before anything is appended after it.
    fileio::truncate_file(fd_.get(), buffer_start_, path_);
    fileio::sync_data(fd_.get(), path_);
    allocated_ = buffer_start_;
  }
  if (!options_.read_only && opened_durable_end_ != buffer_start_) {
    // Make the sync slot say exactly where the durable log ends now: not past a cut (what is
    // appended there later is not yet durable), not short of frames replay found whole (they
    // are synced first).
    fileio::sync_data(fd_.get(), path_);
    std::lock_guard log_lk(log_mu_);
    record_durable(buffer_start_);
    fileio::sync_data(fd_.get(), path_);
  }
  policy_ = options_.fsync.value_or(static_cast<FsyncPolicy>(header_.fsync));
  written_ = buffer_start_;
  end_hint_ = log_end();
  map_ = std::make_unique<fileio::Mapping>(fd_.get(), map_reserve(buffer_start_), path_, true);
  history_.reset(csn_);
  listeners_.start_after(csn_);
}

ReplayResult FileStoreImpl::open_log(std::string_view file) {
  std::optional<CheckpointSlot> newest;
  for (std::size_t i = 0; i < 2; ++i) {
    std::size_t at = checkpoint_slots_offset + i * checkpoint_slot_size;
    std::optional<CheckpointSlot> slot = decode_checkpoint_slot(file.substr(at));
    if (!slot) {
      throw Corruption(
          fmt::format("{}: checkpoint slot at offset {} fails its checksum", path_, at));
    }
    if (slot->sequence != 0 && (!newest || slot->sequence > newest->sequence)) newest = slot;
  }
  if (!all_zero(file.substr(reserved_offset, log_start - reserved_offset))) {
    throw Corruption(
        fmt::format("{}: reserved bytes at offset {} are not zero", path_, reserved_offset));
  }
  std::optional<SyncSlot> synced = newest_sync_slot(file);
  if (!synced) {
    throw Corruption(fmt::format("{}: a sync slot (offset {} or {}) fails its checksum", path_,
                                 sync_slots_offset, sync_slots_offset + sync_slot_size));
  }
  sync_sequence_ = synced->sequence;
  opened_durable_end_ = synced->end;
  recorded_end_ = synced->end;
  if (!newest) return replay_log(file, path_, index_, false, synced->end);
  // The checkpoint frame was synced before its slot was written: it must be whole.
  auto bad = [&](std::string_view what) {
    return Corruption(fmt::format("{}: checkpoint at offset {} {}", path_, newest->offset, what));
  };
  if (newest->end > file.size()) throw bad("runs past the end of the file");
  std::string_view frame = file.substr(newest->offset, newest->end - newest->offset);
  std::optional<TxnHeader> header = decode_txn_header(frame);
  if (!header || header->kind != TxnKind::checkpoint ||
      txn_header_size + header->body_length + txn_trailer_size != frame.size()) {
    throw bad("is not a checkpoint frame");
  }
  std::string_view body = frame.substr(txn_header_size, header->body_length);
  if (get_u64(frame.data() + txn_header_size + body.size()) != checksum64(body)) {
    throw bad("fails its checksum");
  }
  std::optional<FileIndex::CheckpointHead> head = index_.decode_checkpoint(body, header->count);
  if (!head) throw bad("does not decode");
  checkpoint_sequence_ = newest->sequence;
  checkpoint_end_ = newest->end;
  checkpoint_offset_ = newest->offset;
  replay_from_ = newest->end;
  ReplayResult start;
  start.csn = header->csn;
  start.next_oid = head->next_oid;
  start.fence_mark = head->fence_mark;
  start.transactions = head->transactions;
  return replay_log(file, path_, index_, false, newest->end, start, synced->end);
}

void FileStoreImpl::maybe_checkpoint() {
  if (options_.checkpoint_bytes == 0 || options_.read_only) return;
  // Every commit asks; most are far from due. Answer those from the hint, without log_mu_,
  // which a round's committers would otherwise take once more each, one after another.
  std::uint64_t hint = end_hint_.load(std::memory_order_relaxed);
  std::uint64_t covered_hint = checkpoint_end_.load();
  if (hint <= covered_hint || hint - covered_hint < options_.checkpoint_bytes) return;
  auto due = [&] {
    std::lock_guard log_lk(log_mu_);
    std::uint64_t end = log_end();
    std::uint64_t covered = checkpoint_end_.load();
    return end > covered && end - covered >= options_.checkpoint_bytes;
  };
  if (!due()) return;
  std::unique_lock ck(checkpoint_mu_, std::try_to_lock);
  if (!ck.owns_lock() || !due()) return;  // another thread is writing one, or just wrote it
  try {
    write_checkpoint();
  } catch (const std::exception& e) {
    // The commit that triggered this is durable and announced: it must not fail now. The store
    // is marked failed (write_checkpoint did that) and refuses what comes next.
    log_line(fmt::format("{}: writing an index checkpoint failed: {}", path_, e.what()));
  }
}

void FileStoreImpl::write_checkpoint() {
  // No oid mark may slip in unrecorded, and no commit: the index must match the log's end.
  std::lock_guard alloc_lk(alloc_mu_);
  std::shared_lock lk(mu_);
  std::string frame(txn_header_size, '\0');
  std::uint64_t mark = 0;
  {
    std::lock_guard log_lk(log_mu_);
    mark = std::max(marked_oid_, next_oid_.load());
  }
  index_.encode_checkpoint(frame, mark, transactions_.load());

  std::unique_lock log_lk(log_mu_);
  log_cv_.wait(log_lk, [&] { return !syncing_; });
  check_usable();
  // The fence mark is read in the same hold of log_mu_ as the frame is appended: a fence mark
  // appended earlier would not be replayed after the checkpoint, so it must be in it. (A file
  // of version 1 holds no fence mark, and its checkpoints none either.)
  if (header_.version >= format_version_fences) put_u64(frame, marked_fence_);
  std::uint64_t body_length = frame.size() - txn_header_size;
  std::string header = encode_txn_header(
      {TxnKind::checkpoint, body_length, csn_, static_cast<std::uint32_t>(index_.objects())});
  std::memcpy(frame.data(), header.data(), header.size());
  put_u64(frame, checksum64(std::string_view(frame).substr(txn_header_size)));
  try {
    std::uint64_t offset = append_frame(std::move(frame));
    std::uint64_t end = log_end();
    write_buffer();
    // The checkpoint (and every frame before it) must be on disk before a slot names it...
    fileio::sync_data(fd_.get(), path_);
    CheckpointSlot slot{checkpoint_sequence_ + 1, offset, end};
    fileio::pwrite_all(fd_.get(), encode_checkpoint_slot(slot),
                       checkpoint_slots_offset + (slot.sequence % 2) * checkpoint_slot_size, path_);
    record_durable(end);
    // ... and the slot on disk before the checkpoint counts as written. Until then the other
    // slot names the previous checkpoint. (A 32-byte slot lies within one sector, whose writes
    // disks make atomic; a slot that fails its checksum makes open refuse the file.)
    fileio::sync_data(fd_.get(), path_);
    checkpoint_sequence_ = slot.sequence;
    checkpoint_offset_ = offset;
    checkpoint_end_ = end;
  } catch (...) {
    failed_ = true;
    wake_all();
    throw;
  }
}

FileStoreImpl::~FileStoreImpl() {
  stop_async();  // every commit_async() commit made durable and answered first
  if (options_.read_only || failed_.load()) return;
  try {
    // A checkpoint at close makes the next open quick, once there is enough log to matter.
    bool due = false;
    {
      std::lock_guard lk(log_mu_);
      due = options_.checkpoint_bytes != 0 &&
            log_end() - checkpoint_end_.load() >=
                std::min<std::uint64_t>(options_.checkpoint_bytes, 1 << 20);
    }
    if (due) write_checkpoint();
    std::lock_guard lk(log_mu_);
    write_buffer();
    // Give back the preallocated zeros, and make the last commits durable (policy never
    // included: a clean close loses nothing).
    fileio::truncate_file(fd_.get(), log_end(), path_);
    fileio::sync_data(fd_.get(), path_);
    // Then record that all of it is durable (and sync that), so that the next open treats any
    // damage in it as corruption. (Nothing changed: nothing to write.)
    if (recorded_end_ != log_end()) {
      record_durable(log_end());
      fileio::sync_data(fd_.get(), path_);
    }
  } catch (const std::exception& e) {
    std::cerr << "cairn: closing " << path_ << ": " << e.what() << "\n";
  }
}

std::uint64_t FileStoreImpl::append_frame(std::string frame) {
  std::uint64_t offset = log_end();
  if (buffer_.empty()) {
    buffer_ = std::move(frame);
  } else {
    buffer_.append(frame);
  }
  end_hint_.store(log_end(), std::memory_order_relaxed);
  return offset;
}

void FileStoreImpl::preallocate(std::uint64_t end) {
  // Preallocate by writing zeros, so that the appends that follow overwrite blocks the file
  // already has and fdatasync need not flush a new file size with each commit.
  std::uint64_t grow = std::clamp<std::uint64_t>(allocated_ / 4, 1 << 20, 64 << 20);
  std::uint64_t target = (std::max(end, allocated_ + grow) + 4095) / 4096 * 4096;
  std::string zeros(1 << 20, '\0');
  try {
    for (std::uint64_t at = allocated_; at < target; at += zeros.size()) {
      std::uint64_t n = std::min<std::uint64_t>(zeros.size(), target - at);
      fileio::pwrite_all(fd_.get(), std::string_view(zeros).substr(0, n), at, path_);
    }
    allocated_ = target;
  } catch (const IoError&) {
    // Only an optimization, and nothing of the log is written yet: on a disk too full for the
    // zeros (or a file size limit) the frames may still fit. What was written of the zeros stays
    // allocated; the frames are written as usual, and fail the store only if they do not fit.
    allocated_ = std::max(allocated_, fileio::file_size(fd_.get(), path_));
  }
}

void FileStoreImpl::write_buffer() {
  if (buffer_.empty()) return;
  std::uint64_t end = log_end();
  try {
    if (policy_ != FsyncPolicy::never && end > allocated_) preallocate(end);
    fileio::pwrite_all(fd_.get(), buffer_, buffer_start_, path_);
  } catch (...) {
    failed_ = true;
    wake_all();
    throw;
  }
  buffer_start_ = end;
  written_ = end;
  allocated_ = std::max(allocated_, end);
  buffer_.clear();
}

void FileStoreImpl::wait_durable(std::uint64_t sync) {
  std::unique_lock lk(log_mu_);
  while (completed_.load() < sync) {
    check_usable();
    if (syncing_) {
      // Another thread leads. Every waiter wakes when its sync completes; one of those left
      // uncovered (they came during it) finds no sync running and leads the next.
      std::uint32_t seen = sync_events_.load();
      lk.unlock();
      sync_events_.wait(seen);
      if (completed_.load() >= sync) return;
      lk.lock();
      continue;
    }
    // Lead: write every frame buffered so far and cover them all with one fdatasync. First, if
    // more commits were in flight together during the last round than have reached the log,
    // give the others up to one sync's time to join: one fdatasync for all of them beats one
    // each (PostgreSQL's commit_delay, made adaptive).
    syncing_ = true;
    int joiners = std::exchange(round_peak_, in_commit_.load());
    if (frames_waiting_ < joiners) {
      auto deadline = std::chrono::steady_clock::now() + 2 * last_sync_;
      gathering_ = true;
      gather_target_ = joiners;
      while (frames_waiting_ < joiners && !failed_.load()) {
        if (gather_cv_.wait_until(lk, deadline) == std::cv_status::timeout) break;
      }
      gathering_ = false;
    }
    frames_waiting_ = 0;
    std::uint64_t number = ++started_;
    try {
      write_buffer();
    } catch (...) {
      syncing_ = false;
      throw;
    }
    std::uint64_t synced_end = buffer_start_;  // what this sync makes durable
    lk.unlock();
    // The commit-acknowledging fdatasync: once it returns, every frame written before it is on
    // disk (the file's size too, the first time after a preallocation).
    auto sync_start = std::chrono::steady_clock::now();
    int rc = ::fdatasync(fd_.get());
    int err = errno;
    auto took = std::chrono::steady_clock::now() - sync_start;
    lk.lock();
    last_sync_ = std::min<std::chrono::steady_clock::duration>(took, std::chrono::milliseconds(1));
    syncing_ = false;
    if (rc != 0) {
      // After a failed fdatasync the kernel may have dropped the dirty pages: nothing written
      // since the last good sync can be trusted, so the store refuses all further work.
      failed_ = true;
      wake_all();
      throw IoError(fmt::format("fdatasync failed on {}: {}", path_, std::strerror(err)));
    }
    completed_ = std::max(completed_.load(), number);
    try {
      record_durable(synced_end);
    } catch (...) {
      failed_ = true;
      wake_all();
      throw;
    }
    ++sync_events_;
    // The leader's own frame is covered (number >= sync), so it is done. Wake the others after
    // letting go of log_mu_, which those not covered (committers of the next sync, whose frames
    // may already have been written by pack or a checkpoint, so the buffer says nothing) take
    // to elect the next leader.
    lk.unlock();
    sync_events_.notify_all();
    log_cv_.notify_all();
    return;
  }
}

void FileStoreImpl::record_durable(std::uint64_t end) {
  SyncSlot slot{++sync_sequence_, end};
  recorded_end_ = end;
  fileio::pwrite_all(fd_.get(), encode_sync_slot(slot),
                     sync_slots_offset + (slot.sequence % 2) * sync_slot_size, path_);
}

void FileStoreImpl::wake_all() {
  ++sync_events_;
  sync_events_.notify_all();
  log_cv_.notify_all();
}

void FileStoreImpl::read_into(std::uint64_t offset, std::uint32_t length, char* out) {
  if (map_ && offset + length <= written_.load() && offset + length <= map_->size()) {
    std::memcpy(out, map_->data() + offset, length);
    return;
  }
  {
    std::lock_guard lk(log_mu_);
    if (offset >= buffer_start_) {
      std::uint64_t rel = offset - buffer_start_;
      if (rel + length > buffer_.size()) {
        throw Corruption(fmt::format("{}: record at offset {} runs past the log", path_, offset));
      }
      std::memcpy(out, buffer_.data() + rel, length);
      return;
    }
  }
  // Below buffer_start_ the log is written and never changes while mu_ is held.
  fileio::pread_all(fd_.get(), out, length, offset, path_);
}

RecordView FileStoreImpl::read_record(Oid oid, const IndexEntry& entry, std::string& storage) {
  storage.resize(entry.length);
  read_into(entry.offset, entry.length, storage.data());
  std::optional<RecordView> r = decode_record(storage);
  if (!r || r->oid != oid || r->version != entry.version || r->size != entry.length) {
    throw Corruption(fmt::format("{}: object {} fails its checksum at offset {}", path_,
                                 oid.value(), entry.offset));
  }
  return *r;
}

LoadResult FileStoreImpl::load(std::span<const Oid> oids) {
  check_usable();
  LoadResult result;
  result.objects.reserve(oids.size());
  std::shared_lock lk(mu_);
  result.csn = csn_;
  for (Oid oid : oids) {
    StoredObject& out = result.objects.emplace_back();
    out.oid = oid;
    const IndexEntry* e = index_.find(oid);
    if (e == nullptr) continue;
    // Read the record into out.data itself, then cut it down to the data: one allocation.
    RecordView r = read_record(oid, *e, out.data);
    out.version = e->version;
    out.type = r.type;
    out.key = r.key;
    auto data_at = static_cast<std::size_t>(r.data.data() - out.data.data());
    std::size_t data_size = r.data.size();
    out.data.erase(0, data_at);
    out.data.resize(data_size);
  }
  return result;
}

std::uint64_t FileStoreImpl::commit(const CommitRequest& request) {
  // Counted while inside commit(), so that a sync leader knows how many may join it.
  struct InCommit {
    std::atomic<int>* count;
    explicit InCommit(std::atomic<int>* c) : count(c) {
      if (count) ++*count;
    }
    ~InCommit() {
      if (count) --*count;
    }
  } in_commit(policy_ == FsyncPolicy::batch ? &in_commit_ : nullptr);
  Applied applied = apply(request);
  // What an empty commit read may be a commit not yet durable: succeed only once it is.
  if (policy_ == FsyncPolicy::batch || (applied.empty && policy_ == FsyncPolicy::always)) {
    wait_durable(applied.sync);
  }
  if (applied.empty) return applied.csn;
  listeners_.notify(applied.csn, applied.changed);
  maybe_checkpoint();
  return applied.csn;
}

bool FileStoreImpl::commit_async(const CommitRequest& request, CommitCallback done) {
  if (policy_ != FsyncPolicy::batch) return false;
  Applied applied = apply(request);
  std::lock_guard lk(async_mu_);
  if (!async_thread_.joinable()) async_thread_ = std::thread([this] { async_loop(); });
  async_.push_back(AsyncCommit{std::move(applied), std::move(done)});
  async_cv_.notify_one();
  return true;
}

void FileStoreImpl::async_loop() {
  std::unique_lock lk(async_mu_);
  for (;;) {
    async_cv_.wait(lk, [&] { return async_stop_ || !async_.empty(); });
    if (async_.empty()) return;  // stopping, and nothing left to make durable
    // One sync covers every commit queued so far (and any a thread in commit() adds).
    std::uint64_t target = async_.back().applied.sync;
    lk.unlock();
    std::exception_ptr error;
    try {
      wait_durable(target);
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    std::vector<AsyncCommit> ready;
    while (!async_.empty() && (error || async_.front().applied.sync <= target)) {
      ready.push_back(std::move(async_.front()));
      async_.pop_front();
    }
    lk.unlock();
    {
      // This round's committers (a server's clients) will commit again as soon as they have
      // their answers: the next sync gathers as many (waiting at most two sync times), as it
      // does for threads inside commit(). Gathering all of them, not three quarters as before,
      // keeps a server's clients in one group per sync instead of groups that shrink as
      // stragglers miss the gather (50 clients over loopback on 2 cores: about 50 commits
      // per sync instead of 20 to 45, and a higher rate; the loop thread, not the disk, is
      // what limits it there, and every extra sync round costs it a wakeup and a hand-off).
      std::lock_guard log_lk(log_mu_);
      round_peak_ = std::max(round_peak_, static_cast<int>(ready.size()));
    }
    for (AsyncCommit& c : ready) {
      if (!error && !c.applied.empty) listeners_.notify(c.applied.csn, c.applied.changed);
      try {
        c.done(c.applied.csn, error);
      } catch (...) {
        // The commit is made; a failing callback cannot undo it.
      }
    }
    if (!error) {
      try {
        maybe_checkpoint();
      } catch (...) {
        // Reported by the next commit: the store is marked failed.
      }
    }
    lk.lock();
  }
}

void FileStoreImpl::stop_async() {
  {
    std::lock_guard lk(async_mu_);
    async_stop_ = true;
    async_cv_.notify_all();
  }
  if (async_thread_.joinable()) async_thread_.join();
}

FileStoreImpl::Applied FileStoreImpl::apply(const CommitRequest& request) {
  check_usable();
  if (options_.read_only) throw InvalidArgument(path_ + " is open read-only");
  validate_commit_shape(request, next_oid_.load());
  std::unique_lock lk(mu_);
  // Under mu_, with the apply: the lock is held at the moment the commit takes effect.
  locks_.check_held(request.locks);
  std::vector<Oid> conflicts;
  for (const ReadCheck& r : request.reads) {
    const IndexEntry* e = index_.find(r.oid);
    if ((e == nullptr ? 0 : e->version) != r.version) conflicts.push_back(r.oid);
  }
  check_key_conflicts(
      request, [this](auto type, auto key) { return index_.key_holder(type, key); }, conflicts);
  throw_if_conflicts(std::move(conflicts));
  // An append is written as the whole new state of its blob: the log format has no append
  // record, so replay and loads stay one record per object. (Blobs are chunks of a ByteStream,
  // so this rewrites at most one chunk.) Read under mu_, which no other commit holds meanwhile.
  std::vector<WriteOp> appended;
  appended.reserve(request.appends.size());
  for (const AppendOp& a : request.appends) {
    const IndexEntry* e = index_.find(a.oid);
    std::string storage;
    std::optional<RecordView> current;
    if (e != nullptr) current = read_record(a.oid, *e, storage);
    std::string data = current ? std::string(current->data) : std::string();
    check_append(a.oid, current ? &data : nullptr, a.data.size());
    data += a.data;
    appended.push_back(
        WriteOp{a.oid, std::string(current->type), std::string(current->key), std::move(data)});
  }
  if (request.changes_nothing()) {
    Applied empty;
    empty.empty = true;
    empty.csn = csn_;
    std::lock_guard log_lk(log_mu_);
    empty.sync = last_commit_sync_;
    return empty;
  }

  // The frame: header, deletes, writes, checksum.
  std::uint64_t csn = csn_ + 1;
  std::size_t size = txn_header_size + txn_trailer_size;
  size += request.deletes.size() * record_size(0, 0, 0);
  // The request's writes, then the appends' (both are write records).
  auto for_each_write = [&](auto&& fn) {
    for (const WriteOp& w : request.writes)
      fn(w);
    for (const WriteOp& w : appended)
      fn(w);
  };
  for_each_write(
      [&](const WriteOp& w) { size += record_size(w.type.size(), w.key.size(), w.data.size()); });
  std::string frame;
  frame.reserve(size);
  frame.resize(txn_header_size);
  std::vector<std::uint64_t> offsets;  // of each write's record, from the frame's start
  offsets.reserve(request.writes.size() + appended.size());
  for (Oid oid : request.deletes)
    append_record(frame, oid, csn, RecordOp::remove, {}, {}, {});
  for_each_write([&](const WriteOp& w) {
    offsets.push_back(frame.size());
    append_record(frame, w.oid, csn, RecordOp::write, w.type, w.key, w.data);
  });
  std::uint64_t body_length = frame.size() - txn_header_size;
  auto count = static_cast<std::uint32_t>(request.deletes.size() + offsets.size());
  std::string header = encode_txn_header({TxnKind::commit, body_length, csn, count});
  std::memcpy(frame.data(), header.data(), header.size());
  put_u64(frame, checksum64(std::string_view(frame).substr(txn_header_size)));

  std::uint64_t start = 0;
  std::uint64_t sync = 0;
  {
    std::lock_guard log_lk(log_mu_);
    check_usable();
    start = append_frame(std::move(frame));
    sync = covering_sync();
    last_commit_sync_ = sync;
    if (policy_ == FsyncPolicy::batch) {
      ++frames_waiting_;
      round_peak_ = std::max(round_peak_, in_commit_.load());
      // Wake the gathering leader only once the last of those it waits for is here, not for
      // each: every futile wakeup is a context switch taken from the committers it waits for.
      if (gathering_ && frames_waiting_ >= gather_target_) gather_cv_.notify_one();
    }
    if (policy_ == FsyncPolicy::never && buffer_.size() >= never_flush_bytes && !syncing_) {
      write_buffer();
    }
  }
  std::vector<Oid> changed;
  changed.reserve(count);
  for (Oid oid : request.deletes) {
    // Reported even if it was absent: every commit with a CSN names what it touched (store.h).
    index_.remove(oid);
    changed.push_back(oid);
  }
  std::size_t i = 0;
  for_each_write([&](const WriteOp& w) {
    index_.put(w.oid, start + offsets[i++],
               static_cast<std::uint32_t>(record_size(w.type.size(), w.key.size(), w.data.size())),
               csn, w.type, w.key);
    changed.push_back(w.oid);
  });
  csn_.store(csn, std::memory_order_release);
  ++transactions_;
  history_.remember(csn, changed);
  if (policy_ == FsyncPolicy::always) wait_durable(sync);  // visible only once durable
  return Applied{csn, sync, std::move(changed), false};
}

std::uint64_t FileStoreImpl::append_oid_mark(std::uint64_t next) {
  std::lock_guard log_lk(log_mu_);
  check_usable();
  append_frame(encode_oid_mark(next));
  ++transactions_;
  marked_oid_ = std::max(marked_oid_, next);
  return covering_sync();
}

Oid FileStoreImpl::new_oids(std::uint32_t count) {
  if (count == 0) throw InvalidArgument("new_oids: count must be at least 1");
  check_usable();
  std::lock_guard lk(alloc_mu_);
  std::uint64_t first = next_oid_.load();
  std::uint64_t next = first + count;
  if (next > file_store_max_oid) throw InvalidArgument("new_oids: the oid space is exhausted");
  if (next > reserved_oid_ && !options_.read_only) {
    // Record the new high-water mark before handing the oids out, so that no oid is handed out
    // twice, even across a crash and reopen. Durable under every policy, never included (one
    // fdatasync per oid_reserve_step oids): under never, a crash may lose commits it answered,
    // but an oid handed out again would let a creation made before the crash (and committed
    // after it, a blind write) overwrite an object created since.
    std::uint64_t reserved = std::min(next + oid_reserve_step, file_store_max_oid);
    std::uint64_t sync = append_oid_mark(reserved);
    wait_durable(sync);
    reserved_oid_ = reserved;
  }
  next_oid_ = next;
  return Oid(first);
}

std::optional<std::uint64_t> FileStoreImpl::next_fence_token() {
  // Not waiting for fence_mu_: its holder may be writing a fence mark, and waiting for that
  // with the lock table's mutex held is what reserve_fence_tokens is for.
  std::unique_lock lk(fence_mu_, std::try_to_lock);
  if (!lk.owns_lock() || next_fence_ >= reserved_fence_) return std::nullopt;
  return next_fence_++;
}

void FileStoreImpl::reserve_fence_tokens() {
  std::lock_guard lk(fence_mu_);
  if (next_fence_ < reserved_fence_) return;  // another caller reserved them meanwhile
  if (next_fence_ >= max_fence_mark) throw IoError(path_ + ": fencing tokens are exhausted");
  std::uint64_t reserved = std::min(next_fence_ + fence_reserve_step, max_fence_mark);
  write_fence_mark(reserved);
  reserved_fence_ = reserved;
}

void FileStoreImpl::write_fence_mark(std::uint64_t mark) {
  std::uint64_t sync = 0;
  {
    std::lock_guard log_lk(log_mu_);
    check_usable();
    if (header_.version < format_version_fences) upgrade_header_for_fences();
    append_frame(encode_fence_mark(mark));
    ++transactions_;
    marked_fence_ = std::max(marked_fence_, mark);
    sync = covering_sync();
  }
  // The fence mark must be on disk before a token under it is handed out, under every fsync
  // policy (never included): a token in use elsewhere that a crash forgot would be handed
  // out again after the reopen, and two holders would carry the same token. One fdatasync
  // per fence_reserve_step locks; it also makes the commits buffered before it durable.
  wait_durable(sync);
}

void FileStoreImpl::raise_fence_mark(std::uint64_t mark) {
  if (options_.read_only) throw InvalidArgument(path_ + " is open read-only");
  if (mark > max_fence_mark) {
    throw InvalidArgument(
        fmt::format("fence mark {} is past the largest, {}", mark, max_fence_mark));
  }
  std::lock_guard lk(fence_mu_);
  if (next_fence_ >= mark) return;  // every token from now on is at least next_fence_
  if (mark > reserved_fence_) {
    // Reopening starts tokens at the highest fence mark: recording `mark` makes it at least
    // the next token after a reopen too.
    write_fence_mark(mark);
    reserved_fence_ = mark;
  }
  next_fence_ = mark;  // below a durable mark already, if it was not past it
}

void FileStoreImpl::upgrade_header_for_fences() {
  FileHeader upgraded = header_;
  upgraded.version = format_version_fences;
  // The header (64 bytes, one sector, so written whole or not at all) says version 2 on disk
  // before a fence mark is appended: a reader of version 1 then refuses the file instead of
  // taking the fence mark for a torn tail and cutting it and the commits after it away.
  try {
    fileio::pwrite_all(fd_.get(), encode_file_header(upgraded), 0, path_);
    fileio::sync_data(fd_.get(), path_);
  } catch (...) {
    failed_ = true;
    wake_all();
    throw;
  }
  header_ = upgraded;
}

std::vector<ScanEntry> FileStoreImpl::scan_type(std::string_view type, Oid after,
                                                std::size_t limit) {
  std::vector<ScanEntry> out;
  if (limit == 0) return out;
  std::shared_lock lk(mu_);
  index_.scan_type(type, after, [&](Oid oid) {
    out.push_back(ScanEntry{oid, std::string(index_.key_of(oid))});
    return out.size() < limit;
  });
  return out;
}

std::vector<ScanEntry> FileStoreImpl::scan_keys(std::string_view type, std::string_view prefix,
                                                std::string_view after, std::size_t limit) {
  std::vector<ScanEntry> out;
  if (limit == 0) return out;
  std::shared_lock lk(mu_);
  std::string_view from = after > prefix ? after : prefix;
  index_.scan_keys(type, from, [&](std::string_view key, Oid oid) {
    if (!key.starts_with(prefix)) return false;
    if (key > after) out.push_back(ScanEntry{oid, std::string(key)});
    return out.size() < limit;
  });
  return out;
}

FileStoreInfo FileStoreImpl::info() {
  std::shared_lock lk(mu_);
  std::lock_guard log_lk(log_mu_);
  FileStoreInfo out;
  out.path = path_;
  out.format_version = header_.version;
  out.fsync = policy_;
  out.objects = index_.objects();
  out.file_bytes = log_end();
  out.live_bytes = index_.live_bytes();
  std::uint64_t overhead = log_start + txn_header_size + txn_trailer_size;
  out.garbage_bytes =
      out.file_bytes > out.live_bytes + overhead ? out.file_bytes - out.live_bytes - overhead : 0;
  out.last_csn = csn_;
  out.next_oid = next_oid_.load();
  out.fence_mark = marked_fence_;
  out.transactions = transactions_;
  out.torn_bytes = torn_bytes_;
  out.torn_offset = torn_offset_;
  out.index_bytes = index_.memory_bytes();
  out.created_micros = header_.created_micros;
  out.checkpoint_offset = checkpoint_offset_;
  out.replayed_bytes = replayed_bytes_;
  return out;
}

// ---------------------------------------------------------------------------------------------
// pack

// Writes frames of verbatim records to a new file, sequentially.
class PackWriter {
 public:
  // `csn`: the store's CSN at the snapshot, which every frame carries so that the CSN never
  // goes back when the packed file is reopened.
  PackWriter(int fd, const std::string& path, std::uint64_t offset, std::uint64_t csn)
      : fd_(fd), path_(path), offset_(offset), csn_(csn) {}

  void add_record(std::string_view record) {
    if (!body_.empty() && body_.size() + record.size() > snapshot_frame_bytes) flush();
    body_ += record;
    ++count_;
  }
  void add_raw(std::string_view bytes) {
    flush();
    fileio::pwrite_all(fd_, bytes, offset_, path_);
    offset_ += bytes.size();
  }
  // `always`: write a frame even with no records (it still carries the CSN).
  void flush(bool always = false) {
    if (count_ == 0 && !always) return;
    std::string frame = encode_txn_header({TxnKind::snapshot, body_.size(), csn_, count_});
    frame += body_;
    put_u64(frame, checksum64(body_));
    fileio::pwrite_all(fd_, frame, offset_, path_);
    offset_ += frame.size();
    body_.clear();
    count_ = 0;
  }
  std::uint64_t offset() const { return offset_; }

 private:
  int fd_;
  const std::string& path_;
  std::uint64_t offset_;
  std::string body_;
  std::uint32_t count_ = 0;
  std::uint64_t csn_;
};

PackStats FileStoreImpl::pack(const PackProgress& progress) {
  check_usable();
  if (options_.read_only) throw InvalidArgument(path_ + " is open read-only");
  std::lock_guard pack_lk(pack_mu_);
  PackStats stats;

  // 1. A snapshot of the index, and the log written out up to it.
  struct Live {
    Oid oid;
    IndexEntry entry;
    bool root;
  };
  std::vector<Live> live;
  std::uint64_t snapshot_end = 0;
  std::uint64_t snapshot_csn = 0;
  std::uint64_t snapshot_mark = 0;   // covers every oid the snapshot can hold
  std::uint64_t snapshot_fence = 0;  // covers every fencing token handed out so far
  FileHeader snapshot_header;
  {
    std::shared_lock lk(mu_);
    snapshot_csn = csn_;
    live.reserve(index_.objects());
    index_.for_each([&](Oid oid, const IndexEntry& e) {
      bool root = oid.is_root() || e.type != 0 || index_.has_key(oid);
      live.push_back(Live{oid, e, root});
    });
    std::lock_guard log_lk(log_mu_);
    write_buffer();
    snapshot_end = log_end();
    snapshot_mark = std::max(marked_oid_, next_oid_.load());
    snapshot_fence = marked_fence_;
    snapshot_header = header_;
  }
  stats.objects_before = live.size();
  stats.bytes_before = snapshot_end;
  auto find_live = [&](Oid oid) -> Live* {
    auto it = std::lower_bound(live.begin(), live.end(), oid,
                               [](const Live& l, Oid o) { return l.oid < o; });
    return it != live.end() && it->oid == oid ? &*it : nullptr;
  };

  // 2. What the roots reach, read from the file without holding mu_: everything below
  // snapshot_end is written and stays unchanged while pack_mu_ is held.
  auto read_snapshot_record = [&](const Live& l) {
    std::string bytes(l.entry.length, '\0');
    fileio::pread_all(fd_.get(), bytes.data(), bytes.size(), l.entry.offset, path_);
    std::optional<RecordView> r = decode_record(bytes);
    if (!r || r->oid != l.oid) {
      throw Corruption(fmt::format("{}: object {} fails its checksum at offset {}", path_,
                                   l.oid.value(), l.entry.offset));
    }
    return bytes;
  };
  std::vector<char> keep(live.size(), 0);
  std::vector<std::size_t> pending;
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (live[i].root) {
      keep[i] = 1;
      pending.push_back(i);
    }
  }
  while (!pending.empty()) {
    const Live& l = live[pending.back()];
    pending.pop_back();
    std::string bytes = read_snapshot_record(l);
    for_each_ref(decode_record(bytes)->data, l.oid, [&](Oid target) {
      if (Live* t = find_live(target); t != nullptr) {
        auto i = static_cast<std::size_t>(t - live.data());
        if (!keep[i]) {
          keep[i] = 1;
          pending.push_back(i);
        }
      }
    });
  }
  std::uint64_t total = static_cast<std::uint64_t>(std::count(keep.begin(), keep.end(), 1));

  // 3. The new file: header, oid mark, the kept records in snapshot frames.
  const std::string tmp_path = path_ + ".pack";
  Fd tmp = fileio::create_replacement(fd_.get(), path_, tmp_path);
  std::unordered_set<Oid> copied;
  bool renamed = false;
  try {
    std::string start = encode_file_header(snapshot_header);
    start.resize(log_start, '\0');  // no checkpoint yet
    // The oids in use when pack began; marks written since are in the frames copied at the end.
    start += encode_oid_mark(snapshot_mark);
    // The same for fencing tokens (a file of version 1 has handed none out).
    if (snapshot_header.version >= format_version_fences)
      start += encode_fence_mark(snapshot_fence);
    fileio::pwrite_all(tmp.get(), start, 0, tmp_path);
    PackWriter writer(tmp.get(), tmp_path, start.size(), snapshot_csn);
    std::uint64_t done = 0;
    for (std::size_t i = 0; i < live.size(); ++i) {
      if (!keep[i]) continue;
      writer.add_record(read_snapshot_record(live[i]));
      copied.insert(live[i].oid);
      if (progress && (++done % 4096 == 0 || done == total)) progress(done, total);
    }
    writer.flush(true);
    // Sync and index the copied part now, while commits go on, so that the pause below is as
    // long as the tail, not the database.
    fileio::sync_data(tmp.get(), tmp_path);
    std::uint64_t copied_end = writer.offset();
    FileIndex fresh;
    ReplayResult copied_state;
    {
      fileio::Mapping map(tmp.get(), copied_end, tmp_path);
      copied_state = replay_log(map.bytes(), path_, fresh, false, copied_end);
    }

    // 4. Catch up with the commits made meanwhile, and swap, with commits held off.
    std::unique_lock lk(mu_);
    std::unique_lock log_lk(log_mu_);
    log_cv_.wait(log_lk, [&] { return !syncing_; });
    check_usable();
    write_buffer();
    std::uint64_t now_end = log_end();
    // Everything is written now (the buffer is empty), so reads go straight to the file.
    auto read_written = [&](std::uint64_t offset, std::uint64_t length) {
      std::string bytes(length, '\0');
      fileio::pread_all(fd_.get(), bytes.data(), bytes.size(), offset, path_);
      return bytes;
    };
    // The frames appended since the snapshot, but not checkpoints: their entries point into the
    // old file.
    std::string tail;
    {
      std::string raw = read_written(snapshot_end, now_end - snapshot_end);
      for (std::size_t at = 0; at < raw.size();) {
        std::optional<TxnHeader> h = decode_txn_header(std::string_view(raw).substr(at));
        if (!h)
          throw Corruption(fmt::format("{}: bad frame at offset {}", path_, snapshot_end + at));
        std::size_t frame_size = txn_header_size + h->body_length + txn_trailer_size;
        if (h->kind != TxnKind::checkpoint) tail.append(raw, at, frame_size);
        at += frame_size;
      }
    }
    // Objects the tail's commits reference that the snapshot did not reach (a reference to an
    // unreachable object written after the snapshot) are kept too, with what they reach.
    FileIndex tail_index;
    // (Replayed after a blank header and a mark covering every oid; offsets shift by `prefix`.)
    std::string prefix = std::string(log_start, '\0') + encode_oid_mark(file_store_max_oid);
    replay_log(prefix + tail, path_, tail_index, false, prefix.size() + tail.size());
    std::vector<Oid> extra;
    auto consider = [&](Oid target) {
      if (!copied.contains(target) && tail_index.find(target) == nullptr &&
          index_.find(target) != nullptr) {
        copied.insert(target);
        extra.push_back(target);
      }
    };
    tail_index.for_each([&](Oid oid, const IndexEntry& e) {
      // Offsets are into prefix + tail, which lacks the checkpoint frames of the file's tail.
      std::string_view bytes = std::string_view(tail).substr(e.offset - prefix.size(), e.length);
      std::optional<RecordView> record = decode_record(bytes);
      if (!record || record->oid != oid) {
        throw Corruption(
            fmt::format("{}: object {} in the tail fails its checksum", path_, oid.value()));
      }
      for_each_ref(record->data, oid, consider);
    });
    std::string extra_records;
    for (std::size_t i = 0; i < extra.size(); ++i) {
      const IndexEntry* e = index_.find(extra[i]);
      std::string bytes = read_written(e->offset, e->length);
      for_each_ref(decode_record(bytes)->data, extra[i], consider);
      writer.add_record(bytes);
    }
    writer.flush();
    // Marks appended before the snapshot point are not in the tail: restate the newest.
    writer.add_raw(encode_oid_mark(std::max(marked_oid_, next_oid_.load())));
    if (header_.version >= format_version_fences) writer.add_raw(encode_fence_mark(marked_fence_));
    writer.add_raw(tail);
    // A fence mark appended to the old file since the snapshot made it version 2: so is this.
    fileio::pwrite_all(tmp.get(), encode_file_header(header_), 0, tmp_path);
    std::uint64_t new_end = writer.offset();
    std::uint64_t new_sequence = sync_sequence_ + 1;
    fileio::pwrite_all(tmp.get(), encode_sync_slot({new_sequence, new_end}),
                       sync_slots_offset + (new_sequence % 2) * sync_slot_size, tmp_path);
    // Locked before its name is the database's, so that no other name for it ever finds it
    // unlocked (the old file's lock goes with its descriptor).
    fileio::lock_database_file(tmp.get(), true, tmp_path);
    // The new file must be wholly on disk before its name replaces the old one...
    fileio::sync_data(tmp.get(), tmp_path);
    if (::rename(tmp_path.c_str(), path_.c_str()) != 0) {
      fileio::throw_errno("cannot rename into place", tmp_path);
    }
    // ... and the rename itself must reach the disk before pack reports success.
    // From here on the old file is gone: a failure leaves the store unusable, not inconsistent.
    renamed = true;
    fileio::sync_parent_dir(path_);

    {
      fileio::Mapping map(tmp.get(), new_end, tmp_path);
      transactions_ =
          replay_log(map.bytes(), path_, fresh, false, copied_end, copied_state, new_end)
              .transactions;
    }
    index_ = std::move(fresh);
    map_ = std::make_unique<fileio::Mapping>(tmp.get(), map_reserve(new_end), tmp_path, true);
    fd_ = std::move(tmp);
    buffer_start_ = allocated_ = new_end;
    written_ = new_end;
    end_hint_ = log_end();
    // Everything appended so far is in the new file, synced: as good as one more sync.
    completed_ = started_ = started_ + 1;
    checkpoint_end_ = log_start;  // the new file has no checkpoint yet
    sync_sequence_ = new_sequence;
    recorded_end_ = new_end;
    checkpoint_offset_ = 0;
    wake_all();
    stats.objects_after = index_.objects();
    stats.bytes_after = new_end;
  } catch (...) {
    if (renamed) {
      failed_ = true;  // the index describes a file that is no longer there
    } else {
      std::error_code ignored;
      std::filesystem::remove(tmp_path, ignored);
    }
    throw;
  }
  return stats;
}

}  // namespace

ReplayResult replay_log(std::string_view file, const std::string& path, FileIndex& index,
                        bool check, std::uint64_t from, const ReplayResult& start,
                        std::uint64_t durable_end) {
  return Replayer(file, path, index, check, from, start, durable_end).run();
}

ReplayResult replay_log(std::string_view file, const std::string& path, FileIndex& index,
                        bool check, std::uint64_t durable_end) {
  return replay_log(file, path, index, check, log_start, ReplayResult{}, durable_end);
}

std::optional<SyncSlot> newest_sync_slot(std::string_view file) {
  SyncSlot newest{0, log_start};
  for (std::size_t i = 0; i < 2; ++i) {
    std::optional<SyncSlot> slot =
        decode_sync_slot(file.substr(sync_slots_offset + i * sync_slot_size));
    if (!slot) return std::nullopt;
    if (slot->sequence > newest.sequence) newest = *slot;
  }
  return newest;
}

std::unique_ptr<FileStore> FileStore::open(const std::string& path, FileStoreOptions options) {
  return std::make_unique<FileStoreImpl>(fileio::resolve_links(path), std::move(options));
}

CheckReport check_file(const std::string& given_path) {
  const std::string path = fileio::resolve_links(given_path);
  CheckReport report;
  if (!fileio::database_exists(path)) {
    throw IoError(fmt::format("cannot open {}: no such database", path));
  }
  LockFile lock(path, false);
  Fd fd = fileio::open_file(path, O_RDONLY, "cannot open");
  fileio::lock_database_file(fd.get(), false, path);
  std::uint64_t size = fileio::file_size(fd.get(), path);
  fileio::Mapping map(fd.get(), size, path);
  std::string_view file = map.bytes();
  try {
    decode_file_header(file.substr(0, std::min<std::size_t>(file.size(), file_header_size)));
  } catch (const Corruption& e) {
    lock.remove_if_made_here();
    report.ok = false;
    report.problems.push_back(e.what());
    return report;
  }
  if (file.size() < log_start) {
    lock.remove_if_made_here();
    report.ok = false;
    report.problems.push_back(fmt::format("the file ends at offset {}, inside its {}-byte header",
                                          file.size(), log_start));
    return report;
  }
  FileIndex index;
  std::optional<SyncSlot> synced = newest_sync_slot(file);
  ReplayResult r = replay_log(file, path, index, true, synced ? synced->end : log_start);
  report.problems = std::move(r.problems);
  if (!all_zero(file.substr(reserved_offset, log_start - reserved_offset))) {
    report.problems.push_back(
        fmt::format("reserved bytes at offset {} are not zero", reserved_offset));
  }
  if (!synced) {
    report.problems.push_back(fmt::format("a sync slot (offset {} or {}) fails its checksum",
                                          sync_slots_offset, sync_slots_offset + sync_slot_size));
  }
  for (std::size_t i = 0; i < 2; ++i) {
    std::size_t at = checkpoint_slots_offset + i * checkpoint_slot_size;
    std::optional<CheckpointSlot> slot = decode_checkpoint_slot(file.substr(at));
    if (!slot) {
      report.problems.push_back(fmt::format("checkpoint slot at offset {} fails its checksum", at));
    } else if (slot->sequence != 0 &&
               std::find(r.checkpoints.begin(), r.checkpoints.end(),
                         std::pair{slot->offset, slot->end}) == r.checkpoints.end()) {
      report.problems.push_back(fmt::format(
          "checkpoint slot at offset {} names a checkpoint at offset {} that the log does not hold",
          at, slot->offset));
    }
  }
  if (r.torn_bytes != 0) {
    // Past the durable end a torn frame is a write a crash cut short, which an open cuts away;
    // before it the file lost synced bytes, and an open refuses it (the problem reported above).
    bool before_durable = synced && r.torn_offset < synced->end;
    report.problems.push_back(fmt::format(
        "torn transaction at offset {} ({} bytes): {}", r.torn_offset, r.torn_bytes,
        before_durable ? "incomplete, though written before the durable end: the file lost "
                         "bytes, and a read-write open refuses it"
                       : "an incomplete write, cut off at the next read-write open"));
  }
  report.transactions = r.transactions;
  report.records = r.records;
  report.objects = index.objects();
  index.for_each([&](Oid oid, const IndexEntry& e) {
    std::optional<RecordView> rec = decode_record(file.substr(e.offset, e.length));
    if (!rec) {
      report.problems.push_back(
          fmt::format("object {}: record at offset {} fails its checksum", oid.value(), e.offset));
      return;
    }
    try {
      for_each_ref(rec->data, oid, [&](Oid target) {
        if (index.find(target) == nullptr) {
          report.problems.push_back(fmt::format(
              "object {} (record at offset {}) refers to object {}, which does not exist",
              oid.value(), e.offset, target.value()));
        }
      });
    } catch (const Corruption& err) {
      report.problems.push_back(
          fmt::format("object {} (record at offset {}): {}", oid.value(), e.offset, err.what()));
    }
  });
  report.ok = report.problems.empty();
  return report;
}

}  // namespace cairn
