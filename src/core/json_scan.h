// A scan of JSON-like text that knows where string literals are, without parsing it: for
// checks that must run before (or instead of) a parser, such as nesting depth or splitting a
// command line at separators outside JSON.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace cairn {

// Calls fn(i, c, depth) for every character outside string literals, where depth is the number
// of `[` and `{` open around it (a bracket itself counts as inside what it opens); returns the
// deepest nesting met. Malformed text gives numbers a parser would refuse anyway.
template <typename Fn>
std::size_t scan_json_structure(std::string_view text, Fn&& fn) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    fn(i, c, depth);
  }
  return deepest;
}

// Throws InvalidArgument for an integer literal (no fraction, no exponent) outside int64:
// a JSON parser would read it as a double and silently round it.
void check_integer_literals(std::string_view text);

}  // namespace cairn
