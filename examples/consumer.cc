// ODB's consumer (docs/examples/consumer.py) in C++: connects to a cairn server, subscribes to
// the hello_world.Message type (ODB's subscribeToSchema) and prints each message as it arrives,
// one line each, the way ODB's print((message, timestamp)) does:
//
//   ('message_0', 1652072778.43)
//   ('message_1', 1652072779.44)
//
//   example_consumer cairn://127.0.0.1:8000 [--count N]
//
// Messages that existed before it started are printed first (ODB's consumer reads every
// Message it can see, old ones included), then new ones as they arrive; each message is printed
// once. Messages found together are printed in the order they were sent (sent_at, then oid).
//
// How it waits: the subscription keeps a replica of every Message in this process, kept current
// by the commits the server pushes. The consumer also listens to those pushes
// (Database::store().subscribe), and each push wakes it up to list the Message objects again.
// That listing reads the replica in memory (or asks the server, while the replica is still
// loading what the commit created), so an idle consumer sends nothing to the server and a new
// message is printed as soon as its push arrives. After 5 s without a push it sends one small
// request to check that the server is still there: a consumer whose server has gone reports it
// and exits 1 rather than wait forever. Once it is subscribed it says so on stderr
// ("consumer: subscribed to hello_world.Message").
//
// With --count N it exits 0 after printing N messages. Errors go to stderr on one line, with
// exit status 1 (2 for a bad command line).
#include <cairn/database.h>
#include <cairn/error.h>
#include <cairn/oid.h>
#include <cairn/store.h>
#include <cairn/typed.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "hello_world.h"

namespace {

using hello_world::Message;

// How long the consumer waits without a push before checking that the server is still there.
constexpr std::chrono::seconds idle_check{5};

constexpr const char* usage =
    "usage: example_consumer URL [--count N]\n"
    "\n"
    "Subscribes to hello_world.Message on the cairn server at URL (cairn://[TOKEN@]HOST:PORT or\n"
    "cairns://...) and prints every message, those already there first, then each new one as it\n"
    "arrives, as ('message_0', 1652072778.43).\n"
    "\n"
    "  --count N  exit after printing N messages (default: run until interrupted)\n";

int bad_usage(const std::string& problem) {
  std::fprintf(stderr, "consumer: %s (try --help)\n", problem.c_str());
  return 2;
}

// The newest commit the server has pushed, and a way to sleep until a newer one arrives.
class Pushes {
 public:
  // Called on the store's I/O thread: must only record the commit and wake the main thread.
  void on_commit(std::uint64_t csn) {
    {
      std::lock_guard lock(mu_);
      latest_ = std::max(latest_, csn);
    }
    cv_.notify_all();
  }
  std::uint64_t latest() const {
    std::lock_guard lock(mu_);
    return latest_;
  }
  // Whether a commit after `seen` was pushed within `idle`: returns as soon as one is.
  bool wait_past(std::uint64_t seen, std::chrono::milliseconds idle) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, idle, [&] { return latest_ > seen; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t latest_ = 0;
};

class Printer {
 public:
  explicit Printer(std::optional<std::uint64_t> count) : count_(count) {}

  bool done() const { return count_ && printed_ >= *count_; }

  // Prints the messages not printed yet. A push has already taken the commits it reports out of
  // the replica and marked their objects for reloading, so a listing made after the push
  // includes what the commit created (from the server if the replica is still catching up).
  void print_new(cairn::Database& db) {
    std::vector<cairn::TypedRef<Message>> fresh;
    for (const cairn::TypedRef<Message>& ref : cairn::scan<Message>(db)) {
      if (!seen_.contains(ref.oid())) fresh.push_back(ref);
    }
    if (fresh.empty()) return;
    auto messages = db.view([&](cairn::View& view) {
      std::vector<std::pair<cairn::Oid, Message>> out;
      for (const cairn::TypedRef<Message>& ref : fresh) {
        try {
          out.emplace_back(ref.oid(), cairn::get(view, ref));
        } catch (const cairn::NotFound&) {
          // Deleted since it was listed: there is nothing left to print.
        }
      }
      return out;
    });
    std::sort(messages.begin(), messages.end(), [](const auto& a, const auto& b) {
      return std::tie(a.second.sent_at, a.first) < std::tie(b.second.sent_at, b.first);
    });
    for (const auto& [oid, message] : messages) {
      if (done()) return;
      std::printf("%s\n", hello_world::format_message(message).c_str());
      std::fflush(stdout);
      seen_.insert(oid);
      ++printed_;
    }
  }

 private:
  std::optional<std::uint64_t> count_;
  std::uint64_t printed_ = 0;
  std::set<cairn::Oid> seen_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  std::optional<std::uint64_t> count;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--count") {
      if (i + 1 == argc) return bad_usage("--count needs a value");
      count = hello_world::positive_number(argv[++i]);
      if (!count) return bad_usage("--count needs a positive integer");
    } else if (arg.starts_with("-")) {
      return bad_usage("unknown option " + std::string(arg));
    } else if (url.empty()) {
      url = arg;
    } else {
      return bad_usage("more than one URL");
    }
  }
  if (url.empty()) return bad_usage("no server URL");

  try {
    hello_world::require_server_url(url);
    Pushes pushes;  // declared before what calls into it, so it outlives them
    cairn::Database db = cairn::Database::open(url);
    cairn::Subscription replica = db.subscribe_type(std::string(cairn::type_name<Message>()));
    cairn::Subscription listener = db.store().subscribe(
        [&pushes](std::uint64_t csn, std::span<const cairn::Oid>) { pushes.on_commit(csn); });
    pushes.on_commit(db.store().load({}).csn);  // where the replica starts
    std::fprintf(stderr, "consumer: subscribed to %s\n",
                 std::string(cairn::type_name<Message>()).c_str());

    Printer printer(count);
    while (!printer.done()) {
      // Read before listing: a commit pushed after this point wakes the wait below, and one
      // pushed before it is in the listing.
      std::uint64_t seen = pushes.latest();
      printer.print_new(db);
      if (printer.done()) break;
      if (!pushes.wait_past(seen, idle_check)) {
        // Nothing pushed for a while: one small request checks that the server is still there.
        // It reconnects if the connection dropped (the store then reports the commits missed
        // meanwhile, waking this loop), and throws, ending the consumer, if it cannot.
        (void)db.store().changes_since(pushes.latest());
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", hello_world::one_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
