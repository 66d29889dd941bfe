// The RedisStore scenarios and their peers: redis-benchmark and plain hiredis, against a
// redis-server the bench starts for itself on a free port, in the scenario's scratch directory.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <thread>

#include "bench/bench.h"
#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/store.h"
#include "store/redis_ptr.h"

extern char** environ;

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Whether `name` is an executable file in a directory on PATH.
bool on_path(std::string_view name) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (true) {
    auto colon = dirs.find(':');
    std::string candidate = fmt::format("{}/{}", dirs.substr(0, colon), name);
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) return false;
    dirs.remove_prefix(colon + 1);
  }
}

// A port nobody listens on right now (the kernel's choice for an ephemeral bind).
std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw IoError("bench: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  if (!ok) throw IoError("bench: cannot find a free port");
  return ntohs(addr.sin_port);
}

RedisContextPtr connect_to(std::uint16_t port) {
  timeval timeout{2, 0};
  RedisContextPtr c(redisConnectWithTimeout("127.0.0.1", port, timeout));
  if (!c || c->err != 0) return nullptr;
  redisSetTimeout(c.get(), timeout);
  return c;
}

// Runs a program to completion and returns what it wrote to stdout.
std::string capture(std::vector<std::string> args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw IoError("bench: pipe() failed");
  std::vector<char*> argv;
  for (std::string& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw IoError(fmt::format("bench: cannot run {}", args[0]));
  }
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw IoError(fmt::format("bench: {} failed", args[0]));
  }
  return out;
}

// A redis-server of the bench's own, persistence off, on a free port; stopped when destroyed.
class BenchRedis {
 public:
  explicit BenchRedis(const std::string& dir) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (start(dir, free_port())) return;
    }
    throw IoError(fmt::format("bench: redis-server did not start (see {}/redis.log)", dir));
  }
  BenchRedis(const BenchRedis&) = delete;
  BenchRedis& operator=(const BenchRedis&) = delete;
  ~BenchRedis() { stop(); }

  std::uint16_t port() const { return port_; }
  std::string url(std::string_view prefix) const {
    return fmt::format("redis://127.0.0.1:{}/0?prefix={}", port_, prefix);
  }

 private:
  bool start(const std::string& dir, std::uint16_t port) {
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir,
                                     "--logfile",
                                     dir + "/redis.log"};
    std::vector<char*> argv;
    for (std::string& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw IoError("bench: cannot run redis-server");
    port_ = port;
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;  // exited: most likely the port was taken meanwhile
        return false;
      }
      if (RedisContextPtr c = connect_to(port)) {
        RedisReplyPtr r(static_cast<redisReply*>(redisCommand(c.get(), "PING")));
        if (r && r->type == REDIS_REPLY_STATUS) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop();
    return false;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

// Why a Redis scenario cannot run here, if it cannot.
std::optional<std::string> missing_redis_tools() {
  for (const char* tool : {"redis-server", "redis-benchmark"}) {
    if (!on_path(tool)) return fmt::format("{} is not installed", tool);
  }
  return std::nullopt;
}

// The best of `repeats` rates of each, alternating so that both see the same moments of a
// noisy machine.
template <class A, class B>
std::pair<double, double> best_of(int repeats, A&& cairn, B&& peer) {
  double best_a = 0;
  double best_b = 0;
  for (int i = 0; i < repeats; ++i) {
    best_a = std::max(best_a, cairn());
    best_b = std::max(best_b, peer());
  }
  return {best_a, best_b};
}

// ---- redis.commit_1 ----

// One thread, n commits of one small object (a one-field map, so one hash field), each its own
// round trip through the commit script.
double cairn_single_commits(const BenchRedis& redis, std::uint64_t n) {
  auto store = open(redis.url("bench_commit:"));
  Oid oid = store->new_oids(1);
  CommitRequest req;
  req.writes.push_back(WriteOp{oid, "", "", encode(Value(Value::Map{{"n", 1}}))});
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < n; ++i)
    store->commit(req);
  return static_cast<double>(n) / seconds_since(start);
}

// `redis-benchmark -c 1 -n N -t set -q`: its requests per second.
double redis_benchmark_set(const BenchRedis& redis, std::uint64_t n) {
  std::string out =
      capture({"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(redis.port()), "-c", "1",
               "-n", std::to_string(n), "-t", "set", "-q"});
  // The last line reads "SET: 17301.04 requests per second, p50=0.055 msec".
  auto end = out.rfind(" requests per second");
  auto begin = out.rfind("SET: ", end);
  if (end == std::string::npos || begin == std::string::npos) {
    throw Error(fmt::format("bench: cannot read redis-benchmark's output: {}", out));
  }
  begin += 5;
  return std::strtod(out.substr(begin, end - begin).c_str(), nullptr);
}

