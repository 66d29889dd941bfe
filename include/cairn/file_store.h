// FileStore: the embedded default store, one crash-safe file (docs/file-format.md §2).
//
// The file is an append-only log of checksummed transactions. Opening it replays the log into an
// in-memory index (oid -> where the object's newest record is); loads read records from the
// file and verify their checksums. One process at a time may open a database: a second opener
// gets "database is in use by pid N". Many processes share one through `cairn serve`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/store.h"

namespace cairn {

// When a commit is acknowledged relative to fdatasync:
//   always  each commit writes and fdatasyncs its own transaction before returning;
//   batch   group commit: concurrent committers share one fdatasync, and each returns only
//           after an fdatasync that covers its transaction (the default);
//   never   commits are buffered in the process (up to 1 MiB) and written without
//           fdatasync: a crash of the process may lose the commits still buffered, a crash of
//           the machine those the OS had not yet written; neither corrupts older ones. A write
//           that fails (a full disk) is reported by a later commit, or at close by the log
//           option, and the commits it held are lost. Use batch for commits that must last.
//           (Under every policy, lock() syncs a fence mark once per 1024 tokens, and with it
//           the commits buffered so far: a fencing token must never be handed out twice.)
enum class FsyncPolicy { always, batch, never };

std::string_view to_string(FsyncPolicy policy);
FsyncPolicy parse_fsync_policy(std::string_view text);  // InvalidArgument if unknown

struct FileStoreOptions {
  // Unset: the policy recorded in the file when it was created (batch for a new file).
  std::optional<FsyncPolicy> fsync;
  // Open without writing anything (shared lock; a torn tail is kept). Commits, pack and
  // lock() are refused: a lock's fencing token could not be recorded.
  bool read_only = false;
  bool create = true;  // create the file if it does not exist (never when read_only)
  // Write an index checkpoint once the log has grown this much since the last one, so that
  // opening replays only what follows it (0 = never; a clean close writes one after 1 MiB).
  std::uint64_t checkpoint_bytes = std::uint64_t{64} << 20;
  // Where open() reports what recovery did ("dropped 37 bytes of a torn transaction at ...").
  // Default: stderr.
  std::function<void(std::string_view)> log;
};

struct FileStoreInfo {
  std::string path;
  std::uint32_t format_version = 0;
  FsyncPolicy fsync = FsyncPolicy::batch;
  std::uint64_t objects = 0;     // live objects
  std::uint64_t file_bytes = 0;  // bytes of log in use (header + transactions)
  std::uint64_t live_bytes = 0;  // bytes of the newest record of each live object
  // Log bytes beyond the live objects' newest records: superseded and deleted records and
  // per-transaction framing. pack() reclaims at least these, and also drops live objects no
  // longer reachable from the root, which this does not count (they are in live_bytes).
  std::uint64_t garbage_bytes = 0;
  std::uint64_t last_csn = 0;
  std::uint64_t next_oid = 0;
  std::uint64_t fence_mark = 0;         // every fencing token handed out so far is below it
  std::uint64_t transactions = 0;       // transactions in the log
  std::uint64_t torn_bytes = 0;         // bytes of a torn tail found at open (cut unless read-only)
  std::uint64_t torn_offset = 0;        // where that torn transaction began
  std::uint64_t index_bytes = 0;        // memory held by the oid index and the type sets
  std::uint64_t created_micros = 0;     // creation time, µs since the Unix epoch
  std::uint64_t checkpoint_offset = 0;  // of the newest index checkpoint (0 = none)
  std::uint64_t replayed_bytes = 0;     // log bytes open() replayed (after the checkpoint)
};

// Progress of pack(): `done` of `total` objects copied so far.
using PackProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

class FileStore : public Store {
 public:
  // Opens (or creates) the database at `path`, or at the file a symbolic link there leads to
  // (docs/file-format.md §2.7). Throws IoError if the file cannot be opened, Busy("database is
  // in use by pid N") if another opener holds it (or Busy naming another name, a hard link, if
  // another process holds the file under one), Corruption (naming the offset) if a checksum
  // fails before the tail; nothing is written to a corrupt file.
  static std::unique_ptr<FileStore> open(const std::string& path, FileStoreOptions options = {});

  virtual FileStoreInfo info() = 0;
  // The oids of live objects at or after `from`, ascending, at most `limit` of them: a walk over
  // every object whose cost follows the objects, however large the oids handed out.
  virtual std::vector<Oid> live_oids(Oid from, std::size_t limit) = 0;
  // pack() with a progress callback, called from the packing thread.
  virtual PackStats pack(const PackProgress& progress) = 0;
  // Makes every fencing token lock() hands out from now on at least `mark` (durably, before it
  // returns; nothing changes if they already are). Restore uses it so that a restored database
  // never hands out a token the dumped one had. InvalidArgument if `mark` is past 2^62 or the
  // store is read-only.
  virtual void raise_fence_mark(std::uint64_t mark) = 0;
  PackStats pack() override { return pack(PackProgress{}); }
};

// What `cairn check` reports.
struct CheckReport {
  bool ok = true;
  std::uint64_t transactions = 0;
  std::uint64_t records = 0;
  std::uint64_t objects = 0;
  std::vector<std::string> problems;  // each names an offset or an oid
};

// Reads every byte of the database at `path` without writing: verifies the header, every
// transaction and record checksum, that the log ends cleanly, that every object decodes and
// that every reference inside a live object names a live object.
CheckReport check_file(const std::string& path);

}  // namespace cairn
