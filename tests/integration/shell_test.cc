// `cairn shell` driven as a user drives it: -c scripts, stdin scripts (also one command at a time
// through a pipe), and a terminal (a pseudo-terminal, for line editing and history). A conflict
// needs a second writer, which a database file locked by the shell does not admit and an
// in-memory store in another process cannot be; so the conflict paths run the shell's command
// layer (cli/shell_session.h) in this process, against a second connection to the same store.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cairn/database.h>
#include <cairn/file_store.h>
#include <cairn/store.h>
#include <cairn/value.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cli/shell_session.h"
#include "support/process.h"
#include "support/served_store.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using std::chrono::steady_clock;

// How long a test waits for the shell before giving up (a hung shell, not a slow one).
constexpr std::chrono::seconds patience{60};

int error_lines(const std::string& err) {
  int n = 0;
  for (const std::string& line : lines_of(err))
    n += line.starts_with("error: ") ? 1 : 0;
  return n;
}

// The oid in {"$ref":N} printed by get.
std::uint64_t ref_oid(const std::string& line) {
  Json j = Json::parse(line);
  return j.at("$ref").get<std::uint64_t>();
}

std::uint64_t committed_csn(const std::string& line) {
  std::smatch m;
  if (!std::regex_match(line, m, std::regex("committed ([0-9]+)")))
    throw std::runtime_error("not a commit line: " + line);
  return std::stoull(m[1]);
}

// The shell as a child process with its stdin, stdout and stderr on pipes, for a conversation:
// send a line, read what it printed.
class ShellPipe {
 public:
  explicit ShellPipe(const std::vector<std::string>& args) {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2");
    signal(SIGPIPE, SIG_IGN);
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      std::vector<std::string> argv{CAIRN_BINARY, "shell"};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> raw;
      for (std::string& a : argv)
        raw.push_back(a.data());
      raw.push_back(nullptr);
      execv(raw[0], raw.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    in_ = in[1];
    out_ = out[0];
    err_ = err[0];
  }
  ShellPipe(const ShellPipe&) = delete;
  ShellPipe& operator=(const ShellPipe&) = delete;
  ~ShellPipe() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    for (int fd : {in_, out_, err_})
      if (fd >= 0) close(fd);
  }

