// Values as JSON, for people: the shell's input and output and the dump/restore format.
// JSON's own kinds map directly (integers to int, numbers with a fraction or exponent to double);
// cairn's extra kinds are one-key objects:
//   {"$bytes": "base64"}  {"$time": "RFC 3339"}  {"$uuid": "8-4-4-4-12"}  {"$decimal": "1.10"}
//   {"$ref": 5} or {"$ref": 5, "$type": "schema.User"}
//   {"$double": "nan" | "inf" | "-inf"}   (JSON has no such numbers)
//   {"$map": {...}}  a map with a key that starts with '$', so it is not read as one of the above
#pragma once

#include <string>
#include <string_view>

#include "cairn/value.h"

namespace cairn {

// One line of JSON (no newlines), map keys in ascending order. Bytes of a string that are not
// valid UTF-8 are written as U+FFFD (use bytes for binary data).
std::string to_json(const Value& value);

// Throws InvalidArgument naming the problem (and its position, for syntax errors). Nesting
// deeper than max_value_depth is refused, and so is an object that names a member twice (as
// the codec refuses a map with a key twice).
Value from_json(std::string_view text);

}  // namespace cairn
