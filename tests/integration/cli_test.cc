// The cairn binary as a user runs it: help, version, usage errors and exit statuses.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

ProcessResult cairn(std::vector<std::string> args) {
  args.insert(args.begin(), CAIRN_BINARY);
  return run_process(args);
}

TEST(Cli, HelpDescribesTheToolAndExitsZero) {
  ProcessResult r = cairn({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cairn"), std::string::npos);
  EXPECT_NE(r.out.find("--version"), std::string::npos) << r.out;
}

// Output lost on a full disk used to exit 0, so a script capturing `get` carried on with an
// empty file.
TEST(Cli, OutputThatCannotBeWrittenFailsTheCommand) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  ASSERT_EQ(cairn({"shell", "--file", db, "-c", "set /a 1; commit"}).exit_code, 0);
  for (const std::string& command : {std::string("shell --file ") + db + " -c 'get /; ls /'",
                                     "info " + db, "info --json " + db, "check " + db}) {
    ProcessResult r =
        run_process({"/bin/sh", "-c", std::string(CAIRN_BINARY) + " " + command + " >/dev/full"});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find("writing to standard output failed"), std::string::npos)
        << command << ": " << r.err;
  }
}

TEST(Cli, ErrorsAboutAPathNameTheDatabase) {
  TempDir dir;
  // info without PATH exited 1 while check and dump exited 2.
  ProcessResult info = cairn({"info"});
  EXPECT_EQ(info.exit_code, 2) << info.err;
  EXPECT_NE(info.err.find("PATH or --connect"), std::string::npos) << info.err;
  // A file too short to be a database: the message named no file.
  std::string six = dir.file("six");
  write_file(six, "abcdef");
  ProcessResult short_file = cairn({"info", six});
  EXPECT_EQ(short_file.exit_code, 1);
  EXPECT_NE(short_file.err.find(six + ": file header: 6 bytes"), std::string::npos)
      << short_file.err;
  // A missing directory was reported about the lock file beside the database.
  std::string missing = dir.file("nodir") + "/x.cairn";
  ProcessResult no_dir = cairn({"shell", "--file", missing, "-c", "ls"});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_NE(no_dir.err.find("cannot open " + missing + ": its directory does not exist"),
            std::string::npos)
      << no_dir.err;
}

TEST(Cli, VersionPrintsTheVersion) {
  ProcessResult r = cairn({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "cairn 0.1.0\n");
}

TEST(Cli, UnknownFlagIsAUsageErrorWithExitTwo) {
  ProcessResult r = cairn({"--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST(Cli, UnknownCommandIsAUsageErrorWithExitTwo) {
  ProcessResult r = cairn({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos) << r.err;
}

// An extra argument after a command used to be reported as "unknown command or argument \"\"".
TEST(Cli, AnExtraArgumentIsNamedWithItsCommand) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  for (const Case& c :
       {Case{{"check", "x.cairn", "extra"}, "cairn check: unexpected argument \"extra\""},
        Case{{"info", "a", "b", "c"}, "cairn info: unexpected argument \"b\""},
        Case{{"shell", "--memory", "extra"}, "cairn shell: unexpected argument \"extra\""}}) {
    ProcessResult r = cairn(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(Cli, NoCommandPrintsUsageAndExitsTwo) {
  ProcessResult r = cairn({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a command is required"), std::string::npos) << r.err;
}

// --connect is HOST:PORT or unix:PATH (README.md): one without a port was taken to mean 2972.
TEST(Cli, ConnectWithoutAPortIsAUsageError) {
  for (const char* place : {"127.0.0.1", "localhost", "[::1]", "127.0.0.1:", "[::1]:"}) {
    for (std::vector<std::string> args :
         {std::vector<std::string>{"shell", "-c", "ls"}, std::vector<std::string>{"info"},
          std::vector<std::string>{"pack"}}) {
      args.insert(args.begin() + 1, {"--connect", place});
      args.insert(args.begin(), CAIRN_BINARY);
      ProcessResult r = run_process(args, "", std::chrono::seconds(15));
      EXPECT_EQ(r.exit_code, 2) << args[1] << " --connect " << place << ": " << r.err;
      EXPECT_NE(r.err.find("HOST:PORT"), std::string::npos) << r.err;
      EXPECT_EQ(r.out, "") << args[1] << " --connect " << place;
    }
  }
}

}  // namespace
}  // namespace cairn::testing
