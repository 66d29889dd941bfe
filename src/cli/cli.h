// The cairn command line: each subcommand registers itself on the app and says what to run.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "cairn/store.h"

namespace cairn::cli {

// What a parsed subcommand runs; returns the process exit status.
using Action = std::function<int()>;

// Exit statuses shared by every subcommand.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;  // the command ran and failed (error printed)
inline constexpr int exit_usage = 2;    // bad flags or arguments

// Registers the commands over a database file (info, check, pack, dump, restore); a parsed
// command sets `action`, which must outlive the parse.
void add_file_commands(CLI::App& app, Action& action);
// Registers `cairn shell`.
void add_shell_command(CLI::App& app, Action& action);
// Registers `cairn serve`.
void add_serve_command(CLI::App& app, Action& action);
struct ConnectArgs;
// `cairn info --connect HOST:PORT`: a running server's statistics.
int run_remote_info(const ConnectArgs& server, bool json);
// `cairn pack --connect`: asks the server to pack the store it serves and prints what it did.
int run_remote_pack(const ConnectArgs& server);
// pack's result line: "objects: A -> B, bytes: C -> D (reclaimed E)".
std::string pack_summary(const PackStats& stats);
// Registers `cairn bench`.
void add_bench_command(CLI::App& app, Action& action);

// PATH as the user gave it: a plain path, or a file: URL (file:PATH, file:///abs/path).
std::string database_path(const std::string& arg);

// Throws IoError if reading standard input failed (a directory, an I/O error): what was read of
// it is then not the whole input, and perhaps nothing.
void check_stdin_read();

// Adds `--fsync POLICY` (always, batch or never), checked while parsing (a usage error).
CLI::Option* add_fsync_option(CLI::App* command, std::string& fsync, const std::string& help);

// Parses argv, runs the chosen subcommand, maps errors to exit statuses. The entry point.
int run_main(int argc, char** argv);

}  // namespace cairn::cli
