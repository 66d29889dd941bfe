// How the client commands (cairn shell --connect, cairn info --connect) name a running server:
// their flags, and the cairn:// or cairns:// URL those flags stand for.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace cairn::cli {

struct ConnectArgs {
  std::string connect;  // HOST:PORT, or unix:PATH for a server's unix socket
  std::string token;    // "" = env CAIRN_TOKEN, if set
  bool tls = false;
  std::string ca_file;  // TLS: verify the server with this CA file instead of the system store
  bool insecure = false;
};

// Help text for --connect.
inline constexpr const char* connect_help =
    "a cairn server (cairn serve): HOST:PORT, or unix:PATH for its unix socket (serve --unix)";

// Adds --tls, --tls-ca FILE and --insecure to `command`. --tls-ca and --insecure imply --tls.
void add_tls_client_options(CLI::App* command, ConnectArgs& args);

// For a command's parse callback: throws CLI::ValidationError (a usage error) if --token, --tls,
// --tls-ca or --insecure was given without --connect, where nothing would use it, or if the
// --connect given is malformed (check_connect).
void check_connect_flags(const ConnectArgs& args, bool connect_given, const std::string& command);

// Throws InvalidArgument when --connect is malformed (not HOST:PORT or unix:PATH: a missing
// port too) or the flags do not go together (TLS over a unix socket).
void check_connect(const ConnectArgs& args);

// The URL that opens the server: cairn://[TOKEN@]HOST:PORT, or cairns://... with `ca=FILE` or
// `insecure=1` when TLS was asked for, or cairn://[TOKEN@]localhost?socket=PATH for unix:PATH.
// Without `with_token` the token is left out (for messages and banners).
std::string server_url(const ConnectArgs& args, bool with_token = true);

}  // namespace cairn::cli
