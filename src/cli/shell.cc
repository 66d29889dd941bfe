// `cairn shell`: its flags, the store it opens, and where its commands come from — a terminal
// (libedit line editing, history in ~/.cairn_history), stdin, or -c. The commands themselves are
// in shell_session.cc.
#include <fmt/format.h>
#include <histedit.h>
#include <unistd.h>

#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/store.h"
#include "cairn/url.h"
#include "cli/cli.h"
#include "cli/connect.h"
#include "cli/shell_session.h"

namespace cairn::cli {

namespace {

struct ShellArgs {
  std::string file;
  bool memory = false;
  ConnectArgs server;  // --connect and the flags that go with it
  std::string fsync;
  std::string commands;
  bool use_connect = false;
  bool have_commands = false;  // -c was given (possibly empty)
};

struct OpenedStore {
  std::unique_ptr<Store> store;
  std::string kind;  // for info: file, memory or the server's URL
  std::string name;  // for the banner
};

OpenedStore open_store(const ShellArgs& args) {
  if (args.memory) return {make_memory_store(), "memory", "a new in-memory database"};
  if (args.use_connect) {
    std::string shown = server_url(args.server, /*with_token=*/false);
    return {cairn::open(server_url(args.server)), shown, shown};
  }
  FileStoreOptions options;
  options.log = [](std::string_view message) { std::cerr << "cairn: " << message << "\n"; };
  if (!args.fsync.empty()) options.fsync = parse_fsync_policy(args.fsync);
  std::string path = database_path(args.file);
  return {FileStore::open(path, std::move(options)), "file", path};
}

// ---- input ----

// A terminal line editor over libedit, with the history kept in ~/.cairn_history (when HOME is
// set). The prompt shows `*` while there are uncommitted changes.
class LineEditor {
 public:
  explicit LineEditor(const ShellSession& session)
      : session_(session),
        el_(el_init("cairn", stdin, stdout, stderr), &el_end),
        history_(history_init(), &history_end) {
    if (!el_ || !history_) throw IoError("cannot set up line editing on this terminal");
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
      history_file_ = std::string(home) + "/.cairn_history";
    }
    history(history_.get(), &event_, H_SETSIZE, 1000);
    history(history_.get(), &event_, H_SETUNIQUE, 1);
    if (!history_file_.empty()) history(history_.get(), &event_, H_LOAD, history_file_.c_str());
    el_set(el_.get(), EL_CLIENTDATA, this);
    el_set(el_.get(), EL_PROMPT, &prompt);
    el_set(el_.get(), EL_EDITOR, "emacs");
    el_set(el_.get(), EL_SIGNAL, 1);
    el_set(el_.get(), EL_HIST, history, history_.get());
    // While a line is edited, the keys that send signals reach the editor as keys (SIGINT could
    // come between two reads and be missed): Ctrl-C ends the line, which read_line() then
    // drops, instead of ending the shell and its uncommitted changes; Ctrl-Z and Ctrl-\ do what
    // the terminal would. While a command runs, they are signals as usual (Ctrl-C ends a
    // command that hangs, and the shell).
    el_set(el_.get(), EL_SETTY, "-d", "-isig", nullptr);
    el_set(el_.get(), EL_ADDFN, "cairn-cancel", "cancel the line", &cancel);
    el_set(el_.get(), EL_ADDFN, "cairn-suspend", "suspend the shell", &suspend);
    el_set(el_.get(), EL_ADDFN, "cairn-quit", "quit with SIGQUIT", &quit);
    el_source(el_.get(), nullptr);  // the user's ~/.editrc, if any
    // Bound after it: its `bind -e` or `bind -v` resets the key map, which would leave these
    // keys dead (the terminal sends no signals while a line is edited).
    el_set(el_.get(), EL_BIND, "^C", "cairn-cancel", nullptr);
    el_set(el_.get(), EL_BIND, "^Z", "cairn-suspend", nullptr);
    el_set(el_.get(), EL_BIND, "^\\", "cairn-quit", nullptr);
  }