Result commit_1(Context& ctx) {
  const char* name = "redis.commit_1";
  if (auto why = missing_redis_tools()) return skipped(name, "commits/s", "redis_set_1", 0.6, *why);
  std::uint64_t n = ctx.size(5'000, 50'000);
  ctx.progress(fmt::format("{} one-object commits vs redis-benchmark -c 1 -t set", n));
  BenchRedis redis(ctx.dir);
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3, [&] { return cairn_single_commits(redis, n); },
      [&] { return redis_benchmark_set(redis, n); });
  return measured(name, "commits/s", cairn, "redis_set_1", peer, 0.6);
}

// ---- redis.load_100 ----

constexpr std::uint32_t load_batch = 100;

// What a record looks like: a few plain fields.
Value record(std::uint32_t i) {
  return Value::Map{{"name", fmt::format("user {}", i)},
                    {"email", fmt::format("user{}@example.com", i)},
                    {"age", static_cast<std::int64_t>(20 + i % 50)}};
}

// load() of the same 100 objects, `rounds` times: one pipelined round trip each.
double cairn_loads(Store& store, std::span<const Oid> oids, std::uint64_t rounds) {
  std::uint64_t seen = 0;
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < rounds; ++i)
    seen += store.load(oids).objects.size();
  double rate = static_cast<double>(rounds) / seconds_since(start);
  if (seen != rounds * oids.size()) throw Error("bench: a load lost objects");
  return rate;
}

// The same 100 HGETALLs, pipelined by hand with hiredis: one round trip each round.
double hiredis_hgetall(const BenchRedis& redis, const std::vector<std::string>& keys,
                       std::uint64_t rounds) {
  RedisContextPtr c = connect_to(redis.port());
  if (!c) throw IoError("bench: cannot connect to the bench redis-server");
  std::uint64_t fields = 0;
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < rounds; ++i) {
    for (const std::string& key : keys) {
      const char* argv[] = {"HGETALL", key.c_str()};
      std::size_t lens[] = {7, key.size()};
      redisAppendCommandArgv(c.get(), 2, argv, lens);
    }
    for (std::size_t k = 0; k < keys.size(); ++k) {
      void* raw = nullptr;
      if (redisGetReply(c.get(), &raw) != REDIS_OK || raw == nullptr) {
        throw IoError("bench: HGETALL failed");
      }
      RedisReplyPtr r(static_cast<redisReply*>(raw));
      fields += r->elements;
    }
  }
  double rate = static_cast<double>(rounds) / seconds_since(start);
  if (fields == 0) throw Error("bench: HGETALL found nothing");
  return rate;
}

Result load_100(Context& ctx) {
  const char* name = "redis.load_100";
  if (auto why = missing_redis_tools()) {
    return skipped(name, "loads/s", "hiredis_hgetall_100", 0.8, *why);
  }
  std::uint64_t rounds = ctx.size(1'000, 10'000);
  ctx.progress(fmt::format("{} loads of {} objects vs {} pipelined HGETALLs", rounds, load_batch,
                           load_batch));
  BenchRedis redis(ctx.dir);
  const std::string prefix = "bench_load:";
  auto store = open(redis.url(prefix));
  Oid first = store->new_oids(load_batch);
  CommitRequest fill;
  std::vector<Oid> oids;
  std::vector<std::string> keys;
  for (std::uint32_t i = 0; i < load_batch; ++i) {
    Oid oid(first.value() + i);
    oids.push_back(oid);
    keys.push_back(prefix + "o:" + oid.str());
    fill.writes.push_back(WriteOp{oid, "User", "", encode(record(i))});
  }
  store->commit(fill);
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3, [&] { return cairn_loads(*store, oids, rounds); },
      [&] { return hiredis_hgetall(redis, keys, rounds); });
  return measured(name, "loads/s", cairn, "hiredis_hgetall_100", peer, 0.8);
}

}  // namespace

std::vector<Scenario> redis_scenarios() {
  return {
      {"redis.commit_1", commit_1},
      {"redis.load_100", load_100},
  };
}

}  // namespace cairn::bench
