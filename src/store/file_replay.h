// Replay of the FileStore's log (docs/file-format.md §2): reads the frames after the file
// header into a FileIndex, finds where the log ends, and tells a torn tail from corruption.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/file_format.h"
#include "store/file_index.h"

namespace cairn {

struct ReplayResult {
  std::uint64_t end = 0;  // where the next frame goes
  std::uint64_t csn = 0;
  std::uint64_t next_oid = 1;    // the smallest oid never handed out
  std::uint64_t fence_mark = 1;  // fencing tokens below it may have been handed out
  std::uint64_t transactions = 0;
  std::uint64_t records = 0;
  std::uint64_t torn_offset = 0;      // a torn frame began here ...
  std::uint64_t torn_bytes = 0;       // ... and this many bytes of it were found (0 = none)
  std::vector<std::string> problems;  // check mode only
  // Checkpoint frames met: (offset, end). Replay skips them; check mode decodes them.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> checkpoints;
};

// `file`: the whole file, header included (the header itself is not checked here). With
// `check`, problems are collected (and replay goes on past a bad frame whose header is sound);
// without, the first one throws Corruption naming its offset. `path` is for messages.
// `from`: where to start (a frame boundary, log_start or the end of a checkpoint) with the
// state in `index` and `start` (its csn, next_oid, fence_mark and transactions) as of that point.
// `durable_end`: the log is known to have been on disk up to there (the sync slots); damage
// found past it is what a crash left of unsynced writes, a torn tail, not corruption.
ReplayResult replay_log(std::string_view file, const std::string& path, FileIndex& index,
                        bool check, std::uint64_t from, const ReplayResult& start,
                        std::uint64_t durable_end);
// From the beginning of the log, into an empty index.
ReplayResult replay_log(std::string_view file, const std::string& path, FileIndex& index,
                        bool check, std::uint64_t durable_end);
// The newest sync slot of `file` ({0, log_start} if none); nullopt if a slot is damaged.
std::optional<logfmt::SyncSlot> newest_sync_slot(std::string_view file);

}  // namespace cairn