  void send(const std::string& line) {
    std::string text = line + "\n";
    if (write(in_, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
      throw std::runtime_error("write to the shell failed");
  }

  // The next line of stdout; nullopt if stdout ends first.
  std::optional<std::string> read_line() { return read_line_from(out_, out_buf_); }
  // The next line of stderr.
  std::optional<std::string> read_error() { return read_line_from(err_, err_buf_); }

  // Closes stdin and returns the exit status.
  int finish() {
    close(in_);
    in_ = -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  static std::optional<std::string> read_line_from(int fd, std::string& buf) {
    auto deadline = steady_clock::now() + patience;
    while (true) {
      if (auto nl = buf.find('\n'); nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
      if (left.count() <= 0) throw std::runtime_error("the shell printed no line");
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) < 0) continue;
      char chunk[4096];
      ssize_t n = read(fd, chunk, sizeof chunk);
      if (n == 0) return std::nullopt;
      if (n > 0) buf.append(chunk, static_cast<std::size_t>(n));
    }
  }

  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  std::string out_buf_, err_buf_;
};

// The shell on a pseudo-terminal, as a person at a terminal runs it, with HOME pointing at
// `home` (for ~/.cairn_history).
class ShellTerminal {
 public:
  ShellTerminal(const std::vector<std::string>& args, const std::string& home) {
    std::vector<std::string> argv{CAIRN_BINARY, "shell"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> env{"HOME=" + home, "TERM=dumb", "PATH=/usr/bin:/bin"};
    std::vector<char*> raw_argv, raw_env;
    for (std::string& a : argv)
      raw_argv.push_back(a.data());
    raw_argv.push_back(nullptr);
    for (std::string& e : env)
      raw_env.push_back(e.data());
    raw_env.push_back(nullptr);
    pid_ = forkpty(&master_, nullptr, nullptr, nullptr);
    if (pid_ < 0) throw std::runtime_error("forkpty");
    if (pid_ == 0) {
      execve(raw_argv[0], raw_argv.data(), raw_env.data());
      _exit(127);
    }
  }
  ShellTerminal(const ShellTerminal&) = delete;
  ShellTerminal& operator=(const ShellTerminal&) = delete;
  ~ShellTerminal() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(master_);
  }

  void type(const std::string& keys) {
    if (write(master_, keys.data(), keys.size()) != static_cast<ssize_t>(keys.size()))
      throw std::runtime_error("write to the terminal failed");
  }

  // Waits until the screen shows `text` after what earlier calls matched; false if the shell
  // ends first.
  bool expect(const std::string& text) {
    auto deadline = steady_clock::now() + patience;
    while (true) {
      if (auto at = screen_.find(text, seen_); at != std::string::npos) {
        seen_ = at + text.size();
        return true;
      }
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
      if (left.count() <= 0 || ended_) return false;
      read_more(static_cast<int>(left.count()));
    }
  }

  // Waits for `prompt`, then until the line editor has the terminal (it prints the prompt
  // first): keys typed before that go through the terminal's own line discipline, which turns a
  // Ctrl-D into an end-of-file marker the editor never sees.
  bool prompt(const std::string& text) {
    if (!expect(text)) return false;
    auto deadline = steady_clock::now() + patience;
    while (true) {
      termios mode{};
      if (tcgetattr(master_, &mode) != 0) return false;
      if ((mode.c_lflag & ICANON) == 0) return true;  // the editor reads key by key
      if (steady_clock::now() > deadline) return false;
      read_more(10);
    }
  }

  // Reads to the end and returns the exit status (killing a shell that does not end).
  int finish() {
    auto deadline = steady_clock::now() + patience;
    while (!ended_) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
      if (left.count() <= 0) break;
      read_more(static_cast<int>(left.count()));
    }
    if (!ended_) kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  const std::string& screen() const { return screen_; }

 private:
  // False when nothing came in time or the shell has gone.
  bool read_more(int timeout_ms) {
    if (ended_) return false;
    pollfd p{master_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char chunk[4096];
    ssize_t n = read(master_, chunk, sizeof chunk);
    if (n <= 0) {
      ended_ = true;  // EIO once the shell has exited
      return false;
    }
    screen_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int master_ = -1;
  std::string screen_;
  std::size_t seen_ = 0;
  bool ended_ = false;
};

// ---- on a file and in memory ----

enum class Backend { file, memory };

class ShellOn : public ::testing::TestWithParam<Backend> {
 protected:
  std::vector<std::string> store_args() const {
    if (GetParam() == Backend::memory) return {"--memory"};
    return {"--file", db_, "--fsync", "never"};
  }
  bool persistent() const { return GetParam() == Backend::file; }

  // One shell process running `commands` (-c).
  ProcessResult shell(const std::string& commands) const {
    std::vector<std::string> args{"shell"};
    for (const std::string& a : store_args())
      args.push_back(a);
    args.push_back("-c");
    args.push_back(commands);
    return cairn(args);
  }
  // One shell process reading `script` from stdin.
  ProcessResult shell_stdin(const std::string& script) const {
    std::vector<std::string> args{"shell"};
    for (const std::string& a : store_args())
      args.push_back(a);
    return cairn(args, script);
  }
  std::vector<std::string> pipe_args() const { return store_args(); }

  TempDir dir_;
  std::string db_ = dir_.file("shell.cairn");
};

INSTANTIATE_TEST_SUITE_P(Stores, ShellOn, ::testing::Values(Backend::file, Backend::memory),
                         [](const auto& param) {
                           return param.param == Backend::file ? "File" : "Memory";
                         });

TEST_P(ShellOn, SetThenGetRoundTripsEveryJsonKind) {
  ShellPipe sh(pipe_args());
  sh.send(R"(new /target {"a": 1})");
  sh.send("get /target");
  std::optional<std::string> ref_line = sh.read_line();
  ASSERT_TRUE(ref_line);
  std::uint64_t target = ref_oid(*ref_line);
  ASSERT_NE(target, 0u);

  std::vector<std::string> values = {
      "null",
      "true",
      "false",
      "0",
      "-42",
      "9223372036854775807",
      "1.5",
      "-2.5e-3",
      R"("plain")",
      R"("semi;colon \"quoted\" back\\slash\nnewline")",
      R"("h\u00e9llo \u2603")",
      "[]",
      R"([1, "two", null, [3.5]])",
      "{}",
      R"({"nested": {"deeper": [true, {"k": "v"}]}})",
      R"({"$bytes": "AP8Q"})",
      R"({"$bytes": ""})",
      R"({"$time": "2024-02-29T12:34:56.789012Z"})",
      R"({"$uuid": "12345678-9abc-4def-8123-456789abcdef"})",
      R"({"$decimal": "1.10"})",
      R"({"$decimal": "-12345678901234567890.000"})",
      R"({"$double": "nan"})",
      R"({"$double": "-inf"})",
      R"({"$map": {"$not_a_tag": 1}})",
      fmt::format(R"({{"$ref": {}}})", target),
      fmt::format(R"([{{"$ref": {}}}, {{"$ref": 0}}])", target),
      fmt::format(R"({{"owner": {{"$ref": {}}}, "when": {{"$time": "2000-01-01T00:00:00Z"}}}})",
                  target),
  };
  std::vector<Json> expected;
  for (std::size_t i = 0; i < values.size(); ++i) {
    sh.send(fmt::format("set /k{} {}", i, values[i]));
    sh.send(fmt::format("get /k{}", i));
    std::optional<std::string> got = sh.read_line();
    ASSERT_TRUE(got) << values[i];
    Json want = Json::parse(values[i]);
    if (values[i].find("$time\": \"2000") != std::string::npos) {
      want["when"]["$time"] = "2000-01-01T00:00:00.000000Z";  // printed with microseconds
    }
    EXPECT_EQ(Json::parse(*got), want) << values[i] << " came back as " << *got;
    EXPECT_EQ(got->find('\n'), std::string::npos);
    expected.push_back(want);
  }
  sh.send("commit");
  std::optional<std::string> commit = sh.read_line();
  ASSERT_TRUE(commit);
  EXPECT_GT(committed_csn(*commit), 0u) << *commit;
  EXPECT_EQ(sh.finish(), 0);
  EXPECT_FALSE(sh.read_error()) << "nothing on stderr";

  if (!persistent()) return;
  std::string script;
  for (std::size_t i = 0; i < values.size(); ++i)
    script += fmt::format("get /k{}\n", i);
  ProcessResult again = shell_stdin(script);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  std::vector<std::string> lines = lines_of(again.out);
  ASSERT_EQ(lines.size(), values.size()) << again.out;
  for (std::size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(Json::parse(lines[i]), expected[i]) << values[i];
}

// The root before its first commit is an untyped map, as after it: a reference to it naming
// another type was accepted as the first command on a new database.
TEST_P(ShellOn, AReferenceToTheRootNamingATypeIsRefusedBeforeItsFirstCommit) {
  for (const char* command :
       {R"(set /x {"$ref": 0, "$type": "Foo"})", R"(new /x {"r": {"$ref": 0, "$type": "Foo"}})"}) {
    ProcessResult r = shell(std::string(command) + "; commit");
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find("object 0 has type \"\"; the reference expects \"Foo\""),
              std::string::npos)
        << command << ": " << r.err;
    EXPECT_EQ(r.out.find("committed"), std::string::npos) << r.out;
  }
  ProcessResult ok = shell(R"(set /x {"$ref": 0}; set /y {"$ref": 0, "$type": ""}; get /x)");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "{\"$ref\":0}\n");
}

TEST_P(ShellOn, AJsonValueMaySpanLinesInACommandStringAndOnStdin) {
  ProcessResult c = shell("set /a [1,\n 2]; set /m {\"k\":\n{\"j\": 3}}\nget /a; get /m/k/j");
  EXPECT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out, "[1,2]\n3\n");
  ProcessResult in = shell_stdin("set /a [1,\n  2,\n  3]\nget /a\nset /b {\n\"x\": 1}; get /b/x\n");
  EXPECT_EQ(in.exit_code, 0) << in.err;
  EXPECT_EQ(in.out, "[1,2,3]\n1\n");
  ProcessResult unclosed = shell_stdin("get /missing_not_run\nset /a [1,\n");
  EXPECT_EQ(unclosed.exit_code, 1);
  EXPECT_NE(unclosed.err.find("no key"), std::string::npos) << unclosed.err;
  ProcessResult left_open = shell_stdin("set /a 1\nset /b [1,\n");
  EXPECT_EQ(left_open.exit_code, 1);
  EXPECT_NE(left_open.err.find("invalid JSON"), std::string::npos) << left_open.err;
}

TEST_P(ShellOn, NewStoresAReferenceAndPathsWalkThroughReferences) {
  ProcessResult r = shell(
      "new /users; "
      R"(new /users/harry {"name": "Harry", "tags": ["wizard", "seeker"]}; )"
      "get /users; get /users/harry; get /users/harry/; get /users/harry/name; "
      "get /users/harry/tags/1; "
      "set /users/harry/age 17; set /users/harry/tags/0 \"auror\"; set /users/harry/tags/- "
      "\"dad\"; "
      "get /users/harry/; get /; ls /users/harry; commit");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 11u) << r.out;
  std::uint64_t users = ref_oid(lines[0]);
  std::uint64_t harry = ref_oid(lines[1]);
  EXPECT_NE(users, harry);
  EXPECT_NE(users, 0u);
  EXPECT_EQ(Json::parse(lines[2]),
            Json::parse(R"({"name": "Harry", "tags": ["wizard", "seeker"]})"));
  EXPECT_EQ(lines[3], R"("Harry")");
  EXPECT_EQ(lines[4], R"("seeker")");
  EXPECT_EQ(Json::parse(lines[5]),
            Json::parse(R"({"age": 17, "name": "Harry", "tags": ["auror", "seeker", "dad"]})"));
  // The writes went into harry's object: the root still holds only the reference to users.
  EXPECT_EQ(Json::parse(lines[6]),
            Json::parse(fmt::format(R"({{"users": {{"$ref": {}}}}})", users)));
  EXPECT_EQ(lines[7], "age");
  EXPECT_EQ(lines[8], "name");
  EXPECT_EQ(lines[9], "tags");
  EXPECT_NO_THROW(committed_csn(lines[10])) << lines[10];

