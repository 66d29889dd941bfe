// `cairn serve`: share one database between processes; `cairn serve --stop` ends a running one;
// `cairn info --connect` asks one for its statistics.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/store.h"
#include "cairn/url.h"
#include "cli/cli.h"
#include "cli/connect.h"
#include "net/protocol.h"
#include "net/remote_store.h"
#include "net/server.h"
#include "store/file_io.h"

namespace cairn::cli {

namespace {

struct ServeArgs {
  std::string file;
  bool memory = false;
  std::string redis;
  std::string host = "127.0.0.1";
  std::uint16_t port = default_server_port;
  std::string unix_path;
  std::string token;
  std::string token_file;
  std::string tls_cert, tls_key;
  std::string fsync;
  std::uint64_t gc_bytes = 0;
  std::size_t max_clients = 1024;
  std::uint32_t max_frame_bytes = 0;
  double idle_timeout = 30;
  std::size_t workers = 32;
  bool stop = false;
  // --stop and info --connect as clients:
  std::string ca_file;
  bool insecure = false;
  bool tls = false;
};

// --idle-timeout's range, in seconds. A client pings at a third of the timeout but no more often
// than every 50 ms, and must finish its hello (and TLS handshake) within it: below a few tens of
// milliseconds every client was dropped, and half a second leaves room for both. The top (about
// 11.6 days) is far inside what the milliseconds it is kept in hold.
constexpr double min_idle_timeout = 0.5;
constexpr double max_idle_timeout = 1e6;
constexpr const char* idle_timeout_range = "from 0.5 to 1000000";

// Checks --idle-timeout while parsing (a usage error), with a message that names the range as
// the help does.
CLI::Validator idle_timeout_check() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        const char* end = text.data() + text.size();
        auto [stop, ec] = std::from_chars(text.data(), end, value);
        if (ec == std::errc() && stop == end && std::isfinite(value) && value >= min_idle_timeout &&
            value <= max_idle_timeout) {
          return {};
        }
        return fmt::format("{} is not a number of seconds {}", text, idle_timeout_range);
      },
      "", "seconds");
}

// Checks a whole-number flag while parsing (a usage error), with a message that names the range
// in plain numbers: CLI11's own wrote the largest double out in full, 309 digits.
template <class T>
CLI::Validator whole_number(T min, T max = std::numeric_limits<T>::max()) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const char* end = text.data() + text.size();
        auto [stop, ec] = std::from_chars(text.data(), end, value);
        if (ec == std::errc() && stop == end && value >= min && value <= max) return {};
        return fmt::format("{} is not a whole number from {} to {}", text, min, max);
      },
      "", "whole number");
}

// Refuses an empty value while parsing: an empty --token would serve without one, an empty
// --unix would listen on no socket.
CLI::Validator not_empty(std::string what) {
  return CLI::Validator(
      [what](std::string& text) -> std::string {
        return text.empty() ? fmt::format("the {} is empty", what) : std::string();
      },
      "", "not empty");
}

// The bytes of the file at `path`, or IoError naming it as `what` and saying why it cannot be read
// (a directory says so, where std::ifstream opened it and then read it as an empty file).
std::string read_small_file(const std::string& path, const char* what) {
  auto fail = [&](int error) {
    return IoError(fmt::format("cannot read {} {}: {}", what, path, std::strerror(error)));
  };
  fileio::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw fail(errno);
  std::string text;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(errno);
    if (n == 0) return text;
    text.append(buffer, static_cast<std::size_t>(n));
  }
}

std::string read_token(const ServeArgs& args) {
  if (!args.token.empty()) return args.token;
  if (!args.token_file.empty()) {
    std::istringstream in(read_small_file(args.token_file, "token file"));
    std::string token;
    std::getline(in, token);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' '))
      token.pop_back();
    if (token.empty())
      throw InvalidArgument(fmt::format("token file {} is empty", args.token_file));
    // More than one line: which was meant is unclear (a key file given by mistake?).
    std::string rest;
    while (std::getline(in, rest)) {
      if (rest.find_first_not_of(" \r\t") != std::string::npos) {
        throw InvalidArgument(
            fmt::format("token file {} has more than one line; it should hold the token alone",
                        args.token_file));
      }
    }
    return token;
  }
  if (const char* env = std::getenv("CAIRN_TOKEN")) return env;
  return {};
}

net::ClientOptions client_for(const ServeArgs& args) {
  net::ClientOptions options;
  options.host = args.host;
  options.port = args.port;
  options.unix_path = args.unix_path;
  options.token = read_token(args);
  options.tls = args.tls || !args.ca_file.empty() || args.insecure;
  options.ca_file = args.ca_file;
  options.insecure = args.insecure;
  return options;
}

