// The commands over a database file: info, check, pack, dump and restore.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/url.h"
#include "cairn/value.h"
#include "cli/cli.h"
#include "cli/connect.h"
#include "cli/dump.h"

namespace cairn::cli {

namespace {

constexpr const char* path_help = "the database file, as PATH or file:PATH";

FileStoreOptions base_options() {
  FileStoreOptions options;
  options.log = [](std::string_view message) { std::cerr << "cairn: " << message << "\n"; };
  return options;
}

std::unique_ptr<FileStore> open_read_only(const std::string& arg) {
  FileStoreOptions options = base_options();
  options.read_only = true;
  options.create = false;
  return FileStore::open(database_path(arg), std::move(options));
}

std::unique_ptr<FileStore> open_read_write(const std::string& arg, const std::string& fsync,
                                           bool create) {
  FileStoreOptions options = base_options();
  options.create = create;
  if (!fsync.empty()) options.fsync = parse_fsync_policy(fsync);
  return FileStore::open(database_path(arg), std::move(options));
}

void add_path(CLI::App* command, std::string& path) {
  command->add_option("PATH", path, path_help)->required();
}

// --connect (described by `help`), --token and the TLS client options, for a command that works
// on a file or, with --connect, asks a running server. Returns --connect.
CLI::Option* add_server_options(CLI::App* command, ConnectArgs& server, const std::string& help) {
  CLI::Option* connect =
      command->add_option("--connect", server.connect, help)->type_name("HOST:PORT|unix:PATH");
  command->add_option("--token", server.token, "the token for --connect (or env CAIRN_TOKEN)");
  add_tls_client_options(command, server);
  return connect;
}

std::string created_text(std::uint64_t micros) {
  return Timestamp{static_cast<std::int64_t>(micros)}.str();
}

// ---- info ----

struct InfoArgs {
  std::string path;
  ConnectArgs server;
  bool json = false;
};

int run_info(const InfoArgs& args) {
  if (!args.server.connect.empty()) return run_remote_info(args.server, args.json);
  if (args.path.empty()) {
    // A usage error, as a missing PATH is for the other commands.
    std::cerr << "cairn info: a database PATH or --connect HOST:PORT is required\n"
                 "Run with --help for more information.\n";
    return exit_usage;
  }
  FileStoreInfo info = open_read_only(args.path)->info();
  if (args.json) {
    using Json = nlohmann::ordered_json;
    Json j;
    j["path"] = info.path;
    j["format_version"] = info.format_version;
    j["fsync"] = std::string(to_string(info.fsync));
    j["objects"] = info.objects;
    j["file_bytes"] = info.file_bytes;
    j["live_bytes"] = info.live_bytes;
    j["garbage_bytes"] = info.garbage_bytes;
    j["last_csn"] = info.last_csn;
    j["next_oid"] = info.next_oid;
    j["fence_mark"] = info.fence_mark;
    j["transactions"] = info.transactions;
    j["torn_tail"] = info.torn_bytes == 0
                         ? Json(nullptr)
                         : Json{{"bytes", info.torn_bytes}, {"offset", info.torn_offset}};
    j["index_bytes"] = info.index_bytes;
    j["checkpoint_offset"] =
        info.checkpoint_offset == 0 ? Json(nullptr) : Json(info.checkpoint_offset);
    j["replayed_bytes"] = info.replayed_bytes;
    j["created"] = created_text(info.created_micros);
    std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    return exit_ok;
  }
  std::string torn = info.torn_bytes == 0
                         ? std::string("none")
                         : fmt::format("{} bytes at offset {}", info.torn_bytes, info.torn_offset);
  std::cout << fmt::format(
      "path: {}\n"
      "format version: {}\n"
      "fsync policy: {}\n"
      "objects: {}\n"
      "file bytes: {}\n"
      "live bytes: {}\n"
      "garbage bytes (estimate): {}\n"
      "last csn: {}\n"
      "next oid: {}\n"
      "fence mark: {}\n"
      "transactions: {}\n"
      "torn tail: {}\n"
      "index bytes: {}\n"
      "checkpoint: {}\n"
      "replayed at open: {} bytes\n"
      "created: {}\n",
      info.path, info.format_version, to_string(info.fsync), info.objects, info.file_bytes,
      info.live_bytes, info.garbage_bytes, info.last_csn, info.next_oid, info.fence_mark,
      info.transactions, torn, info.index_bytes,
      info.checkpoint_offset == 0 ? std::string("none")
                                  : fmt::format("at offset {}", info.checkpoint_offset),
      info.replayed_bytes, created_text(info.created_micros));
  return exit_ok;
}

void add_info(CLI::App& app, Action& action) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* command = app.add_subcommand(
      "info",
      "Show what a database file holds (objects, bytes, garbage, CSN, torn tail...), or a "
      "running server's statistics");
  auto* path = command->add_option("PATH", args->path, path_help);
  auto* connect = add_server_options(command, args->server,
                                     "ask the server at HOST:PORT (or unix:PATH) instead "
                                     "(clients, CSN, commits/s, bytes, uptime)");
  path->excludes(connect);
  command->add_flag("--json", args->json, "print one JSON object instead of name: value lines");
  command->callback([args, connect, &action] {
    check_connect_flags(args->server, connect->count() > 0, "cairn info");
    action = [args] { return run_info(*args); };
  });
}

// ---- check ----

struct CheckArgs {
  std::string path;
};

int run_check(const CheckArgs& args) {
  CheckReport report = check_file(database_path(args.path));
  for (const std::string& problem : report.problems)
    std::cout << problem << "\n";
  if (report.ok && report.problems.empty()) {
    std::cout << fmt::format("ok: {} transactions, {} records, {} objects\n", report.transactions,
                             report.records, report.objects);
    return exit_ok;
  }
  std::size_t n = std::max<std::size_t>(report.problems.size(), 1);
  std::cout << fmt::format("{} problem{}\n", n, n == 1 ? "" : "s");
  return exit_failure;
}

void add_check(CLI::App& app, Action& action) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* command = app.add_subcommand(
      "check",
      "Verify every byte of a database file without writing to it; exit 1 if anything is wrong");
  add_path(command, args->path);
  command->callback([args, &action] { action = [args] { return run_check(*args); }; });
}

