// Parsing of store URLs (include/cairn/url.h).
#include "cairn/url.h"

#include <fmt/format.h>

#include <charconv>
#include <utility>

#include "cairn/error.h"

namespace cairn {

namespace {

// The URL with its user info (a password, a token) replaced by "***", for error messages. In a
// server URL everything up to the last '@' is taken for user info: a token may hold '/', '?' or
// '@' not percent-encoded, and hiding too much is better than showing a secret.
std::string redacted(std::string_view url) {
  for (std::string_view scheme : {"redis://", "redis+unix://", "cairn://", "cairns://"}) {
    if (!url.starts_with(scheme)) continue;
    auto at = url.rfind('@');
    if (at == std::string_view::npos || at < scheme.size()) break;
    return fmt::format("{}***{}", scheme, url.substr(at));
  }
  return std::string(url);
}

[[noreturn]] void bad_url(std::string_view url, std::string_view why) {
  throw InvalidArgument(fmt::format("invalid store URL \"{}\": {}", redacted(url), why));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view url, std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) bad_url(url, "bad percent-escape");
    out += static_cast<char>(hi << 4 | lo);
    i += 2;
  }
  return out;
}

template <typename Int>
Int parse_number(std::string_view url, std::string_view text, Int min, Int max,
                 std::string_view what) {
  Int value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    bad_url(url, fmt::format("{} must be a number from {} to {}", what, min, max));
  }
  return value;
}

void parse_query(std::string_view url, std::string_view query, StoreUrl& out) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    std::string key = percent_decode(url, pair.substr(0, eq));
    std::string value =
        eq == std::string_view::npos ? std::string() : percent_decode(url, pair.substr(eq + 1));
    if (key.empty()) bad_url(url, "empty query parameter name");
    out.params[key] = value;
  }
}

// host[:port] or [v6addr][:port]
void parse_authority(std::string_view url, std::string_view hostport, std::uint16_t default_port,
                     StoreUrl& out) {
  std::string_view host;
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) bad_url(url, "unterminated '[' in host");
    host = hostport.substr(1, close - 1);
    std::string_view rest = hostport.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') bad_url(url, "expected ':' after ']'");
      port = rest.substr(1);
      if (port.empty()) bad_url(url, "empty port");
    }
  } else {
    auto colon = hostport.rfind(':');
    host = hostport.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = hostport.substr(colon + 1);
      if (port.empty()) bad_url(url, "empty port");
    }
    // "h:1:2" was host "h:1", port 2: a name cannot hold ':', and an IPv6 address needs brackets.
    if (host.find(':') != std::string_view::npos) {
      bad_url(url, "a host holds no ':' (write an IPv6 address in brackets: [::1]:PORT)");
    }
  }
  if (host.empty()) bad_url(url, "missing host");
  out.host = percent_decode(url, host);
  out.port = port.empty() ? default_port : parse_number<std::uint16_t>(url, port, 1, 65535, "port");
}

// Splits "userinfo@hostport/path?query" of a network URL.
void parse_network(std::string_view url, std::string_view rest, std::uint16_t default_port,
                   StoreUrl& out) {
  auto q = rest.find('?');
  if (q != std::string_view::npos) {
    parse_query(url, rest.substr(q + 1), out);
    rest = rest.substr(0, q);
  }
  auto slash = rest.find('/');
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  rest = rest.substr(0, slash);
  auto at = rest.rfind('@');
  if (at != std::string_view::npos) {
    out.user = percent_decode(url, rest.substr(0, at));
    rest = rest.substr(at + 1);
  }
  parse_authority(url, rest, default_port, out);
  out.path = std::string(path);
}

}  // namespace

