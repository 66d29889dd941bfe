// The codec: Value <-> MessagePack bytes, the encoding of every stored record and wire payload.
// Plain kinds use MessagePack's own types; cairn's extra kinds use extension types (ref 1,
// uuid 2, decimal 3, and the standard timestamp type -1), so any MessagePack reader can decode
// a record. The byte layout is specified in docs/file-format.md ("Value encoding").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "cairn/value.h"

namespace cairn {

// The deepest nesting of lists and maps that encode and decode accept. A scalar at top level
// has depth 0; [[1]] has depth 2. Deeper values are refused with InvalidArgument (encode) or
// Corruption (decode) rather than risking the stack.
inline constexpr std::size_t max_value_depth = 100;

// Appends the encoding of `value` to `out`. Throws InvalidArgument if the value nests deeper
// than max_value_depth or a string/bytes/list/map is longer than MessagePack's 2^32-1 limit.
void encode(const Value& value, std::string& out);
std::string encode(const Value& value);

// Decodes exactly one value that must span all of `bytes`. Throws Corruption naming the byte
// offset for truncated, malformed, trailing or over-deep input; never reads out of bounds.
Value decode(std::string_view bytes);

}  // namespace cairn
