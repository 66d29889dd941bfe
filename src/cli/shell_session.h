// The commands of `cairn shell` over one Connection: get, set, new, del, ls, commit, abort, sync,
// info, help and quit. Input handling (terminal, stdin, -c) and flags live in shell.cc; this part
// knows nothing of where commands come from.
//
// PATH is `/` for the root map (oid 0) followed by segments separated by `/`: a segment names a
// map key or, in a list, a decimal index (`-` means "append" to set and new). A Ref met on the
// way is followed into the object it names; a trailing `/` also follows a Ref at the end, so
// `get /users/harry` prints the reference and `get /users/harry/` the object it names. In a
// segment `~1` stands for `/` and `~0` for `~` (as in JSON Pointer); a PATH written as a JSON
// string ("/my key/x") may contain spaces.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/database.h"

namespace cairn::cli {

// Splits shell input, fed a line at a time, into commands: at `;` and at the end of a line,
// except inside JSON strings and inside the brackets and braces of a `set` or `new` value, which
// may so span lines (only their brackets count: a stray one in a path cannot swallow the lines
// after it). A string ends with its line at the latest (JSON strings hold no newline). Commands
// are trimmed; blank ones, comment lines, and pieces starting with `#` (to the end of their
// line) are dropped.
class CommandSplitter {
 public:
  // The commands `line` (without its newline) completes.
  std::vector<std::string> feed(std::string_view line);
  // Whether a command goes on to the next line.
  bool open() const { return !pending_.empty(); }
  // The end of the input: the unfinished command, if any (running it says what is wrong).
  std::vector<std::string> finish();
  // Drops the unfinished command.
  void reset();

 private:
  std::string pending_;    // the command being read, over lines
  std::size_t depth_ = 0;  // brackets and braces open in it
};

// All of `text`, through a CommandSplitter.
std::vector<std::string> split_commands(std::string_view text);

// The one-line descriptions `help` prints, one command a line.
std::string shell_help();

class ShellSession {
 public:
  enum class Outcome { ok, failed, quit };

  // `store_name` is what `info` calls the store ("file", "memory", a URL).
  ShellSession(Database& db, std::string store_name);

  // Runs one command, writing its output to `out`. A failure prints exactly one line
  // "error: ..." to `err`; after a conflict the connection has been aborted and synced.
  Outcome run(std::string_view command, std::ostream& out, std::ostream& err);

  // Runs one command; throws cairn::Error when it fails. Returns false for quit and exit.
  bool execute(std::string_view command, std::ostream& out);

  bool has_changes() const { return conn_.has_changes(); }
  std::uint64_t snapshot_csn() const { return conn_.snapshot_csn(); }

 private:
  void get(std::string_view args, std::ostream& out);
  void set(std::string_view args);
  void create(std::string_view args);
  void del(std::string_view args);
  void ls(std::string_view args, std::ostream& out);
  void info(std::ostream& out);

  Database& db_;
  Connection conn_;
  std::string store_name_;
};

}  // namespace cairn::cli
