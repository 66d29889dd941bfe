// ODB's producer/consumer example (examples/producer.cc, examples/consumer.cc) against a live
// `cairn serve --memory` on a free port: the consumer, subscribed to hello_world.Message, prints
// every message the producer creates, once each, in order, as ('message_N', SECONDS.CC), and
// also the messages that were there before it started. Plus their command lines and errors.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cairn/database.h>
#include <cairn/typed.h>
#include <cairn/value.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "support/child_process.h"
#include "support/process.h"
#include "support/serve_commands.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;

// How long a test waits for a step that takes milliseconds when nothing is wrong.
constexpr auto patience = 30s;

// The type the example programs share, declared here on its own so that a change to its stored
// name or fields breaks these tests.
struct Message {
  std::string text;
  Timestamp sent_at;
};
CAIRN_TYPE(Message, "hello_world.Message", text, sent_at);

// Unix seconds, now.
double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A stored time as the consumer prints it: Unix seconds with two decimals.
std::string two_decimals(Timestamp t) {
  char text[64];
  std::snprintf(text, sizeof text, "%.2f", static_cast<double>(t.micros) / 1e6);
  return text;
}

struct Printed {
  std::string text;
  std::string seconds;  // as printed
  double value = 0;
};

// A consumer line `('message_3', 1652072778.43)`, or nullopt if it has another form.
std::optional<Printed> parse(const std::string& line) {
  static const std::regex form(R"(\('([^'\\]*)', ([0-9]+\.[0-9]{2})\))");
  std::smatch m;
  if (!std::regex_match(line, m, form)) return std::nullopt;
  return Printed{m[1], m[2], std::stod(m[2])};
}

class ProducerConsumer : public ServeTest {
 protected:
  void SetUp() override {
    ServeTest::SetUp();
    server_ = serve({"--memory"});
  }

  // Starts the consumer and waits until it says it is subscribed.
  std::unique_ptr<ChildProcess> start_consumer(const std::vector<std::string>& extra) {
    std::vector<std::string> argv{CAIRN_EXAMPLE_CONSUMER, server_->url()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto consumer = std::make_unique<ChildProcess>(
        argv, dir_.file("consumer-" + std::to_string(++consumers_) + ".log"),
        /*read_stdout=*/true);
    auto deadline = std::chrono::steady_clock::now() + patience;
    while (consumer->log().find("consumer: subscribed to hello_world.Message") ==
           std::string::npos) {
      std::optional<int> ended = consumer->wait(10ms);
      if (ended || std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the consumer did not subscribe (exit status "
                      << (ended ? std::to_string(*ended) : "none") << "):\n"
                      << consumer->log();
        break;
      }
    }
    return consumer;
  }

  // Runs the producer to its end: `count` messages, `interval_ms` apart. Its output lines.
  std::vector<std::string> produce(int count, int interval_ms) {
    ProcessResult r =
        run_process({CAIRN_EXAMPLE_PRODUCER, server_->url(), "--count", std::to_string(count),
                     "--interval-ms", std::to_string(interval_ms)});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.err, "");
    return lines_of(r.out);
  }

  // The next `n` lines the consumer prints, each waited for at most `patience`.
  static std::vector<std::string> read_lines(ChildProcess& consumer, std::size_t n) {
    std::vector<std::string> lines;
    while (lines.size() < n) {
      std::optional<std::string> line = consumer.read_line(patience);
      if (!line) {
        ADD_FAILURE() << "the consumer printed " << lines.size() << " of " << n << " lines:\n"
                      << text_of(lines) << "its log:\n"
                      << consumer.log();
        consumer.kill();  // so that what follows fails now rather than after its waits
        break;
      }
      lines.push_back(*line);
    }
    return lines;
  }

  // Waits for the consumer to exit 0, having printed nothing more.
  static void expect_finished(ChildProcess& consumer) {
    std::optional<int> status = consumer.wait(patience);
    ASSERT_TRUE(status.has_value()) << "the consumer did not exit:\n" << consumer.log();
    EXPECT_EQ(*status, 0) << consumer.log();
    EXPECT_EQ(consumer.read_rest(5s), "");
  }

  // Every stored message: oid order is creation order for one producer.
  std::vector<Message> stored() {
    Database db = Database::open(server_->url());
    std::vector<TypedRef<Message>> refs = scan<Message>(db);
    return db.view([&](View& v) {
      std::vector<Message> out;
      for (const TypedRef<Message>& ref : refs)
        out.push_back(get(v, ref));
      return out;
    });
  }

  std::unique_ptr<ServerProcess> server_;
  int consumers_ = 0;
};

// Checks `lines` are the messages `texts`, in that order, sent in [from, to] (Unix seconds),
// each as stored.
void expect_messages(const std::vector<std::string>& lines, const std::vector<std::string>& texts,
                     double from, double to, const std::vector<Message>& stored) {
  ASSERT_EQ(lines.size(), texts.size()) << text_of(lines);
  double previous = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::optional<Printed> p = parse(lines[i]);
    ASSERT_TRUE(p.has_value()) << "line " << i << ": " << lines[i];
    EXPECT_EQ(p->text, texts[i]) << lines[i];
    // The printed time is rounded to a hundredth of a second.
    EXPECT_GE(p->value, from - 0.01) << lines[i];
    EXPECT_LE(p->value, to + 0.01) << lines[i];
    EXPECT_GE(p->value, previous) << "printed out of order:\n" << text_of(lines);
    previous = p->value;
    ASSERT_LT(i, stored.size());
    EXPECT_EQ(p->text, stored[i].text);
    EXPECT_EQ(p->seconds, two_decimals(stored[i].sent_at)) << lines[i];
  }
}