  // The next line without its newline; nullopt at end of input, or when cancelled (Ctrl-C:
  // then cancelled() says so).
  std::optional<std::string> read_line() {
    cancelled_ = false;
    int count = 0;
    const char* line = el_gets(el_.get(), &count);
    if (line == nullptr || count <= 0 || cancelled_) return std::nullopt;
    std::string text(line, static_cast<std::size_t>(count));
    if (text.ends_with('\n')) text.pop_back();
    return text;
  }

  bool cancelled() const { return cancelled_; }

  // The prompt for the next line: a continuation's while a JSON value is open.
  void set_continuing(bool continuing) { continuing_ = continuing; }

  // Adds a line to the history and saves it, so that a shell that is killed loses nothing.
  void remember(const std::string& line) {
    history(history_.get(), &event_, H_ENTER, line.c_str());
    if (!history_file_.empty()) history(history_.get(), &event_, H_SAVE, history_file_.c_str());
  }

 private:
  static char* prompt(EditLine* el) {
    void* data = nullptr;
    el_get(el, EL_CLIENTDATA, &data);
    const auto* editor = static_cast<const LineEditor*>(data);
    // libedit only reads the prompt.
    if (editor != nullptr && editor->continuing_) return const_cast<char*>("   ...> ");
    bool dirty = editor != nullptr && editor->session_.has_changes();
    return const_cast<char*>(dirty ? "cairn*> " : "cairn> ");
  }

  // Bound to Ctrl-C: ends the line, marked to be dropped.
  static unsigned char cancel(EditLine* el, int) {
    void* data = nullptr;
    el_get(el, EL_CLIENTDATA, &data);
    if (data != nullptr) static_cast<LineEditor*>(data)->cancelled_ = true;
    return CC_NEWLINE;
  }

  // Bound to Ctrl-Z and Ctrl-\: the signal the terminal would send its foreground group, with
  // the terminal as the shell found it meanwhile.
  static unsigned char suspend(EditLine* el, int) { return send_signal(el, SIGTSTP); }
  static unsigned char quit(EditLine* el, int) { return send_signal(el, SIGQUIT); }
  static unsigned char send_signal(EditLine* el, int signal) {
    el_set(el, EL_PREP_TERM, 0);
    ::kill(0, signal);
    el_set(el, EL_PREP_TERM, 1);  // resumed
    return CC_REDISPLAY;
  }

