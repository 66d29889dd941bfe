// A scan of JSON-like text that knows where string literals are, without parsing it: for
// checks that must run before (or instead of) a parser, such as nesting depth or splitting a
// command line at separators outside JSON.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

#include "cairn/error.h"

namespace cairn {

// A scan's place in a JSON string literal: the scan sets in_string at the opening quote and
// feeds step() each character after it, which clears in_string at the closing quote.
struct JsonStringScan {
  bool in_string = false;
  bool escaped = false;
  void step(char c) {
    if (escaped) {
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (c == '"') {
      in_string = false;
    }
  }
};

// Calls fn(i, c, depth) for every character outside string literals, where depth is the number
// of `[` and `{` open around it (a bracket itself counts as inside what it opens); returns the
// deepest nesting met. Malformed text gives numbers a parser would refuse anyway.
template <typename Fn>
std::size_t scan_json_structure(std::string_view text, Fn&& fn) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  JsonStringScan string;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (string.in_string) {
      string.step(c);
      continue;
    }
    if (c == '"') {
      string.in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    fn(i, c, depth);
  }
  return deepest;
}

// scan_json_structure's deepest nesting of `text`, counting in `separators` its member
// separators (':' outside string literals), for check_unique_members.
inline std::size_t scan_json_nesting(std::string_view text, std::size_t& separators) {
  separators = 0;
  return scan_json_structure(
      text, [&separators](std::size_t, char c, std::size_t) { separators += c == ':'; });
}

// Throws InvalidArgument if `parsed`, what a parser that keeps one member per name (nlohmann)
// made of some text, holds fewer object members than the text has member separators (':'
// outside string literals, counted by scan_json_nesting): a name was repeated, and all but
// one of its values were dropped silently. `parsed` is walked recursively: check the text's
// nesting first.
template <typename Json>
void check_unique_members(std::size_t separators, const Json& parsed) {
  auto members = [](const Json& j, auto& self) -> std::size_t {
    std::size_t n = 0;
    if (j.is_object()) {
      n += j.size();
      for (const auto& item : j.items())
        n += self(item.value(), self);
    } else if (j.is_array()) {
      for (const Json& element : j)
        n += self(element, self);
    }
    return n;
  };
  if (members(parsed, members) != separators) {
    throw InvalidArgument("a JSON object names the same member twice");
  }
}

// Before JSON text is parsed: throws InvalidArgument for a NUL byte (the parser would take it
// for the end of the input and ignore what follows) or for an integer literal (no fraction, no
// exponent) outside int64 (the parser would read it as a double and silently round it).
void check_json_text(std::string_view text);

}  // namespace cairn
