// The hash form of an object in Redis (docs/redis-layout.md, "Objects"): the fields a commit
// writes for an object's data, and the object rebuilt from a hash read back. Anyone who can
// reach the Redis server can edit a hash, so the reading side treats its input as untrusted:
// it returns or throws cairn::Error, never anything worse (fuzzed by redis_hash_fuzz).
#pragma once

#include <hiredis/hiredis.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/store.h"

namespace cairn::redis {

// The hash field that marks a blob: its bytes (the data after the marker) are in the string
// `P b:<oid>`, the field's value. A commit's write of a blob sends it as the only field, with
// the bytes as its value; the script stores them in the string instead.
inline constexpr std::string_view bytes_field = "_bytes";

// The hash fields that hold `data`, chosen so that reading them back (object_from_hash) rebuilds
// exactly the same bytes: per-entry JSON for a map, one JSON `_value` for any other value, `_raw`
// bytes for data that is not a canonically encoded Value. (A blob is not written this way: see
// bytes_field.)
std::vector<std::pair<std::string, std::string>> data_fields(const std::string& data);

// Rebuilds an object from the reply to HGETALL of its hash. nullopt when the hash read is not
// the object's after all: a pointer to it (`_at`: the object lives at its readable key), or,
// with `check_oid` (a readable key this store remembered), a hash that is not the object's own
// (`_oid` names another object, or nothing is there any more). The hash of a blob (`_bytes`)
// holds none of its bytes: its data is then only the marker, `blob` is set, and the caller
// appends the bytes from `P b:<oid>`, read in the same snapshot. Throws Corruption for a hash
// without `_version` or with a data field that is not cairn JSON, ProtocolError for a reply
// that is not an array of strings.
std::optional<StoredObject> object_from_hash(Oid oid, const redisReply* r, bool check_oid,
                                             bool& blob);

}  // namespace cairn::redis
