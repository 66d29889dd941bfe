// Index keys: the store keys of secondary index entries (docs/records.md, "Indexes"). An entry
// of field F of record R is an object of store type TypeSpec::index_type(F) whose key is
//   encode(value of F) + '\0' + 16 hex digits of R's oid
// where encode() preserves the total order of Value (value.h) for every kind but lists and
// maps (which get no entry): comparing two keys bytewise compares the values, then the oids.
// Keys are printable except for the separator and the escapes of control bytes in strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cairn/oid.h"
#include "cairn/value.h"

namespace cairn::detail {

// Encoded values longer than this are cut here: their entries still sort no later than the
// value's, so lookups read a few more candidates, which the query checks and drops.
inline constexpr std::size_t max_index_value_bytes = 900;

// Whether values of this kind get index entries.
bool indexable(const Value& value);
// encode(value), cut at max_index_value_bytes. REQUIRES: indexable(value).
std::string index_value(const Value& value);
// The whole key of the entry for `value` of record `oid`; nullopt if the value is not indexable.
std::optional<std::string> index_key(const Value& value, Oid oid);
// The value part and the oid of an entry key; nullopt if the key is not an entry key.
std::optional<std::pair<std::string_view, Oid>> split_index_key(std::string_view key);
// The first byte of every encoded value of this kind.
char index_kind_prefix(Kind kind);

}  // namespace cairn::detail