  if (!persistent()) return;
  // What was written through the references was committed in the objects that hold it.
  ProcessResult again = shell("get /users/harry/; get /users/harry/tags/2");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(lines_of(again.out),
            (std::vector<std::string>{
                R"({"age":17,"name":"Harry","tags":["auror","seeker","dad"]})", R"("dad")"}));
  // A committed object changed through a path is written again, not the root that leads to it.
  ProcessResult change = shell("set /users/harry/age 18; del /users/harry/tags/0; commit");
  ASSERT_EQ(change.exit_code, 0) << change.err;
  ProcessResult changed = shell("get /users/harry/; get /");
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_EQ(
      lines_of(changed.out),
      (std::vector<std::string>{R"({"age":18,"name":"Harry","tags":["seeker","dad"]})", lines[6]}));
  // cairn check finds every reference the shell made pointing at a live object.
  ProcessResult check = cairn({"check", db_});
  EXPECT_EQ(check.exit_code, 0) << check.out;
}

TEST_P(ShellOn, ATrailingSlashSetReplacesTheReferencedObjectAndNewAppendsToAList) {
  ProcessResult r = shell(
      R"(new /o {"a": 1}; set /o/ {"b": 2}; get /o/; get /o/b; set /l []; new /l/- {"i": 0}; )"
      R"(new /l/- {"i": 1}; get /l/1/i; ls /l)");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{R"({"b":2})", "2", "1", "0", "1"}));
}

TEST_P(ShellOn, QuotedPathsAndEscapedSlashesNameAnyKey) {
  ProcessResult r =
      shell(R"(set "/with space" 1; set /a~1b 2; set /t~0 3; ls; get "/with space"; get /a~1b)");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"a/b", "t~", "with space", "1", "2"}));
}

TEST_P(ShellOn, LsListsSortedMapKeysAndListIndexes) {
  ProcessResult r =
      shell(R"(set /m {"pear": 1, "apple": 2, "fig": {"x": 1}}; set /l [10, 20, 30]; set /e {}; )"
            "ls /m; ls /l; ls /e; ls; ls /");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"apple", "fig", "pear", "0", "1", "2", "e",
                                                       "l", "m", "e", "l", "m"}));
}

// One key a line: a key holding a newline used to print as two lines, and an empty one as a
// blank line. Such keys print as JSON strings, whose text a PATH in double quotes takes.
TEST_P(ShellOn, LsPrintsKeysThatAreNotOnePlainLineAsJsonStrings) {
  const std::string map = R"(set /m {"two\nlines": 1, "": 2, "\"q": 3, "tab\there": 4, "ok": 5}; )";
  ProcessResult r = shell(map + "ls /m");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> keys = lines_of(r.out);
  EXPECT_EQ(keys, (std::vector<std::string>{R"("")", R"("\"q")", "ok", R"("tab\there")",
                                            R"("two\nlines")"}));
  std::string gets;
  for (const std::string& key : keys) {
    if (key == R"("")") continue;  // "/m/" would follow a reference at /m
    gets +=
        key.front() == '"' ? fmt::format("get \"/m/{}; ", key.substr(1)) : "get /m/" + key + "; ";
  }
  ProcessResult back = shell(map + gets);
  EXPECT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(lines_of(back.out), (std::vector<std::string>{"3", "5", "4", "1"})) << back.err;
}