StoreUrl parse_store_url(std::string_view url) {
  StoreUrl out;
  auto colon = url.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    bad_url(url, "expected SCHEME:..., one of memory:, file:PATH, redis://, cairn://, cairns://");
  }
  std::string_view scheme = url.substr(0, colon);
  std::string_view rest = url.substr(colon + 1);

  if (scheme == "memory") {
    if (!rest.empty() && rest != "//") bad_url(url, "memory: takes no path");
    out.scheme = StoreUrl::Scheme::memory;
    return out;
  }
  if (scheme == "file") {
    out.scheme = StoreUrl::Scheme::file;
    // file:///abs/path and file://localhost/abs/path are the RFC 8089 forms; file:PATH is ours.
    if (rest.starts_with("//")) {
      rest.remove_prefix(2);
      if (rest.starts_with("localhost/")) rest.remove_prefix(9);
      if (!rest.starts_with("/")) bad_url(url, "file:// must be followed by an absolute path");
    }
    if (rest.empty()) bad_url(url, "file: needs a path, e.g. file:./data.cairn");
    out.path = percent_decode(url, rest);
    return out;
  }
  if (scheme == "redis" || scheme == "redis+unix") {
    out.scheme = StoreUrl::Scheme::redis;
    if (!rest.starts_with("//")) bad_url(url, "expected redis://HOST[:PORT][/DB]");
    rest.remove_prefix(2);
    if (scheme == "redis+unix") {
      // redis+unix://[:PASSWORD@]/path/to/socket[?db=N&prefix=P]
      auto q = rest.find('?');
      if (q != std::string_view::npos) parse_query(url, rest.substr(q + 1), out);
      rest = rest.substr(0, q);
      auto at = rest.find('@');
      if (at != std::string_view::npos) {
        out.user = percent_decode(url, rest.substr(0, at));
        rest = rest.substr(at + 1);
      }
      if (!rest.starts_with("/")) bad_url(url, "redis+unix:// needs an absolute socket path");
      out.path = percent_decode(url, rest);
      if (auto db = out.params.find("db"); db != out.params.end()) {
        out.db = parse_number<int>(url, db->second, 0, 1 << 20, "db");
      }
    } else {
      parse_network(url, rest, default_redis_port, out);
      std::string_view db = out.path;
      if (db.starts_with("/")) db.remove_prefix(1);
      if (!db.empty()) out.db = parse_number<int>(url, db, 0, 1 << 20, "db");
      out.path.clear();
    }
    // A misspelt parameter would be ignored, and the data written where it was not meant to go
    // (under the default prefix, say): refused. (redis:// gives its db in the path.)
    bool unix_socket = scheme == "redis+unix";
    for (const auto& [name, value] : out.params) {
      if (name != "prefix" && name != "connect_timeout_ms" && name != "timeout_ms" &&
          !(unix_socket && name == "db")) {
        bad_url(url, fmt::format("unknown parameter \"{}\" (known: prefix, connect_timeout_ms, "
                                 "timeout_ms{})",
                                 name, unix_socket ? ", db" : ""));
      }
    }
    // user info is [username]:password (Redis 6 ACL form) or a bare password.
    if (auto c = out.user.find(':'); c != std::string::npos) {
      out.password = out.user.substr(c + 1);
      out.user.resize(c);
    } else {
      out.password = std::exchange(out.user, {});
    }
    return out;
  }
  if (scheme == "cairn" || scheme == "cairns") {
    out.scheme = scheme == "cairn" ? StoreUrl::Scheme::cairn : StoreUrl::Scheme::cairns;
    if (!rest.starts_with("//")) bad_url(url, "expected cairn://[TOKEN@]HOST[:PORT]");
    rest.remove_prefix(2);
    parse_network(url, rest, default_server_port, out);
    if (!out.path.empty() && out.path != "/") bad_url(url, "a cairn server URL takes no path");
    out.path.clear();
    return out;
  }
  bad_url(url, fmt::format("unknown scheme \"{}\"; expected memory:, file:, redis://, "
                           "redis+unix://, cairn:// or cairns://",
                           scheme));
}

}  // namespace cairn
