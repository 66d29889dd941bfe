// ODB's producer (docs/examples/producer.py) in C++: connects to a cairn server and creates a
// hello_world.Message {text: "message_N", sent_at: now} once a second, each in a transaction of
// its own, so that every consumer subscribed to the type (examples/consumer.cc) sees it.
//
//   cairn serve --memory --port 8000 &
//   example_consumer cairn://127.0.0.1:8000 &
//   example_producer cairn://127.0.0.1:8000 [--count N] [--interval-ms MS]
//
// Numbering starts at message_0 on every run, as in ODB. It prints what it created, one line per
// message; errors go to stderr on one line, with exit status 1 (2 for a bad command line).
#include <cairn/database.h>
#include <cairn/error.h>
#include <cairn/typed.h>
#include <cairn/value.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "hello_world.h"

namespace {

constexpr const char* usage =
    "usage: example_producer URL [--count N] [--interval-ms MS]\n"
    "\n"
    "Creates hello_world.Message objects message_0, message_1, ... on the cairn server at URL\n"
    "(cairn://[TOKEN@]HOST:PORT or cairns://...), one per interval, each in its own transaction.\n"
    "\n"
    "  --count N         stop after N messages (default: run until interrupted)\n"
    "  --interval-ms MS  milliseconds between messages (default: 1000)\n";

struct Options {
  std::string url;
  std::optional<std::uint64_t> count;
  std::chrono::milliseconds interval{1000};
};

int bad_usage(const std::string& problem) {
  std::fprintf(stderr, "producer: %s (try --help)\n", problem.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--count" || arg == "--interval-ms") {
      if (i + 1 == argc) return bad_usage(std::string(arg) + " needs a value");
      std::optional<std::uint64_t> n = hello_world::positive_number(argv[++i]);
      if (!n) return bad_usage(std::string(arg) + " needs a positive integer");
      if (arg == "--count") {
        options.count = *n;
      } else {
        options.interval = std::chrono::milliseconds(*n);
      }
    } else if (arg.starts_with("-")) {
      return bad_usage("unknown option " + std::string(arg));
    } else if (options.url.empty()) {
      options.url = arg;
    } else {
      return bad_usage("more than one URL");
    }
  }
  if (options.url.empty()) return bad_usage("no server URL");

  try {
    hello_world::require_server_url(options.url);
    cairn::Database db = cairn::Database::open(options.url);

    // A fixed schedule, so that the time a commit takes does not add up into drift.
    auto next = std::chrono::steady_clock::now();
    for (std::uint64_t n = 0; !options.count || n < *options.count; ++n) {
      if (n > 0) {
        next += options.interval;
        std::this_thread::sleep_until(next);
      }
      hello_world::Message message = db.transaction([n](cairn::Txn& tx) {
        hello_world::Message m{"message_" + std::to_string(n), cairn::Timestamp::now()};
        cairn::create(tx, m);
        return m;
      });
      std::printf("created %s\n", hello_world::format_message(message).c_str());
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "producer: %s\n", hello_world::one_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