  const ShellSession& session_;
  bool continuing_ = false;  // the lines so far leave a JSON value open
  bool cancelled_ = false;   // Ctrl-C ended the last line
  std::unique_ptr<EditLine, decltype(&el_end)> el_;
  std::unique_ptr<History, decltype(&history_end)> history_;
  HistEvent event_{};
  std::string history_file_;
};

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

int run_interactive(ShellSession& session, const std::string& store_name) {
  LineEditor editor(session);
  std::cout << fmt::format(
      "cairn shell on {} at csn {}; help lists the commands, quit leaves (Ctrl-C cancels a "
      "line)\n",
      store_name, session.snapshot_csn());
  bool quit = false;
  CommandSplitter splitter;
  while (!quit) {
    editor.set_continuing(splitter.open());
    std::optional<std::string> line = editor.read_line();
    if (!line && editor.cancelled()) {
      std::cout << "\n";
      splitter.reset();  // drops the line being typed, and the open value's earlier lines
      continue;
    }
    if (!line) {
      std::cout << "\n";
      break;
    }
    if (!blank(*line)) editor.remember(*line);
    std::vector<std::string> commands = splitter.feed(*line);
    for (const std::string& command : commands) {
      if (session.run(command, std::cout, std::cerr) == ShellSession::Outcome::quit) {
        quit = true;
        break;
      }
    }
  }
  if (session.has_changes()) std::cerr << "uncommitted changes dropped\n";
  return exit_ok;
}

// Runs commands in order until one fails or quits, and then returns the exit status: 1 after a
// failure (nothing after it runs, and what was not committed is dropped), 0 after quit. Nothing
// if every command ran.
std::optional<int> run_commands(ShellSession& session, const std::vector<std::string>& commands) {
  for (const std::string& command : commands) {
    switch (session.run(command, std::cout, std::cerr)) {
      case ShellSession::Outcome::ok:
        break;
      case ShellSession::Outcome::quit:
        return exit_ok;
      case ShellSession::Outcome::failed:
        return exit_failure;
    }
  }
  return std::nullopt;
}

// Reads and runs stdin a line at a time, so that a program can hold a conversation with the shell.
int run_script(ShellSession& session, std::istream& in) {
  CommandSplitter splitter;
  for (std::string line; std::getline(in, line);) {
    if (std::optional<int> status = run_commands(session, splitter.feed(line))) return *status;
  }
  if (&in == &std::cin) check_stdin_read();  // a read error is not the end of the script
  // A value still open at the end: run what there is, to say what is wrong with it.
  return run_commands(session, splitter.finish()).value_or(exit_ok);
}

int run_shell(const ShellArgs& args) {
  OpenedStore opened = open_store(args);
  Database db(std::move(opened.store));
  ShellSession session(db, opened.kind);
  if (args.have_commands)
    return run_commands(session, split_commands(args.commands)).value_or(exit_ok);
  if (isatty(STDIN_FILENO) == 1) return run_interactive(session, opened.name);
  return run_script(session, std::cin);
}

}  // namespace

void add_shell_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<ShellArgs>();
  CLI::App* command = app.add_subcommand(
      "shell",
      "Look inside a database and change it with commands such as get /users/harry, set /n 1 "
      "and commit: from a terminal, from stdin, or from -c");
  CLI::Option* file =
      command
          ->add_option("--file", args->file,
                       "the database file, as PATH or file:PATH (created if it does not exist)")
          ->type_name("PATH");
  CLI::Option* memory =
      command->add_flag("--memory", args->memory, "a new in-memory database, gone at exit");
  CLI::Option* connect = command->add_option("--connect", args->server.connect, connect_help)
                             ->type_name("HOST:PORT|unix:PATH");
  command->add_option("--token", args->server.token, "the token for --connect (or env CAIRN_TOKEN)")
      ->type_name("T")
      ->needs(connect);
  add_tls_client_options(command, args->server);
  add_fsync_option(command, args->fsync,
                   "always, batch or never: when commits reach the disk (default: the policy "
                   "recorded in the file)")
      ->needs(file);
  CLI::Option* commands =
      command
          ->add_option("-c,--command", args->commands,
                       "run these commands, separated by ; or newlines, instead of reading stdin")
          ->type_name("COMMANDS");
  command->footer(
      "Commands, one a line (or separated by ; outside JSON strings); blank lines and lines "
      "starting with # are skipped:\n\n" +
      shell_help() +
      "\nA failed command prints one line \"error: ...\" on stderr. From a terminal the shell "
      "goes on; from stdin or -c it stops there and exits with status 1, dropping what was not "
      "committed. Bad flags exit with status 2.\n");
  command->callback([args, file, memory, connect, commands, &action] {
    int chosen = static_cast<int>(file->count() > 0) + static_cast<int>(memory->count() > 0) +
                 static_cast<int>(connect->count() > 0);
    if (chosen != 1) {
      throw CLI::ValidationError(
          "cairn shell", "give exactly one of --file PATH, --memory or --connect HOST:PORT");
    }
    check_connect_flags(args->server, connect->count() > 0, "cairn shell");
    args->use_connect = connect->count() > 0;
    args->have_commands = commands->count() > 0;
    action = [args] { return run_shell(*args); };
  });
}

}  // namespace cairn::cli
