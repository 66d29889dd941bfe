// The dump format of `cairn dump` and `cairn restore`: JSON lines, one header line, then one
// line per live object in ascending oid order, then one trailer line.
//
//   {"format":"cairn-dump","version":3,"next_oid":N,"csn":C,"fence_mark":F}
//   {"oid":N,"type":"T","key":"K","generation":V,"fields":VALUE}
//   {"oid":N,"type":"T","key":{"$bytes":"BASE64"},"generation":V,"raw":{"$bytes":"BASE64"}}
//   {"end":"cairn-dump","objects":COUNT}
//
// VALUE is the object's data decoded as a cairn::Value, in cairn's JSON form (cairn/json.h);
// data that does not decode is written as "raw" bytes instead. "type" and "key" are JSON strings
// when they are valid UTF-8 and {"$bytes":"BASE64"} when they are not (a JSON string holds only
// UTF-8); they are left out when empty. "generation" is the CSN of the commit that last wrote
// the object; restore ignores it (the restored objects all get the CSN of the one restoring
// commit). The trailer is written after the last object and counts the object lines: restore
// refuses a version 2 dump without it, or whose count disagrees, as one that was cut short.
// "fence_mark" is the database's fence mark (every fencing token it handed out is below it):
// restore raises the new database's to it. Version 1 dumps (from before the trailer and the
// $bytes form of "type" and "key") have no trailer and are still restored, without that check;
// version 1 and 2 dumps have no fence mark, and restore leaves the database's as it is.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/file_store.h"

namespace cairn::cli {

inline constexpr std::string_view dump_format_name = "cairn-dump";
inline constexpr std::uint64_t dump_format_version = 3;
// The first version whose header carries "fence_mark".
inline constexpr std::uint64_t dump_format_fence_version = 3;
// The oldest version restore reads: version 1 has no trailer line.
inline constexpr std::uint64_t dump_format_oldest_version = 1;

// One object of a parsed dump, ready to write.
struct DumpObject {
  Oid oid;
  std::string type;
  std::string key;
  std::string data;  // codec-encoded Value, or the raw bytes
};

struct Dump {
  std::uint64_t version = 0;  // the header's
  std::uint64_t next_oid = 0;
  std::uint64_t csn = 0;
  std::uint64_t fence_mark = 0;  // 0: none (versions 1 and 2)
  std::vector<DumpObject> objects;
};

// The dump line of one object (without its newline).
std::string dump_object_line(const StoredObject& object);

// Writes the header, every live object of `store` and the trailer to `out`; returns how many
// objects it wrote. Throws IoError if `out` fails.
std::uint64_t write_dump(FileStore& store, std::ostream& out);

// Reads and validates a whole dump. Throws InvalidArgument "line N: <what is wrong>" for the
// first malformed line, a second object with the same oid or the same (type, key), an oid the
// header's next_oid does not cover, a trailer whose count disagrees or a line after the
// trailer; and, for a version 2 dump, InvalidArgument if the trailer is missing. Nothing is
// written anywhere.
Dump read_dump(std::istream& in);

// The references in `dump` to objects it does not hold, as "object N refers to object M", in
// the dump's order (data that does not decode holds none). Restore writes them as they are (a dump
// is a copy of what was there, and refusing would leave the data with no way back in) and says so:
// `cairn check` reports them as dangling.
std::vector<std::string> dangling_references(const Dump& dump);

// Writes `dump` into `store`, which must hold no objects (else InvalidArgument), in one commit,
// allocating oids so that every oid of the dump is valid. Returns the objects restored.
std::uint64_t restore_dump(FileStore& store, Dump dump);

}  // namespace cairn::cli