int run_stop(const ServeArgs& args) {
  if (!args.unix_path.empty() && (args.tls || !args.ca_file.empty() || args.insecure)) {
    throw InvalidArgument("TLS is for TCP connections; a unix socket is served without it");
  }
  net::ClientOptions options = client_for(args);
  options.control = true;  // served even when the server is at --max-clients
  net::RemoteStore client(options);
  client.stop_server();
  std::cout << "stop requested; the server finishes in-flight requests and exits\n";
  return exit_ok;
}

// Each client takes a file descriptor, beside the few the server itself holds (listeners, the
// store's files or connections, the event loop's, and the room kept past the limit for control
// connections). With fewer descriptors than --max-clients needs, the clients past them would
// not be refused (code 11) but left unaccepted, waiting: as Redis does, the soft limit is
// raised as far as the hard one allows, and failing that fewer clients are served.
std::size_t fit_max_clients(std::size_t wanted) {
  constexpr rlim_t reserved = 48;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return wanted;
  rlim_t need = wanted > RLIM_INFINITY - reserved - 1 ? RLIM_INFINITY - 1 : wanted + reserved;
  if (limit.rlim_cur >= need) return wanted;
  rlimit raised = limit;
  raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? need : std::min(need, limit.rlim_max);
  if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  if (limit.rlim_cur >= need) return wanted;
  std::size_t fit = limit.rlim_cur > reserved + 1 ? limit.rlim_cur - reserved : 1;
  std::cerr << fmt::format(
      "cairn serve: --max-clients {} needs {} open files, and this process may open {}: serving "
      "at most {} clients (raise the limit with ulimit -n)\n",
      wanted, need, limit.rlim_cur, fit);
  return fit;
}

int run_serve(const ServeArgs& args) {
  if (args.stop) return run_stop(args);
  int backends = (args.memory ? 1 : 0) + (args.redis.empty() ? 0 : 1) + (args.file.empty() ? 0 : 1);
  if (backends > 1) throw InvalidArgument("give at most one of --file, --memory and --redis");
  net::ServerOptions options;
  options.host = args.host;
  options.port = args.port;
  options.unix_path = args.unix_path;
  options.token = read_token(args);
  options.tls_cert = args.tls_cert;
  options.tls_key = args.tls_key;
  options.max_clients = fit_max_clients(args.max_clients);
  options.max_frame_bytes = args.max_frame_bytes;
  options.idle_timeout = std::chrono::milliseconds(std::llround(args.idle_timeout * 1000));
  options.gc_bytes = args.gc_bytes;
  options.workers = args.workers;
  options.log = [](std::string_view message) { std::cerr << "cairn serve: " << message << "\n"; };

  std::unique_ptr<Store> store;
  std::string what;
  if (args.memory) {
    store = make_memory_store();
    what = "an in-memory database";
    options.workers = 0;  // commits never wait: run them on the loop
  } else if (!args.redis.empty()) {
    store = cairn::open(args.redis);
    what = "Redis";
    options.blocking_store = true;
  } else {
    FileStoreOptions file_options;
    file_options.log = [](std::string_view message) {
      std::cerr << "cairn serve: " << message << "\n";
    };
    if (!args.fsync.empty()) file_options.fsync = parse_fsync_policy(args.fsync);
    std::string path = database_path(args.file.empty() ? std::string("cairn.db") : args.file);
    auto file = FileStore::open(path, std::move(file_options));
    FsyncPolicy policy = file->info().fsync;
    if (policy == FsyncPolicy::never) options.workers = 0;
    what = fmt::format("{} (fsync {})", path, to_string(policy));
    store = std::move(file);
  }
  net::Server server(*store, options);
  server.handle_signals();
  // An IPv6 address in brackets, so that the address can be given to --connect as printed.
  std::string host = options.host.find(':') != std::string::npos ? fmt::format("[{}]", options.host)
                                                                 : options.host;
  std::string where = options.tcp ? fmt::format("{}:{}", host, server.port()) : "";
  if (!options.unix_path.empty()) where += (where.empty() ? "" : " and ") + options.unix_path;
  std::cout << fmt::format("cairn serve: listening on {}{} for {}\n", where,
                           options.tls_cert.empty() ? "" : " (TLS)", what)
            << std::flush;
  server.run();
  store.reset();  // closes the database: syncs, and a file store writes its checkpoint
  std::cout << "cairn serve: stopped\n" << std::flush;
  return exit_ok;
}

}  // namespace

