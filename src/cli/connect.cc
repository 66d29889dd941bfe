// Client flags to server URLs (connect.h).
#include "cli/connect.h"

#include <fmt/format.h>

#include <string_view>

#include "cairn/error.h"
#include "cairn/url.h"

namespace cairn::cli {

namespace {

constexpr std::string_view unix_prefix = "unix:";

// Percent-encodes everything but unreserved characters (and '/' when `keep_slash`, for paths in
// query values, which stay readable that way).
std::string percent_encode(std::string_view text, bool keep_slash = false) {
  std::string out;
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool plain = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
                 u == '-' || u == '.' || u == '_' || u == '~' || (keep_slash && u == '/');
    out += plain ? std::string(1, c) : fmt::format("%{:02X}", u);
  }
  return out;
}

bool is_unix(const ConnectArgs& args) {
  return std::string_view(args.connect).starts_with(unix_prefix);
}

bool wants_tls(const ConnectArgs& args) {
  return args.tls || !args.ca_file.empty() || args.insecure;
}

}  // namespace

void add_tls_client_options(CLI::App* command, ConnectArgs& args) {
  command->add_flag("--tls", args.tls,
                    "connect with TLS (a server started with --tls-cert), verifying its "
                    "certificate against the system's CAs or --tls-ca");
  auto* ca = command
                 ->add_option("--tls-ca", args.ca_file,
                              "verify the server's certificate with this CA file (PEM); implies "
                              "--tls")
                 ->type_name("FILE");
  auto* insecure = command->add_flag(
      "--insecure", args.insecure,
      "TLS without verifying the server's certificate (anyone in between can read and change "
      "the traffic); implies --tls");
  ca->excludes(insecure);
}

void check_connect_flags(const ConnectArgs& args, bool connect_given, const std::string& command) {
  if (connect_given) {
    try {
      check_connect(args);  // not with the token: errors show the URL
    } catch (const Error& e) {
      throw CLI::ValidationError("--connect", e.what());
    }
    return;
  }
  if (args.tls || args.insecure || !args.ca_file.empty()) {
    throw CLI::ValidationError(command, "--tls, --tls-ca and --insecure go with --connect");
  }
  if (!args.token.empty()) throw CLI::ValidationError(command, "--token goes with --connect");
}

void check_connect(const ConnectArgs& args) {
  if (is_unix(args)) {
    if (args.connect.size() == unix_prefix.size()) {
      throw InvalidArgument("--connect unix:PATH needs the path of the server's socket");
    }
    if (wants_tls(args)) {
      throw InvalidArgument(
          "TLS is for TCP connections; a unix socket is local and served without it (drop "
          "--tls, --tls-ca and --insecure)");
    }
    return;
  }
  // Pasted into a URL as it is: a scheme, a token or parameters in it would make another URL
  // than the flags say (a "?insecure=1" beside --tls-ca, a token beside --token).
  if (args.connect.find_first_of("/?@#") != std::string::npos) {
    throw InvalidArgument(fmt::format(
        "--connect {}: give HOST:PORT or unix:PATH, with TLS and the token as flags (--tls, "
        "--tls-ca, --insecure, --token)",
        args.connect));
  }
  // HOST:PORT, nothing less (README.md): a cairn:// URL may leave the port out, --connect may
  // not. The port follows the last ':' (after the ']' of an IPv6 address in brackets).
  if (args.connect.empty()) throw InvalidArgument("give HOST:PORT or unix:PATH");
  std::string_view place = args.connect;
  std::size_t colon = place.rfind(':');
  bool bracketed = place.starts_with('[');
  if (colon == std::string_view::npos || colon + 1 == place.size() ||
      (bracketed && place.find(']') > colon)) {
    throw InvalidArgument(fmt::format(
        "{} has no port: give HOST:PORT (cairn serve listens on port {} unless told otherwise) "
        "or unix:PATH",
        args.connect, default_server_port));
  }
  parse_store_url(server_url(args, /*with_token=*/false));
}

std::string server_url(const ConnectArgs& args, bool with_token) {
  std::string user =
      with_token && !args.token.empty() ? percent_encode(args.token) + "@" : std::string();
  if (is_unix(args)) {
    std::string_view path = std::string_view(args.connect).substr(unix_prefix.size());
    return fmt::format("cairn://{}localhost?socket={}", user, percent_encode(path, true));
  }
  if (!wants_tls(args)) return fmt::format("cairn://{}{}", user, args.connect);
  std::string url = fmt::format("cairns://{}{}", user, args.connect);
  if (!args.ca_file.empty()) url += "?ca=" + percent_encode(args.ca_file, true);
  if (args.insecure) url += "?insecure=1";
  return url;
}

}  // namespace cairn::cli