TEST_P(ShellOn, DelRemovesMapKeysAndListElements) {
  ProcessResult r =
      shell(R"(set /m {"a": 1, "b": 2}; set /l ["x", "y", "z"]; new /o {"k": 1, "j": 2}; )"
            "del /m/a; del /l/1; del /o/k; get /m; get /l; get /o/; ls");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out),
            (std::vector<std::string>{R"({"b":2})", R"(["x","z"])", R"({"j":2})", "l", "m", "o"}));
}

TEST_P(ShellOn, CommitPrintsTheNewCsnEachTime) {
  ProcessResult r = shell("set /a 1; commit; set /a 2; commit; info");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  ASSERT_GE(lines.size(), 2u) << r.out;
  std::uint64_t first = committed_csn(lines[0]);
  std::uint64_t second = committed_csn(lines[1]);
  EXPECT_GT(second, first);
  EXPECT_NE(r.out.find(fmt::format("\nlast csn: {}\n", second)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nuncommitted changes: no\n"), std::string::npos) << r.out;
}

TEST_P(ShellOn, AbortRevertsEverythingUncommitted) {
  ProcessResult r =
      shell(R"(set /a 1; set /l [1]; commit; set /a 2; set /b 3; set /l/- 2; new /n; del /l/0; )"
            "info; abort; get /a; get /l; ls; info");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string out = r.out;
  std::size_t first_info = out.find("uncommitted changes: yes\n");
  ASSERT_NE(first_info, std::string::npos) << out;
  std::vector<std::string> after = lines_of(out.substr(first_info));
  ASSERT_GE(after.size(), 6u) << out;
  EXPECT_EQ(after[1], "1");
  EXPECT_EQ(after[2], "[1]");
  EXPECT_EQ(after[3], "a");
  EXPECT_EQ(after[4], "l");
  EXPECT_NE(out.find("uncommitted changes: no\n", first_info), std::string::npos) << out;
}

TEST_P(ShellOn, SemicolonsInsideJsonStringsAndBracketsDoNotSplitCommands) {
  ProcessResult r =
      shell(R"(set /s "a;b"; set /q "say \"hi;\" ; ok"; set /l [";", {"k": "x;y"}, [";"]]; )"
            R"(set /m {"a;b": ";"};get /s;get /q; get /l; ls /m)");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{R"("a;b")", R"("say \"hi;\" ; ok")",
                                                       R"([";",{"k":"x;y"},[";"]])", "a;b"}));
}

TEST_P(ShellOn, StdinScriptsSkipBlankLinesAndComments) {
  ProcessResult r = shell_stdin(
      "# a comment\n"
      "\n"
      "   \n"
      "set /a 1\n"
      "  # an indented comment; get /nothing\n"
      "set /b [1, 2]; get /b\n"
      "get /a\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[1,2]\n1\n");
  EXPECT_EQ(r.err, "");
}

TEST_P(ShellOn, QuitStopsTheScriptWithStatusZero) {
  ProcessResult r = shell("get /; quit; get /nothing");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{}\n");
  ProcessResult e = shell_stdin("exit\nget /nothing\n");
  EXPECT_EQ(e.exit_code, 0) << e.err;
}

TEST_P(ShellOn, HelpListsEveryCommand) {
  ProcessResult r = shell("help");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* command : {"get PATH", "set PATH JSON", "new PATH [JSON]", "del PATH",
                              "ls [PATH]", "commit", "abort", "sync", "info", "help", "quit"})
    EXPECT_NE(r.out.find(command), std::string::npos) << command << "\n" << r.out;
}

TEST_P(ShellOn, InfoDescribesTheStoreAndTheSession) {
  ProcessResult r = shell("set /a 1; commit; set /b 2; info");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::uint64_t csn = committed_csn(lines_of(r.out).at(0));
  EXPECT_NE(r.out.find(persistent() ? "\nstore: file\n" : "\nstore: memory\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(fmt::format("\nlast csn: {}\n", csn)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(fmt::format("\nsnapshot csn: {}\n", csn)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nobjects cached: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nuncommitted changes: yes\n"), std::string::npos) << r.out;
  if (persistent()) {
    EXPECT_NE(r.out.find("\npath: " + db_ + "\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\nfsync policy: never\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\nobjects: 1\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\nfile bytes: "), std::string::npos) << r.out;
  }
}

TEST_P(ShellOn, OutputIsWrittenAsEachCommandRuns) {
  // A program can drive the shell one command at a time through pipes.
  ShellPipe sh(pipe_args());
  sh.send("set /n 41");
  sh.send("get /n");
  EXPECT_EQ(sh.read_line(), "41");
  sh.send("set /n 42");
  sh.send("get /n");
  EXPECT_EQ(sh.read_line(), "42");
  sh.send("commit");
  std::optional<std::string> commit = sh.read_line();
  ASSERT_TRUE(commit);
  EXPECT_NO_THROW(committed_csn(*commit));
  EXPECT_EQ(sh.finish(), 0);
}

// Every way a command can fail: one "error: ..." line on stderr, exit status 1, and nothing after
// the failing command runs.
struct BadCommand {
  const char* command;
  const char* message;  // part of the error line
};