TEST_F(ProducerConsumer, ConsumerPrintsEachNewMessageAsItArrives) {
  // Subscribed before anything exists: every line comes from a commit pushed while it waits.
  auto consumer = start_consumer({"--count", "5"});
  double from = unix_now();
  std::vector<std::string> produced = produce(5, 50);
  double to = unix_now();
  ASSERT_EQ(produced.size(), 5u) << text_of(produced);
  for (std::size_t i = 0; i < produced.size(); ++i) {
    EXPECT_TRUE(produced[i].starts_with("created ('message_" + std::to_string(i) + "', "))
        << produced[i];
  }

  std::vector<std::string> lines = read_lines(*consumer, 5);
  expect_messages(lines, {"message_0", "message_1", "message_2", "message_3", "message_4"}, from,
                  to, stored());
  expect_finished(*consumer);
  // What the producer reported is what the consumer printed.
  for (std::size_t i = 0; i < lines.size() && i < produced.size(); ++i)
    EXPECT_EQ(produced[i], "created " + lines[i]);
}

TEST_F(ProducerConsumer, MessagesFromBeforeTheConsumerStartedComeFirst) {
  double from = unix_now();
  produce(3, 10);
  auto consumer = start_consumer({"--count", "5"});
  std::vector<std::string> lines = read_lines(*consumer, 3);
  // A second run numbers from message_0 again, as ODB's producer does: new messages with the
  // texts of old ones, printed as new, while the old ones are not printed again.
  produce(2, 10);
  double to = unix_now();
  std::vector<std::string> more = read_lines(*consumer, 2);
  lines.insert(lines.end(), more.begin(), more.end());
  expect_messages(lines, {"message_0", "message_1", "message_2", "message_0", "message_1"}, from,
                  to, stored());
  expect_finished(*consumer);
}

TEST_F(ProducerConsumer, TwoConsumersEachPrintEveryMessage) {
  auto first = start_consumer({"--count", "4"});
  auto second = start_consumer({"--count", "4"});
  double from = unix_now();
  produce(4, 20);
  double to = unix_now();
  std::vector<Message> messages = stored();
  for (ChildProcess* consumer : {first.get(), second.get()}) {
    expect_messages(read_lines(*consumer, 4), {"message_0", "message_1", "message_2", "message_3"},
                    from, to, messages);
    expect_finished(*consumer);
  }
}

