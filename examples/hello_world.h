// The schema ODB's producer/consumer example shares (its Schema("hello_world") with one type,
// Message), and the small command-line helpers examples/producer.cc and examples/consumer.cc
// both use.
#pragma once

#include <cairn/error.h>
#include <cairn/typed.h>
#include <cairn/url.h>
#include <cairn/value.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace hello_world {

struct Message {
  std::string text;
  cairn::Timestamp sent_at;
};
CAIRN_TYPE(Message, "hello_world.Message", text, sent_at);

// `text` as Python's repr() writes a str: single quotes unless the text holds a single quote
// and no double quote, with backslashes, the quote and control characters escaped.
inline std::string py_repr(std::string_view text) {
  char quote = '\'';
  if (text.find('\'') != std::string_view::npos && text.find('"') == std::string_view::npos) {
    quote = '"';
  }
  std::string out(1, quote);
  for (char c : text) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

// The line the consumer prints for a message, like ODB's print((message, timestamp)):
// `('message_0', 1652072778.43)`, the time in Unix seconds with two decimals.
inline std::string format_message(const Message& message) {
  char seconds[64];
  std::snprintf(seconds, sizeof seconds, "%.2f", static_cast<double>(message.sent_at.micros) / 1e6);
  return "(" + py_repr(message.text) + ", " + seconds + ")";
}

// Checks that `url` names a cairn server (cairn:// or cairns://): only a server shares the
// messages between processes and pushes its commits. Throws cairn::InvalidArgument otherwise.
inline void require_server_url(std::string_view url) {
  cairn::StoreUrl parsed = cairn::parse_store_url(url);
  if (parsed.scheme != cairn::StoreUrl::Scheme::cairn &&
      parsed.scheme != cairn::StoreUrl::Scheme::cairns) {
    throw cairn::InvalidArgument(
        "\"" + std::string(url) +
        "\" is not a server URL (cairn://HOST:PORT or cairns://HOST:PORT)");
  }
}

// A positive integer command-line value, or nullopt.
inline std::optional<std::uint64_t> positive_number(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0) return std::nullopt;
  return n;
}

// An error message on one line: what follows a program's name on stderr.
inline std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

}  // namespace hello_world