TEST_P(ShellOn, EveryFailingCommandPrintsOneErrorLineAndStopsTheScriptWithStatusOne) {
  const BadCommand cases[] = {
      {"get a", "does not start with /"},
      {"get /a//b", "empty segment"},
      {"get /a~2", "~"},
      {"get /l/x", "not an index"},
      {"get /l/-", "not an index"},
      {"get /l/7", "no index 7"},
      {"get /missing", "no key \"missing\""},
      {"get /m/missing", "/m has no key \"missing\""},
      {"get /m/inner/missing", "/m/inner has no key \"missing\""},
      {"get /a/b", "/a is an int, not a map or list"},
      {"get", "needs a PATH"},
      {"get /a /b", "usage: get PATH"},
      {"get \"/a", "no end"},
      {"set /b {nope", "invalid JSON"},
      {"set /b [1,", "invalid JSON"},
      {"set /b hello", "invalid JSON"},
      {"set /b {\"$ref\": \"x\"}", "$ref"},
      {"set /b {\"$time\": \"yesterday\"}", "invalid JSON value"},
      {"set /b {\"$ref\": 999999}", "names no object"},
      {"set /b", "usage: set PATH JSON"},
      {"set /a/b 1", "/a is an int, not a map or list"},
      {"set /s/x 1", "/s is a string, not a map or list"},
      {"set /l/3 1", "no index 3"},
      {"set / 5", "the root is a map"},
      {"set /missing/x 1", "no key \"missing\""},
      {"new /n [1]", "takes a JSON object, not a list"},
      {"new /n 5", "takes a JSON object, not an int"},
      {"new /n \"x\"", "not a string"},
      {"new /n {\"$ref\": 0}", "not a ref"},
      {"new /", "is an object"},
      {"new /a/b", "/a is an int"},
      {"del /missing", "no key \"missing\""},
      {"del /l/9", "no index 9"},
      {"del /", "cannot remove the root"},
      {"del /m/", "trailing /"},
      // A trailing / follows a reference; it was ignored at anything else, so set /m/ 1
      // replaced the map.
      {"set /m/ 1", "/m is a map, not a reference"},
      {"new /m/", "/m is a map, not a reference"},
      {"get /a/", "/a is an int, not a reference"},
      {"ls /m/", "/m is a map, not a reference"},
      {"set /nothing/ 1", "no key \"nothing\""},
      {"set /l/-/ 1", "- appends to a list"},
      {"set /l/01 5", "\"01\" is not an index"},
      {"ls /a", "/a is an int, not a map or list"},
      {"ls /missing", "no key"},
      {"frobnicate /a", "unknown command \"frobnicate\""},
      {"GET /a", "unknown command \"GET\""},
      {"commit now", "usage: commit"},
      {"abort 1", "usage: abort"},
      {"quit now", "usage: quit"},
  };
  const std::string setup = R"(set /a 1; set /s "str"; set /l [1, 2]; set /m {"inner": {}}; )";
  for (const BadCommand& bad : cases) {
    SCOPED_TRACE(bad.command);
    ProcessResult r = shell(setup + bad.command + "; get /a; commit");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(error_lines(r.err), 1) << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
    EXPECT_TRUE(r.err.starts_with("error: ")) << r.err;
    EXPECT_NE(r.err.find(bad.message), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << "the commands after the failing one ran";
  }
  if (persistent()) {
    // Nothing of the failed scripts was committed.
    ProcessResult ls = shell("ls");
    EXPECT_EQ(ls.exit_code, 0) << ls.err;
    EXPECT_EQ(ls.out, "");
  }
}

TEST_P(ShellOn, AKeyWithAQuoteInAPlainPathIsJustAKey) {
  ProcessResult r = shell(R"(set /a"b 1; get /a"b; ls)");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1\na\"b\n");
}

// A NUL byte ended the JSON value there, and what followed it was ignored.
TEST_P(ShellOn, ANulByteInAValueIsAnError) {
  ProcessResult r = shell_stdin(std::string("set /a 5\0 6 junk\nget /a\n", 24));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("error: invalid JSON at byte 2: a NUL byte"), std::string::npos) << r.err;
}

TEST_P(ShellOn, AFailingCommandInAStdinScriptExitsOneAfterTheCommandsBeforeIt) {
  ProcessResult r = shell_stdin("set /a 1\nget /a\nget /nope\nget /a\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(r.err, "error: / has no key \"nope\"\n");
}

// ---- only on a file ----

class ShellFile : public ::testing::Test {
 protected:
  ProcessResult shell(const std::string& commands, const std::string& input = "") const {
    return cairn({"shell", "--file", db_, "-c", commands}, input);
  }
  TempDir dir_;
  std::string db_ = dir_.file("shell.cairn");
};

TEST_F(ShellFile, ASecondProcessSeesCommittedChangesOnly) {
  ProcessResult first = shell("set /a 1; set /l [1]; commit; set /a 2; set /b 3; del /l/0");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ProcessResult second = shell("get /a; get /l; ls");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(lines_of(second.out), (std::vector<std::string>{"1", "[1]", "a", "l"}));
}

TEST_F(ShellFile, AcceptsAFileUrlAndCreatesTheDatabase) {
  ProcessResult r = cairn({"shell", "--file", "file:" + db_, "-c", "set /x 1; commit"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(db_));
  ProcessResult info = cairn({"info", db_});
  EXPECT_NE(info.out.find("\nobjects: 1\n"), std::string::npos) << info.out;
}

TEST_F(ShellFile, ADatabaseInUseFailsWithStatusOneNamingItsHolder) {
  auto holder = FileStore::open(db_);
  ProcessResult r = shell("ls");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(fmt::format("in use by pid {}", getpid())), std::string::npos) << r.err;
}

TEST_F(ShellFile, ReadsWhatTheLibraryWrote) {
  {
    Database db(FileStore::open(db_));
    Connection conn = db.connect();
    Object user = conn.create(Value::Map{{"name", "Ginny"}}, "User", "ginny");
    conn.root().set("users", Value::List{Ref{user.oid(), "User"}});
    conn.commit();
  }
  ProcessResult r = shell("get /users/0; get /users/0/name; ls /users/0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(Json::parse(lines[0]).at("$type"), "User");
  EXPECT_EQ(lines[1], R"("Ginny")");
  EXPECT_EQ(lines[2], "name");
  // A reference naming a type is checked against the object.
  ProcessResult wrong =
      shell(fmt::format(R"(set /r {{"$ref": {}, "$type": "Group"}})", ref_oid(lines[0])));
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("\"User\""), std::string::npos) << wrong.err;
}