// ---- pack ----

// A progress bar on stderr, drawn only when stderr is a terminal. The line is ended when the bar
// goes away.
class ProgressBar {
 public:
  ProgressBar() : enabled_(isatty(STDERR_FILENO) == 1) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() {
    if (drawn_) std::cerr << "\n";
  }

  void update(std::uint64_t done, std::uint64_t total) {
    if (!enabled_) return;
    std::lock_guard lock(mu_);
    std::uint64_t permille =
        total == 0 ? 1000 : std::min<std::uint64_t>(done, total) * 1000 / total;
    if (drawn_ && permille == shown_) return;
    shown_ = permille;
    drawn_ = true;
    auto filled = static_cast<std::size_t>(permille * width / 1000);
    std::cerr << fmt::format("\rpacking [{}{}] {:3}.{}% {}/{} objects", std::string(filled, '#'),
                             std::string(width - filled, ' '), permille / 10, permille % 10, done,
                             total)
              << std::flush;
  }

 private:
  static constexpr std::size_t width = 30;
  bool enabled_;
  std::mutex mu_;
  bool drawn_ = false;
  std::uint64_t shown_ = 0;
};

struct PackArgs {
  std::string path;
  bool path_given = false;  // PATH was on the command line (perhaps as "")
  std::string fsync;
  ConnectArgs server;
};

int run_pack(const PackArgs& args) {
  if (!args.server.connect.empty()) return run_remote_pack(args.server);
  if (!args.path_given) {
    std::cerr << "cairn pack: a database PATH or --connect HOST:PORT is required\n"
                 "Run with --help for more information.\n";
    return exit_usage;
  }
  auto store = open_read_write(args.path, args.fsync, false);
  PackStats stats;
  {
    ProgressBar bar;
    stats =
        store->pack([&bar](std::uint64_t done, std::uint64_t total) { bar.update(done, total); });
  }
  std::cout << pack_summary(stats) << "\n";
  return exit_ok;
}

void add_pack(CLI::App& app, Action& action) {
  auto args = std::make_shared<PackArgs>();
  CLI::App* command = app.add_subcommand(
      "pack",
      "Rewrite a database file with only the objects its roots reach, reclaiming the rest; or "
      "have a running server pack the store it serves");
  auto* path = command->add_option("PATH", args->path, path_help);
  auto* fsync = add_fsync_option(command, args->fsync,
                                 "always, batch or never: when writes reach the disk during this "
                                 "pack (default: the policy recorded in the file)");
  auto* connect = add_server_options(command, args->server,
                                     "ask the server at HOST:PORT (or unix:PATH) to pack its "
                                     "store instead, and wait until it has");
  path->excludes(connect);
  fsync->excludes(connect);
  command->callback([args, path, connect, &action] {
    check_connect_flags(args->server, connect->count() > 0, "cairn pack");
    args->path_given = path->count() > 0;
    action = [args] { return run_pack(*args); };
  });
}

// ---- dump ----

struct DumpArgs {
  std::string path;
};

int run_dump(const DumpArgs& args) {
  auto store = open_read_only(args.path);
  write_dump(*store, std::cout);
  return exit_ok;
}

