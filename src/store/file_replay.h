// Replay of the FileStore's log (docs/file-format.md §2): reads the frames after the file
// header into a FileIndex, finds where the log ends, and tells a torn tail from corruption.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/file_index.h"

namespace cairn {

struct ReplayResult {
  std::uint64_t end = 0;  // where the next frame goes
  std::uint64_t csn = 0;
  std::uint64_t next_oid = 1;  // the smallest oid never handed out
  std::uint64_t transactions = 0;
  std::uint64_t records = 0;
  std::uint64_t torn_offset = 0;      // a torn frame began here ...
  std::uint64_t torn_bytes = 0;       // ... and this many bytes of it were found (0 = none)
  std::vector<std::string> problems;  // check mode only
};

// `file`: the whole file, header included (the header itself is not checked here). With
// `check`, problems are collected (and replay goes on past a bad frame whose header is sound);
// without, the first one throws Corruption naming its offset. `path` is for messages.
ReplayResult replay_log(std::string_view file, const std::string& path, FileIndex& index,
                        bool check);

}  // namespace cairn