TEST_F(ProducerConsumer, ConsumerWhoseServerHasGoneSaysSoAndExits) {
  auto consumer = start_consumer({});
  produce(1, 10);
  ASSERT_EQ(read_lines(*consumer, 1).size(), 1u);
  server_->process().kill();
  // With no push coming, the consumer checks on the server after a few idle seconds.
  std::optional<int> status = consumer->wait(patience);
  ASSERT_TRUE(status.has_value()) << "the consumer still waits for a dead server:\n"
                                  << consumer->log();
  EXPECT_EQ(*status, 1) << consumer->log();
  std::vector<std::string> log = lines_of(consumer->log());
  ASSERT_FALSE(log.empty());
  EXPECT_TRUE(log.back().starts_with("consumer: ")) << consumer->log();
  EXPECT_NE(log.back().find(server_->address()), std::string::npos) << consumer->log();
}

// ---- command lines and errors ----

// A port on 127.0.0.1 that refuses connections while the object lives: bound, not listening.
class RefusingPort {
 public:
  RefusingPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "could not bind a socket";
    }
    port_ = ntohs(addr.sin_port);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  ~RefusingPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  int fd_;
  std::uint16_t port_ = 0;
};

struct Program {
  const char* path;
  const char* name;
};

class ExampleCommandLine : public ::testing::TestWithParam<Program> {};

TEST_P(ExampleCommandLine, HelpDescribesTheOptions) {
  ProcessResult r = run_process({GetParam().path, "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("usage: example_" + std::string(GetParam().name) + " URL"))
      << r.out;
  EXPECT_NE(r.out.find("--count N"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
}

// One line on stderr, naming the program, and a nonzero exit status.
void expect_one_line_error(const ProcessResult& r, const std::string& name,
                           const std::string& mentions) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  std::vector<std::string> lines = lines_of(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_TRUE(lines[0].starts_with(name + ": ")) << r.err;
  EXPECT_NE(lines[0].find(mentions), std::string::npos) << r.err;
}

TEST_P(ExampleCommandLine, RejectsABadCommandLine) {
  const std::string name = GetParam().name;
  ProcessResult none = run_process({GetParam().path});
  EXPECT_EQ(none.exit_code, 2);
  expect_one_line_error(none, name, "no server URL");
  ProcessResult count = run_process({GetParam().path, "cairn://127.0.0.1:1", "--count", "x"});
  EXPECT_EQ(count.exit_code, 2);
  expect_one_line_error(count, name, "--count needs a positive integer");
  ProcessResult option = run_process({GetParam().path, "cairn://127.0.0.1:1", "--speed", "9"});
  EXPECT_EQ(option.exit_code, 2);
  expect_one_line_error(option, name, "unknown option --speed");
}

TEST_P(ExampleCommandLine, RejectsAUrlThatIsNotAServer) {
  const std::string name = GetParam().name;
  expect_one_line_error(run_process({GetParam().path, "http://127.0.0.1:80"}), name, "http");
  expect_one_line_error(run_process({GetParam().path, "memory:"}), name, "not a server URL");
  expect_one_line_error(run_process({GetParam().path, "cairn://127.0.0.1:notaport"}), name,
                        "notaport");
}

TEST_P(ExampleCommandLine, ReportsAnUnreachableServer) {
  RefusingPort port;
  std::string address = "127.0.0.1:" + std::to_string(port.port());
  ProcessResult r = run_process({GetParam().path, "cairn://" + address, "--count", "1"});
  EXPECT_EQ(r.exit_code, 1);
  expect_one_line_error(r, GetParam().name, address);
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleCommandLine,
                         ::testing::Values(Program{CAIRN_EXAMPLE_PRODUCER, "producer"},
                                           Program{CAIRN_EXAMPLE_CONSUMER, "consumer"}),
                         [](const ::testing::TestParamInfo<Program>& param) {
                           return std::string(param.param.name);
                         });

}  // namespace
}  // namespace cairn::testing