void add_dump(CLI::App& app, Action& action) {
  auto args = std::make_shared<DumpArgs>();
  CLI::App* command = app.add_subcommand(
      "dump",
      "Write every live object as JSON lines to stdout: a header line, then one line per object "
      "in oid order ({\"oid\",\"type\",\"key\",\"generation\",\"fields\"}, or \"raw\" bytes "
      "for data that JSON would not give back byte for byte; a type or key that is not valid "
      "UTF-8 is written as {\"$bytes\":\"BASE64\"}), then the trailer line "
      "{\"end\":\"cairn-dump\",\"objects\":N}, "
      "which a dump cut short lacks");
  add_path(command, args->path);
  command->callback([args, &action] { action = [args] { return run_dump(*args); }; });
}

// ---- restore ----

struct RestoreArgs {
  std::string path;
  std::string fsync;
};

int run_restore(const RestoreArgs& args) {
  // Read and check the whole dump before touching (or creating) the database.
  Dump dump;
  try {
    dump = read_dump(std::cin);
  } catch (const Error&) {
    check_stdin_read();  // the input was cut by a read error, not malformed
    throw;
  }
  check_stdin_read();
  std::vector<std::string> dangling = dangling_references(dump);
  auto store = open_read_write(args.path, args.fsync, true);
  std::uint64_t restored = restore_dump(*store, std::move(dump));
  std::cout << fmt::format("restored {} object{}\n", restored, restored == 1 ? "" : "s");
  // Restored as they were, but not silently: `cairn check` will report them.
  constexpr std::size_t shown = 10;
  for (std::size_t i = 0; i < dangling.size() && i < shown; ++i) {
    std::cerr << fmt::format("cairn restore: warning: {}, which the dump does not hold\n",
                             dangling[i]);
  }
  if (dangling.size() > shown) {
    std::cerr << fmt::format("cairn restore: warning: and {} more such references\n",
                             dangling.size() - shown);
  }
  return exit_ok;
}

void add_restore(CLI::App& app, Action& action) {
  auto args = std::make_shared<RestoreArgs>();
  CLI::App* command = app.add_subcommand(
      "restore",
      "Read the output of cairn dump from stdin into an empty (or new) database, keeping every "
      "oid, with fencing tokens continuing above the dumped database's; the whole input is checked "
      "first and nothing is written if any line is malformed or "
      "the dump lacks its trailer line (it was cut short; dumps of version 1, from before the "
      "trailer, are read without it)");
  add_path(command, args->path);
  add_fsync_option(
      command, args->fsync,
      "always, batch or never: when writes reach the disk (default: the policy recorded "
      "in the file; a database this creates records the one given, else batch)");
  command->callback([args, &action] { action = [args] { return run_restore(*args); }; });
}

}  // namespace

std::string database_path(const std::string& arg) {
  if (arg.starts_with("file:")) return parse_store_url(arg).path;
  // Another store's URL is refused rather than taken for a file name: `restore memory:` made a
  // file called "memory:" and said it had restored. (A file so named: ./memory: or file:memory:.)
  for (std::string_view scheme : {"memory:", "redis:", "redis+unix:", "cairn:", "cairns:"}) {
    if (arg.starts_with(scheme)) {
      throw InvalidArgument(fmt::format(
          "{} names another kind of store; this command works on a database file, given as PATH "
          "or file:PATH (for a file with that name, write ./{})",
          arg, arg));
    }
  }
  return arg;
}

std::string pack_summary(const PackStats& stats) {
  std::uint64_t reclaimed =
      stats.bytes_before > stats.bytes_after ? stats.bytes_before - stats.bytes_after : 0;
  return fmt::format("objects: {} -> {}, bytes: {} -> {} (reclaimed {})", stats.objects_before,
                     stats.objects_after, stats.bytes_before, stats.bytes_after, reclaimed);
}

void check_stdin_read() {
  // std::cin reads through stdio here (synced), which records a failed read in ferror(stdin)
  // and errno, and ends the input as if it were the end of the file.
  if (std::ferror(stdin) == 0) return;
  int error = errno;
  throw IoError(fmt::format("cannot read standard input: {}", std::strerror(error)));
}

CLI::Option* add_fsync_option(CLI::App* command, std::string& fsync, const std::string& help) {
  auto valid_policy = [](std::string& text) -> std::string {
    try {
      parse_fsync_policy(text);
      return {};
    } catch (const Error& e) {
      return e.what();
    }
  };
  return command->add_option("--fsync", fsync, help)
      ->type_name("POLICY")
      ->check(CLI::Validator(valid_policy, "", "fsync policy"));
}

void add_file_commands(CLI::App& app, Action& action) {
  add_info(app, action);
  add_check(app, action);
  add_pack(app, action);
  add_dump(app, action);
  add_restore(app, action);
}

}  // namespace cairn::cli