// ---- flags ----

TEST(ShellFlags, HelpExitsZeroAndDescribesTheCommands) {
  ProcessResult r = cairn({"shell", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* text :
       {"Usage: cairn shell", "--file", "--memory", "--connect", "-c", "get PATH", "commit"})
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  ProcessResult top = cairn({"--help"});
  EXPECT_NE(top.out.find("shell"), std::string::npos) << top.out;
}

TEST(ShellFlags, UsageErrorsExitTwo) {
  TempDir dir;
  std::string db = dir.file("x.cairn");
  const std::vector<std::vector<std::string>> bad = {
      {"shell"},
      {"shell", "-c", "ls"},
      {"shell", "--memory", "--file", db},
      {"shell", "--memory", "--connect", "localhost:2972"},
      {"shell", "--file", db, "--connect", "localhost:2972"},
      {"shell", "--memory", "--token", "t"},
      {"shell", "--memory", "--fsync", "never"},
      {"shell", "--file", db, "--fsync", "sometimes"},
      {"shell", "--file"},
      {"shell", "--memory", "-c"},
      {"shell", "--memory", "extra"},
      {"shell", "--memory", "--bogus"},
      {"shell", "--connect", "localhost:notaport"},
  };
  for (const auto& args : bad) {
    ProcessResult r = cairn(args);
    std::string shown;
    for (const std::string& a : args)
      shown += a + " ";
    EXPECT_EQ(r.exit_code, 2) << shown << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << shown;
    EXPECT_EQ(r.out, "") << shown;
  }
  EXPECT_FALSE(fs::exists(db)) << "a usage error created the database";
  ProcessResult none = cairn({"shell"});
  EXPECT_NE(none.err.find("exactly one of --file PATH, --memory or --connect"), std::string::npos)
      << none.err;
}

TEST(ShellFlags, ConnectToNoServerSaysSoAndExitsOne) {
  // Port 1 (tcpmux) has nothing listening on any machine these tests run on.
  ProcessResult r = cairn({"shell", "--connect", "127.0.0.1:1", "--token", "s3cret"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot connect to 127.0.0.1:1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("s3cret"), std::string::npos) << "the token was printed: " << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(ShellFlags, AnEmptyCommandListDoesNothing) {
  ProcessResult r = cairn({"shell", "--memory", "-c", "  ;; # nothing"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
}

// ---- at a terminal ----

TEST(ShellTerminalTest, EditsLinesKeepsGoingAfterErrorsAndKeepsHistory) {
  TempDir dir;
  std::string db = dir.file("t.cairn");
  {
    ShellTerminal term({"--file", db}, dir.path());
    ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
    term.type("set /a 12345\n");
    ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();  // uncommitted changes
    term.type("get /nope\n");
    ASSERT_TRUE(term.expect("error: / has no key \"nope\"")) << term.screen();
    ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
    term.type("commit\n");
    ASSERT_TRUE(term.expect("committed ")) << term.screen();
    ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
    term.type("get /a\n");
    ASSERT_TRUE(term.expect("get /a\r\n12345\r\n")) << term.screen();
    ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
    term.type("quit\n");
    EXPECT_EQ(term.finish(), 0) << term.screen();
  }
  std::string history = read_file(dir.file(".cairn_history"));
  EXPECT_NE(history.find("commit"), std::string::npos) << history;
  {
    // The history is there in the next session: Ctrl-P twice goes back past "quit" to "get /a".
    ShellTerminal term({"--file", db}, dir.path());
    ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
    term.type("\x10\x10\n");
    ASSERT_TRUE(term.expect("12345\r\n")) << term.screen();
    ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
    term.type("set /b 1\n");
    ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
    term.type("\x04");  // Ctrl-D: end of input
    EXPECT_EQ(term.finish(), 0) << term.screen();
    EXPECT_NE(term.screen().find("uncommitted changes dropped"), std::string::npos)
        << term.screen();
  }
  ProcessResult r = cairn({"shell", "--file", db, "-c", "ls"});
  EXPECT_EQ(r.out, "a\n") << "the uncommitted /b was dropped";
}

// Ctrl-C cancels the line being typed, as in psql or Python's prompt; it used to end the shell
// and drop the uncommitted changes.
TEST(ShellTerminalTest, CtrlCCancelsTheLineAndKeepsTheSession) {
  TempDir dir;
  ShellTerminal term({"--memory"}, dir.path());
  ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
  term.type("set /a 1\n");
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("set /b 2");
  term.type("\x03");  // Ctrl-C
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("set /c [1,\n");
  ASSERT_TRUE(term.prompt("...> ")) << term.screen();  // the list is still open
  term.type("\x03");
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("ls\n");
  ASSERT_TRUE(term.expect("ls\r\na\r\n")) << term.screen();
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("quit\n");
  EXPECT_EQ(term.finish(), 0) << term.screen();
  EXPECT_EQ(term.screen().find("\r\nb\r\n"), std::string::npos) << term.screen();
  EXPECT_EQ(term.screen().find("\r\nc\r\n"), std::string::npos) << term.screen();
}

// Ctrl-C is a key while a line is edited, so Ctrl-Z and Ctrl-\ must be sent as the terminal
// would send them. (The test's shell leads a session of its own, an orphaned process group, so
// the kernel discards its SIGTSTP: Ctrl-Z must leave it working. Ctrl-\ quits it.)
TEST(ShellTerminalTest, CtrlZAndCtrlBackslashStillSignal) {
  rlimit no_core{0, 0};
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &no_core), 0);  // SIGQUIT dumps none
  TempDir dir;
  ShellTerminal term({"--memory"}, dir.path());
  ASSERT_TRUE(term.prompt("cairn> ")) << term.screen();
  term.type("set /a 7\n");
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("\x1a");  // Ctrl-Z
  term.type("get /a\n");
  ASSERT_TRUE(term.expect("7\r\n")) << term.screen();
  ASSERT_TRUE(term.prompt("cairn*> ")) << term.screen();
  term.type("\x1c");  // Ctrl-backslash
  EXPECT_EQ(term.finish(), 128 + SIGQUIT) << term.screen();
}

// ---- the command layer in this process, with a second connection for conflicts ----

class ShellSessionTest : public ::testing::Test {
 protected:
  ShellSessionTest() : db_(make_memory_store()), session_(db_, "memory") {}

  // Runs one command; returns what it printed on stdout and stderr.
  std::pair<std::string, std::string> run(const std::string& command,
                                          cli::ShellSession::Outcome want) {
    std::ostringstream out, err;
    cli::ShellSession::Outcome got = session_.run(command, out, err);
    EXPECT_EQ(got, want) << command << ": " << err.str();
    return {out.str(), err.str()};
  }
  std::string ok(const std::string& command) {
    auto [out, err] = run(command, cli::ShellSession::Outcome::ok);
    EXPECT_EQ(err, "") << command;
    return out;
  }
  std::string fails(const std::string& command) {
    auto [out, err] = run(command, cli::ShellSession::Outcome::failed);
    EXPECT_EQ(out, "") << command;
    return err;
  }

  Database db_;
  cli::ShellSession session_;
};

TEST_F(ShellSessionTest, ACommitThatLostARacePrintsTheOidsAndLeavesTheShellAbortedAndSynced) {
  ok("set /x 1");
  ok("commit");
  ok("get /x");  // reads the root
  ok("set /mine 5");
  Connection other = db_.connect();
  other.root().set("x", 2);
  std::uint64_t theirs = other.commit();

  std::string err = fails("commit");
  EXPECT_EQ(lines_of(err).size(), 1u) << err;
  EXPECT_TRUE(err.starts_with("error: conflict on oids 0")) << err;
  EXPECT_NE(err.find(fmt::format("csn {}", theirs)), std::string::npos) << err;
  // Aborted and synced: the shell's change is gone and the other commit is visible.
  EXPECT_FALSE(session_.has_changes());
  EXPECT_EQ(session_.snapshot_csn(), theirs);
  EXPECT_EQ(ok("get /x"), "2\n");
  EXPECT_EQ(ok("ls"), "x\n");
  EXPECT_NE(ok("info").find("uncommitted changes: no\n"), std::string::npos);
  // And it works on: the retried transaction commits.
  ok("set /mine 6");
  std::string committed = ok("commit");
  EXPECT_EQ(committed_csn(committed.substr(0, committed.size() - 1)), theirs + 1);
  Connection check = db_.connect();
  EXPECT_EQ(check.root().get("mine"), Value(6));
}

// The conflict line says why, as the error does: here that the server was started again (as
// another instance), not that another commit changed the root (none did).
TEST(ShellSessionOverAServer, AConflictAfterTheServerRestartedSaysSo) {
  TestServer server(make_memory_store());
  Database db(server.connect());
  cli::ShellSession session(db, "server");
  std::ostringstream out, err;
  ASSERT_EQ(session.run("get /", out, err), cli::ShellSession::Outcome::ok) << err.str();
  server.restart_over(make_memory_store());
  ASSERT_EQ(session.run("set /a 1", out, err), cli::ShellSession::Outcome::ok) << err.str();
  std::ostringstream failed;
  ASSERT_EQ(session.run("commit", out, failed), cli::ShellSession::Outcome::failed);
  std::string line = failed.str();
  EXPECT_TRUE(line.starts_with("error: conflict on oids 0: ")) << line;
  EXPECT_NE(line.find("started again"), std::string::npos) << line;
  EXPECT_EQ(line.find("another commit changed them"), std::string::npos) << line;
}

TEST_F(ShellSessionTest, AReadThatCannotKeepTheSnapshotIsAConflict) {
  Connection other = db_.connect();
  Object y = other.create(Value::Map{{"v", 1}});
  other.root().set("y", y.ref());
  other.commit();
  ok("get /");  // reads the root; y is not loaded yet
  y.mutate().as_map().insert_or_assign("v", 2);
  other.root().set("touched", true);
  std::uint64_t theirs = other.commit();

  std::string err = fails("get /y/v");  // loading y finds it newer than the snapshot
  EXPECT_TRUE(err.starts_with("error: conflict on oids 0")) << err;
  EXPECT_EQ(lines_of(err).size(), 1u) << err;
  EXPECT_EQ(session_.snapshot_csn(), theirs);
  EXPECT_EQ(ok("get /y/v"), "2\n");
}

TEST_F(ShellSessionTest, SyncWithChangesOverAStaleReadIsAConflict) {
  ok("set /x 1");
  ok("commit");
  ok("set /x 5");  // reads and changes the root
  Connection other = db_.connect();
  other.root().set("x", 2);
  other.commit();

  std::string err = fails("sync");
  EXPECT_TRUE(err.starts_with("error: conflict on oids 0")) << err;
  EXPECT_FALSE(session_.has_changes());
  EXPECT_EQ(ok("get /x"), "2\n");
}

TEST_F(ShellSessionTest, SyncAndAbortShowOtherCommits) {
  ok("set /x 1");
  ok("commit");
  ok("get /x");
  Connection other = db_.connect();
  other.root().set("x", 2);
  other.commit();
  EXPECT_EQ(ok("get /x"), "1\n") << "the snapshot holds until sync";
  ok("sync");
  EXPECT_EQ(ok("get /x"), "2\n");
  other.root().set("x", 3);
  other.commit();
  ok("abort");
  EXPECT_EQ(ok("get /x"), "3\n");
}

TEST_F(ShellSessionTest, WritesThroughAPathChangeTheObjectThatHoldsTheValue) {
  Connection other = db_.connect();
  Object inner = other.create(Value::Map{{"list", Value::List{1, 2}}});
  other.root().set("r", inner.ref());
  other.commit();

  ok("set /r/list/0 10");
  ok("set /r/n 3");
  ok("commit");
  other.sync();
  EXPECT_EQ(other.get(inner.oid()).get(),
            (Value(Value::Map{{"list", Value::List{10, 2}}, {"n", 3}})));
  ok("del /r/list/1");
  ok("commit");
  other.sync();
  EXPECT_EQ(other.get(inner.oid()).get(), (Value(Value::Map{{"list", Value::List{10}}, {"n", 3}})));
}

TEST_F(ShellSessionTest, AFailedCommandChangesNothing) {
  // From a terminal the shell goes on after an error: the failed command must leave no change.
  ok("set /a 1");
  ok("new /o");
  ok("commit");
  for (const char* command : {"set /a/b 2", "new /a/b", "new /x 5", R"(set /r {"$ref": 999})",
                              "del /zz", "set / [1]", "del /o/"}) {
    fails(command);
    EXPECT_FALSE(session_.has_changes()) << command;
  }
  EXPECT_EQ(ok("ls"), "a\no\n");
  EXPECT_EQ(ok("get /a"), "1\n");
  EXPECT_EQ(ok("get /o/"), "{}\n");
}

TEST(ShellSplit, SplitsAtSemicolonsAndNewlinesOutsideJson) {
  using cli::split_commands;
  EXPECT_EQ(split_commands("a; b ;c"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(split_commands("set /a \"x;y\"; get /a"),
            (std::vector<std::string>{"set /a \"x;y\"", "get /a"}));
  EXPECT_EQ(split_commands(R"(set /a "\";"; b)"),
            (std::vector<std::string>{R"(set /a "\";")", "b"}));
  EXPECT_EQ(split_commands(R"(set /a {"k": [";", {"j": ";"}]}; b)"),
            (std::vector<std::string>{R"(set /a {"k": [";", {"j": ";"}]})", "b"}));
  EXPECT_EQ(split_commands("a\nb; c\n\n# d; e\n  ;  ; f # g"),
            (std::vector<std::string>{"a", "b", "c", "f # g"}));
  EXPECT_EQ(split_commands("set /a \"unterminated; b"),
            (std::vector<std::string>{"set /a \"unterminated; b"}));
  // A quote inside a plain word (a key holding `"`) opens no string: it took the separators
  // after it along.
  EXPECT_EQ(split_commands("set /a\"b 1; ls"), (std::vector<std::string>{"set /a\"b 1", "ls"}));
  EXPECT_EQ(split_commands("get /x\"y; get /x"), (std::vector<std::string>{"get /x\"y", "get /x"}));
  EXPECT_EQ(split_commands("get \"/x;y\"; ls"), (std::vector<std::string>{"get \"/x;y\"", "ls"}));
}

// A set's or new's JSON value may span lines while its brackets are open. Only its brackets
// count, so a stray one in a path or another command spoils that line only; a string ends with
// its line; a comment's brackets do not count.
TEST(ShellSplit, ASetOrNewValueGoesOnWhileItsBracketsAreOpen) {
  using cli::split_commands;
  using Commands = std::vector<std::string>;
  EXPECT_EQ(split_commands("set /a [1,\n2]; get /a"), (Commands{"set /a [1,\n2]", "get /a"}));
  EXPECT_EQ(split_commands("set /m {\n  \"k\": [\n    1,\n    2\n  ]\n}\nget /m"),
            (Commands{"set /m {\n  \"k\": [\n    1,\n    2\n  ]\n}", "get /m"}));
  EXPECT_EQ(split_commands("new /n {\n\n  \"x\": \"a;b\"\n}"),
            (Commands{"new /n {\n\n  \"x\": \"a;b\"\n}"}));
  EXPECT_EQ(split_commands("set /a [1, 2\n]\nget /c"), (Commands{"set /a [1, 2\n]", "get /c"}));
  EXPECT_EQ(split_commands("get \"/a\nget /b"), (Commands{"get \"/a", "get /b"}));
  EXPECT_EQ(split_commands("get /a{b\nls /[\nget /c"), (Commands{"get /a{b", "ls /[", "get /c"}));
  EXPECT_EQ(split_commands("new /a{b {\"k\": 1}\nset \"/[\" [1]\nget /c"),
            (Commands{"new /a{b {\"k\": 1}", "set \"/[\" [1]", "get /c"}));
  EXPECT_EQ(split_commands("set /a 1; # todo [\ncommit"), (Commands{"set /a 1", "commit"}));
  EXPECT_EQ(split_commands("# [\nget /a"), (Commands{"get /a"}));
  EXPECT_EQ(split_commands("set /a [1,"), (Commands{"set /a [1,"}));

  cli::CommandSplitter splitter;
  EXPECT_EQ(splitter.feed("get /a; set /b [1,"), (std::vector<std::string>{"get /a"}));
  EXPECT_TRUE(splitter.open());
  EXPECT_EQ(splitter.feed("2]; get /b"), (std::vector<std::string>{"set /b [1,\n2]", "get /b"}));
  EXPECT_FALSE(splitter.open());
  splitter.feed("set /c {");
  splitter.reset();
  EXPECT_EQ(splitter.feed("get /c"), (std::vector<std::string>{"get /c"}));
}

// A standard input that cannot be read (here a directory) ended the shell with status 0 and
// nothing said, as if the script had been empty.
TEST(ShellFlags, StandardInputThatCannotBeReadFailsTheShell) {
  TempDir dir;
  ProcessResult r =
      run_process({"/bin/sh", "-c", std::string(CAIRN_BINARY) + " shell --memory < " + dir.path()});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.err, "cairn: cannot read standard input: Is a directory\n");
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace cairn::testing