void add_serve_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* command = app.add_subcommand(
      "serve", "Share a database with other processes over the network (default port 2972)");
  auto* file =
      command->add_option("--file", args->file, "serve this database file (default ./cairn.db)");
  auto* memory = command->add_flag("--memory", args->memory, "serve a new in-memory database");
  auto* redis = command->add_option("--redis", args->redis, "serve the data in Redis at this URL");
  file->excludes(memory)->excludes(redis);
  memory->excludes(redis);
  command->add_option("--host", args->host, "address to listen on (default 127.0.0.1)");
  command->add_option("--port", args->port, "TCP port (default 2972; 0 = any free port)")
      ->check(whole_number<std::uint16_t>(0));
  command
      ->add_option("--unix", args->unix_path,
                   "also listen on this unix socket (clients: --connect unix:PATH); with --stop, "
                   "connect there")
      ->type_name("PATH")
      ->check(not_empty("path"));
  command
      ->add_option("--token", args->token,
                   "clients must present this token (also --token-file, env CAIRN_TOKEN)")
      ->check(not_empty("token"));
  command->add_option("--token-file", args->token_file, "read the token from this file")
      ->excludes("--token");
  command->add_option("--tls-cert", args->tls_cert, "serve TLS with this certificate (PEM)");
  command->add_option("--tls-key", args->tls_key, "the private key of --tls-cert (PEM)");
  auto* fsync =
      add_fsync_option(command, args->fsync,
                       "always, batch or never (default: the policy recorded in the file, batch "
                       "for a new one). A commit is answered after the fdatasync that covers it, "
                       "except under never, which buffers up to 1 MiB of commits in the process: a "
                       "killed server may lose commits it has answered");
  command
      ->add_option("--gc-bytes", args->gc_bytes,
                   "pack automatically after this many bytes were committed (0 = never)")
      ->check(whole_number<std::uint64_t>(0));
  command->add_option("--max-clients", args->max_clients, "refuse connections past this many")
      ->check(whole_number<std::size_t>(1));
  command
      ->add_option("--max-frame-bytes", args->max_frame_bytes,
                   fmt::format("largest request accepted, in bytes: at least {}, the most a "
                               "hello may take (default 65 MiB)",
                               net::max_hello_bytes))
      ->check(whole_number<std::uint32_t>(net::max_hello_bytes));
  command
      ->add_option("--idle-timeout", args->idle_timeout,
                   fmt::format("drop a client silent for this many seconds, {} (default 30)",
                               idle_timeout_range))
      ->check(idle_timeout_check());
  command
      ->add_option("--workers", args->workers,
                   "threads for commits that wait for the disk (default 32)")
      ->check(whole_number<std::size_t>(0));
  command->add_flag("--stop", args->stop,
                    "ask the server at --host/--port (or --unix) to finish and exit");
  command->add_flag("--tls", args->tls,
                    "with --stop: connect with TLS, verifying the server against the system's CAs "
                    "or --tls-ca");
  auto* ca = command
                 ->add_option("--tls-ca", args->ca_file,
                              "with --stop: verify the server with this CA file (implies --tls)")
                 ->type_name("FILE");
  auto* insecure = command->add_flag(
      "--insecure", args->insecure,
      "with --stop: TLS without verifying the server certificate (implies --tls)");
  ca->excludes(insecure);
  command->callback([args, fsync, memory, redis, &action] {
    if (fsync->count() > 0 && (memory->count() > 0 || redis->count() > 0)) {
      throw CLI::ValidationError(
          "cairn serve",
          "--fsync is for database files (--file, or ./cairn.db by default); --memory and "
          "--redis have no fsync policy");
    }
    action = [args] { return run_serve(*args); };
  });
}

int run_remote_info(const ConnectArgs& server, bool json) {
  net::ClientOptions options = net::client_options(parse_store_url(server_url(server)));
  options.control = true;  // served even when the server is at --max-clients
  net::RemoteStore client(options);
  auto info = client.info();
  if (json) {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const auto& [name, value] : info) {
      bool number = !value.empty() && value.find_first_not_of("0123456789") == std::string::npos;
      if (number)
        out[name] = std::stoull(value);
      else
        out[name] = value;
    }
    std::cout << out.dump() << "\n";
    return exit_ok;
  }
  for (const auto& [name, value] : info)
    std::cout << fmt::format("{}: {}\n", name, value);
  return exit_ok;
}

int run_remote_pack(const ConnectArgs& server) {
  net::ClientOptions options = net::client_options(parse_store_url(server_url(server)));
  // RemoteStore::pack waits as long as a pack takes; a server that stops answering is still
  // noticed, by its heartbeats.
  net::RemoteStore client(options);
  std::cout << pack_summary(client.pack()) << "\n";
  return exit_ok;
}

}  // namespace cairn::cli
