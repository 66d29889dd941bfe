// cairn's command-line entry point: parses flags with CLI11 and dispatches to subcommands.
#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>

#include "cairn/error.h"
#include "cairn/version.h"
#include "cli/cli.h"

namespace cairn::cli {

int run_main(int argc, char** argv) {
  CLI::App app{"cairn: a persistent, shareable object database", "cairn"};
  app.set_version_flag("--version", fmt::format("cairn {}", version));
  app.require_subcommand(0, 1);
  app.fallthrough(false);
  Action action;
  add_file_commands(app, action);
  add_shell_command(app, action);
  add_serve_command(app, action);
  add_bench_command(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError&) {
    // Name the first unexpected argument as the user typed it, and the command it came after
    // (a subcommand keeps its own extras).
    for (const CLI::App* sub : app.get_subcommands()) {
      std::vector<std::string> extras = sub->remaining();
      if (extras.empty()) continue;
      std::cerr << fmt::format(
          "cairn {0}: unexpected argument \"{1}\"; run cairn {0} --help for its usage\n",
          sub->get_name(), extras.front());
      return exit_usage;
    }
    std::vector<std::string> extras = app.remaining();
    std::cerr << "cairn: unknown command or argument \"" << (extras.empty() ? "" : extras.front())
              << "\"; run cairn --help for the list of commands\n";
    return exit_usage;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return exit_usage;
  }
  if (!action) {
    std::cerr << app.help() << "\nerror: a command is required\n";
    return exit_usage;
  }
  int status = exit_failure;
  try {
    status = action();
  } catch (const Error& e) {
    std::cerr << "cairn: " << e.what() << "\n";
    return exit_failure;
  } catch (const std::exception& e) {
    // A library's own exception (std::system_error, std::bad_alloc...): one line and status 1,
    // never std::terminate's abort.
    std::cerr << "cairn: " << e.what() << "\n";
    return exit_failure;
  }
  // Output that never arrived (a full disk, a closed pipe) must not pass for success: a script
  // capturing `get` would read an empty file and carry on.
  std::cout.flush();
  bool stdio_failed = std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!std::cout || stdio_failed) {
    std::cerr << "cairn: writing to standard output failed\n";
    return exit_failure;
  }
  return status;
}

}  // namespace cairn::cli

int main(int argc, char** argv) {
  // A write past a file size limit (ulimit -f) would kill the process with SIGXFSZ: ignored, it
  // fails with EFBIG instead, an error like a full disk (a server goes on serving; a file
  // store's preallocation stops there, file-format.md 2.5).
  std::signal(SIGXFSZ, SIG_IGN);
  return cairn::cli::run_main(argc, argv);
}
