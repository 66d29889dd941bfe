// RemoteStore against a live in-process server: the store conformance suite, push invalidation,
// tokens, TLS, hostile frames, limits and locks that die with their connection.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "cairn/codec.h"
#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/json.h"
#include "cairn/url.h"
#include "conformance/store_conformance.h"
#include "net/protocol.h"
#include "support/eventually.h"
#include "support/listener_log.h"
#include "support/process.h"
#include "support/served_store.h"
#include "support/temp_dir.h"
#include "support/tls_files.h"

namespace cairn::testing {
namespace {

using namespace std::chrono_literals;

// This process's resident memory, in bytes (Linux).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// A frame header announcing a body of `size` bytes, followed by the body's first byte: built
// without the body (which the test does not send), by setting the length of a one-byte frame.
std::string announce_frame(net::Kind kind, net::Op op, std::uint32_t id, std::uint32_t size) {
  std::string frame;
  net::append_frame(frame, kind, static_cast<std::uint16_t>(op), id, "x");
  for (int i = 0; i < 4; ++i)
    frame[static_cast<std::size_t>(i)] = static_cast<char>(size >> (24 - 8 * i));
  return frame;
}

struct ServedMemory {
  static std::unique_ptr<Store> make() {
    net::ServerOptions options;
    options.workers = 0;  // commits on the loop, as `cairn serve --memory` runs them
    return std::make_unique<ServedStore>(make_memory_store(), options);
  }
};

// A file store with group commit behind the worker pool, as `cairn serve --file` runs it.
struct ServedFile {
  static std::unique_ptr<Store> make() {
    static TempDir dir;
    static std::atomic<int> n{0};
    FileStoreOptions options;
    options.log = [](std::string_view) {};
    return std::make_unique<ServedStore>(
        FileStore::open(dir.file("served" + std::to_string(n++) + ".cairn"), options));
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(ServedMemory, StoreConformance, ServedMemory);
INSTANTIATE_TYPED_TEST_SUITE_P(ServedFile, StoreConformance, ServedFile);

// A server from before appends, as far as its hello and commits go: it answers hello with four
// elements (no features) and every commit with CSN 1, reading no appends, as such a server did.
class OldServer {
 public:
  OldServer() : acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~OldServer() {
    asio::error_code ec;
    acceptor_.close(ec);
    if (socket_) socket_->shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::atomic<int> commits{0};

 private:
  void serve() {
    asio::error_code ec;
    socket_.emplace(io_);
    acceptor_.accept(*socket_, ec);
    if (ec) return;
    for (;;) {
      std::string header(net::header_size, '\0');
      asio::read(*socket_, asio::buffer(header), ec);
      if (ec) return;
      net::FrameHeader h = net::parse_header(header, net::default_max_frame_bytes);
      std::string body(h.body_size, '\0');
      asio::read(*socket_, asio::buffer(body), ec);
      if (ec) return;
      net::Writer w;
      if (h.op == static_cast<std::uint16_t>(net::Op::hello)) {
        w.array(4).u64(1).str("cairn-old").u64(0).u64(10'000);
      } else if (h.op == static_cast<std::uint16_t>(net::Op::commit)) {
        ++commits;
        w.array(1).u64(1);
      } else {
        w.array(0);
      }
      std::string frame;
      net::append_frame(frame, net::Kind::response, h.op, h.id, w.bytes());
      asio::write(*socket_, asio::buffer(frame), ec);
      if (ec) return;
    }
  }

  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::optional<asio::ip::tcp::socket> socket_;
  std::thread thread_;
};

// TLS settings in a URL that would be ignored, or contradict each other, are refused before
// anything connects: else `cairn://h?ca=...` quietly connected in plaintext.
TEST(RemoteStore, UrlsWithTlsSettingsThatWouldBeIgnoredAreRefused) {
  for (const char* url :
       {"cairn://127.0.0.1:1?ca=/tmp/ca.pem", "cairn://127.0.0.1:1?insecure=1",
        "cairns://127.0.0.1:1?ca=/tmp/ca.pem&insecure=1", "cairns://127.0.0.1:1?insecure=yes"}) {
    try {
      net::client_options(parse_store_url(url));
      ADD_FAILURE() << url << " was taken";
    } catch (const InvalidArgument& e) {
      EXPECT_TRUE(std::string(e.what()).find("insecure") != std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(net::client_options(parse_store_url("cairns://127.0.0.1:1?insecure=1")).insecure);
  EXPECT_EQ(net::client_options(parse_store_url("cairns://127.0.0.1:1?ca=/x")).ca_file, "/x");
}

// socket= connects to a local unix socket, in plaintext: with cairns:// (and a CA to check
// against) it was taken, and connected without TLS; with another host or port those were
// ignored.
TEST(RemoteStore, UnixSocketUrlsThatWouldIgnoreTheirSettingsAreRefused) {
  for (const char* url :
       {"cairns://localhost?socket=/tmp/u.sock&ca=/tmp/ca.pem",
        "cairns://localhost?socket=/u&insecure=1", "cairn://example.com:1234?socket=/tmp/u.sock",
        "cairn://db.example?socket=/u", "cairn://localhost:9000?socket=/u"}) {
    try {
      net::client_options(parse_store_url(url));
      ADD_FAILURE() << url << " was taken";
    } catch (const InvalidArgument& e) {
      EXPECT_TRUE(std::string(e.what()).find("unix socket") != std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(net::client_options(parse_store_url("cairn://T@localhost?socket=/u")).unix_path, "/u");
}

// A fake server: answers the first frame it receives (the hello) with `answer`, then holds the
// connection open, silent, until destroyed.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string answer)
      : answer_(std::move(answer)),
        acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    asio::error_code ec;
    acceptor_.close(ec);
    thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  net::ClientOptions client() const {
    net::ClientOptions options;
    options.port = port();
    options.connect_timeout = 2s;
    return options;
  }

 private:
  void serve() {
    asio::error_code ec;
    asio::ip::tcp::socket socket(io_);
    acceptor_.accept(socket, ec);
    if (ec) return;
    std::string header(net::header_size, '\0');
    asio::read(socket, asio::buffer(header), ec);
    if (ec) return;
    std::string body(net::parse_header(header, net::default_max_frame_bytes).body_size, '\0');
    asio::read(socket, asio::buffer(body), ec);
    if (ec) return;
    asio::write(socket, asio::buffer(answer_), ec);
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

  std::string answer_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

std::string hello_answer(net::Kind kind, std::uint64_t version,
                         std::uint64_t heartbeat_ms = 10'000) {
  net::Writer w;
  w.array(6).u64(version).str("fake").u64(0).u64(heartbeat_ms).u64(0).u64(1);
  std::string frame;
  net::append_frame(frame, kind, static_cast<std::uint16_t>(net::Op::hello), 1, w.bytes());
  return frame;
}

// The client checks what a server says as the server checks what clients say.
TEST(RemoteStore, AMalformedHelloAnswerIsRefused) {
  {
    ScriptedServer fake(hello_answer(net::Kind::response, 2));
    try {
      net::RemoteStore store(fake.client());
      FAIL() << "a hello answered in protocol version 2 was taken";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("protocol version 2"), std::string::npos) << e.what();
    }
  }
  {
    ScriptedServer fake(hello_answer(net::Kind::request, 1));
    try {
      net::RemoteStore store(fake.client());
      FAIL() << "a request from the server was taken for the answer to hello";
    } catch (const IoError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("the server sent a request"), std::string::npos) << what;
      EXPECT_EQ(what.find("TLS"), std::string::npos) << what;
    }
  }
  {
    std::string frame;
    net::Writer w;
    w.array(2).u64(999).str("from the future");
    net::append_frame(frame, net::Kind::error, static_cast<std::uint16_t>(net::Op::hello), 1,
                      w.bytes());
    ScriptedServer fake(frame);
    try {
      net::RemoteStore store(fake.client());
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::internal);
      EXPECT_NE(std::string(e.what()).find("error code 999"), std::string::npos) << e.what();
    }
  }
}

// A server that goes silent without closing (a frozen proxy, a lost route) is taken as gone
// after three heartbeats without a byte from it: the call fails then, not at its timeout, and
// the connection is made again.
TEST(RemoteStore, AServerSilentForThreeHeartbeatsIsTakenAsGone) {
  ScriptedServer fake(hello_answer(net::Kind::response, net::protocol_version, 100));
  net::ClientOptions options = fake.client();
  options.call_timeout = 20s;
  net::RemoteStore store(options);
  try {
    store.ping();
    FAIL() << "a ping the server never answered returned";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("nothing came from the server"), std::string::npos)
        << e.what();
  }
}

// While a large frame is still being written the server, waiting for the rest of it, says
// nothing: that is not silence. (This fake reads nothing after the hello, so the write never
// ends and the call times out instead.)
TEST(RemoteStore, AWriteUnderWayIsNotSilence) {
  ScriptedServer fake(hello_answer(net::Kind::response, net::protocol_version, 100));
  net::ClientOptions options = fake.client();
  options.call_timeout = 1500ms;
  net::RemoteStore store(options);
  CommitRequest big;
  big.writes.push_back(WriteOp{Oid(1), "", "", encode(Value(std::string(32u << 20, 'x')))});
  try {
    store.commit(big);
    FAIL() << "a commit the server never read returned";
  } catch (const IoError& e) {
    EXPECT_EQ(std::string(e.what()).find("nothing came from the server"), std::string::npos)
        << e.what();
  }
}

// A reply's header alone does not make the client reserve the body it announces.
TEST(RemoteStore, AReplyHeaderAloneDoesNotMakeTheClientReserveItsBody) {
  ScriptedServer fake(announce_frame(net::Kind::response, net::Op::hello, 1, 512u << 20));
  std::size_t before = resident_bytes();
  std::thread client([&] {
    try {
      net::RemoteStore store(fake.client());  // waits for the rest of the hello, then times out
    } catch (const Error&) {
    }
  });
  std::this_thread::sleep_for(500ms);
  std::size_t grown = resident_bytes() - std::min(before, resident_bytes());
  client.join();
  EXPECT_LT(grown, 100u << 20) << "a 21-byte reply made the client hold " << (grown >> 20)
                               << " MiB";
}

TEST(RemoteStore, AppendsAreNotSentToAServerThatWouldDropThem) {
  OldServer old;
  net::ClientOptions options;
  options.port = old.port();
  net::RemoteStore store(options);
  CommitRequest plain;
  plain.writes.push_back(WriteOp{Oid(1), "", "", encode(Value(1))});
  EXPECT_EQ(store.commit(plain), 1u);
  EXPECT_EQ(old.commits.load(), 1);
  CommitRequest appending;
  appending.writes.push_back(WriteOp{Oid(1), "", "", encode(Value(2))});
  appending.appends.push_back(AppendOp{Oid(2), "bytes"});
  EXPECT_THROW(store.commit(appending), Unsupported);
  EXPECT_EQ(old.commits.load(), 1) << "the commit reached a server that would drop its appends";
  // Nor lock checks, which it would skip: the commit would apply unfenced.
  CommitRequest fenced;
  fenced.writes.push_back(WriteOp{Oid(1), "", "", encode(Value(3))});
  fenced.locks.push_back(LockCheck{"job", 7});
  EXPECT_THROW(store.commit(fenced), Unsupported);
  EXPECT_EQ(old.commits.load(), 1) << "the commit reached a server that would not check its lock";
}

// A client that speaks raw frames, to send what RemoteStore never would.
class RawClient {
 public:
  explicit RawClient(std::uint16_t port) : socket_(io_) {
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval tv{5, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send(std::string_view bytes) {
    asio::error_code ec;
    asio::write(socket_, asio::buffer(bytes.data(), bytes.size()), ec);
  }
  void request(net::Op op, std::uint32_t id, std::string_view body) {
    std::string frame;
    net::append_frame(frame, net::Kind::request, static_cast<std::uint16_t>(op), id, body);
    send(frame);
  }
  void hello(const std::string& token = {}) {
    net::Writer w;
    w.array(4).u64(1).u64(1).str(token).str("raw");
    request(net::Op::hello, 1, w.bytes());
    auto reply = read_frame();
    ASSERT_TRUE(reply.has_value());
    ASSERT_EQ(reply->first.kind, net::Kind::response);
  }
  // The next frame, or nullopt at end of stream.
  std::optional<std::pair<net::FrameHeader, std::string>> read_frame() {
    std::string header(net::header_size, '\0');
    asio::error_code ec;
    asio::read(socket_, asio::buffer(header), ec);
    if (ec) return std::nullopt;
    net::FrameHeader h = net::parse_header(header, net::default_max_frame_bytes);
    std::string body(h.body_size, '\0');
    asio::read(socket_, asio::buffer(body), ec);
    if (ec) return std::nullopt;
    return std::make_pair(h, body);
  }
  // The next frame, read `chunk` bytes at a time with `pause` between reads (a slow link), or
  // nullopt at end of stream.
  std::optional<std::pair<net::FrameHeader, std::string>> read_frame_slowly(
      std::size_t chunk, std::chrono::milliseconds pause) {
    std::string bytes;
    std::size_t want = net::header_size;
    while (bytes.size() < want) {
      std::string part(std::min(chunk, want - bytes.size()), '\0');
      asio::error_code ec;
      std::size_t n = socket_.read_some(asio::buffer(part), ec);
      if (ec) return std::nullopt;
      bytes.append(part, 0, n);
      if (want == net::header_size && bytes.size() >= net::header_size) {
        want += net::parse_header(bytes.substr(0, net::header_size), net::default_max_frame_bytes)
                    .body_size;
      }
      std::this_thread::sleep_for(pause);
    }
    net::FrameHeader h =
        net::parse_header(bytes.substr(0, net::header_size), net::default_max_frame_bytes);
    return std::make_pair(h, bytes.substr(net::header_size));
  }
  // Reads until the server closes; true if it did (rather than the read timing out).
  bool closed_by_server() {
    char buf[4096];
    for (;;) {
      asio::error_code ec;
      socket_.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::eof || ec == asio::error::connection_reset) return true;
      if (ec) return false;
    }
  }

 private:
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
};

ErrorCode error_code_of(const std::string& body) {
  net::Body decoded(body);
  return static_cast<ErrorCode>(decoded.reader().u64());
}

// Server options as the tests want them: commits on the loop unless a test says otherwise.
template <class Edit>
net::ServerOptions options_with(Edit edit) {
  net::ServerOptions options;
  options.workers = 0;
  edit(options);
  return options;
}

std::uint64_t put_value(Store& store, Oid oid, std::int64_t v) {
  CommitRequest request;
  request.writes.push_back(WriteOp{oid, "", "", encode(Value(v))});
  return store.commit(request);
}

// Writes `count` objects of `bytes` bytes each; returns their oids.
std::vector<Oid> put_large(Store& store, int count, std::size_t bytes) {
  Oid first = store.new_oids(static_cast<std::uint32_t>(count));
  std::vector<Oid> oids;
  for (int i = 0; i < count; ++i) {
    Oid oid(first.value() + static_cast<std::uint64_t>(i));
    CommitRequest request;
    request.writes.push_back(
        WriteOp{oid, "", "", encode(Value(std::string(bytes, static_cast<char>('a' + i))))});
    store.commit(request);
    oids.push_back(oid);
  }
  return oids;
}

// A load's reply may be larger than any request: three objects of 30 MiB come back in one call.
TEST(Server, ALoadMayAnswerWithMoreThanTheRequestFrameLimit) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto client = server.connect();
  std::vector<Oid> oids = put_large(*client, 3, 30u << 20);
  LoadResult result = client->load(oids);
  ASSERT_EQ(result.objects.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(decode(result.objects[i].data),
              Value(std::string(30u << 20, static_cast<char>('a' + i))))
        << "object " << i;
  }
}

// An object past max_object_bytes is refused by the client, as by every store, before it is
// sent: past the frame limit too, the server dropped the connection, and every other call in
// flight on it failed with an IoError (and might still have been applied).
TEST(Server, AnObjectPastTheLimitIsRefusedBeforeItIsSent) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto client = server.connect();
  Oid oid = client->new_oids(1);
  for (std::size_t bytes : {max_object_bytes + 1, max_object_bytes + (2u << 20)}) {
    CommitRequest request;
    request.writes.push_back(WriteOp{oid, "", "", std::string(bytes, 'q')});
    try {
      client->commit(request);
      ADD_FAILURE() << bytes << " bytes were committed";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("limit of 67108864"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(put_value(*client, oid, 7), 1u);
}

// A commit whose objects each fit but together pass the server's frame limit is refused by the
// client, which learns the limit from the hello reply. Sent, it made the server close the shared
// connection, and a call in flight on it (here a lock waiting its turn) failed with IoError.
TEST(Server, ARequestPastTheServersFrameLimitIsRefusedAndTheConnectionStays) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_frame_bytes = 1u << 20; }));
  auto holder = server.connect();
  auto client = server.connect();
  ASSERT_TRUE(holder->lock(LockRequest{"l", "holder", 30s, 0ms}));
  std::promise<std::optional<std::uint64_t>> waited;
  std::thread waiter([&] {
    try {
      waited.set_value(client->lock(LockRequest{"l", "waiter", 30s, 20s}));
    } catch (...) {
      waited.set_exception(std::current_exception());
    }
  });
  std::vector<Oid> oids = {client->new_oids(1), client->new_oids(1)};
  // Time for the lock call to go out (were it later, a dropped connection would go unnoticed:
  // it would go out on the next one).
  std::this_thread::sleep_for(300ms);
  CommitRequest request;
  for (Oid oid : oids)
    request.writes.push_back(WriteOp{oid, "", "", std::string(600u << 10, 'q')});
  try {
    client->commit(request);
    ADD_FAILURE() << "1.2 MiB were committed past a 1 MiB frame limit";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("frame limit of 1048576 bytes"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("nothing was sent"), std::string::npos) << e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << "not refused before it was sent: " << e.what();
  }
  EXPECT_TRUE(holder->unlock("l", "holder"));
  std::optional<std::uint64_t> token;
  EXPECT_NO_THROW(token = waited.get_future().get()) << "the call in flight failed";
  EXPECT_TRUE(token.has_value());
  waiter.join();
  // Each object alone fits.
  request.writes.pop_back();
  EXPECT_GT(client->commit(request), 0u);
}

// A load whose reply would pass the server's limit is refused with a clear error, and the
// connection stays usable.
TEST(Server, ALoadTooLargeForOneReplyIsRefusedAndTheConnectionStays) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_reply_bytes = 1u << 20; }));
  auto client = server.connect();
  std::vector<Oid> oids = put_large(*client, 3, 500u << 10);
  try {
    client->load(oids);
    ADD_FAILURE() << "a 1.5 MiB reply passed a 1 MiB limit";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("load fewer objects"), std::string::npos) << e.what();
  }
  std::span<const Oid> one(oids.data(), 1);
  EXPECT_EQ(client->load(one).objects.at(0).data.size(),
            encode(Value(std::string(500u << 10, 'a'))).size());
}

TEST(Server, CommitsArePushedToOtherClientsWithoutPolling) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto a = server.connect();
  auto b = server.connect();
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> seen;
  Subscription sub = b->subscribe([&](std::uint64_t csn, std::span<const Oid> oids) {
    std::lock_guard lock(mu);
    seen.emplace_back(csn, std::vector<Oid>(oids.begin(), oids.end()));
    cv.notify_all();
  });
  Oid oid = a->new_oids(1);
  std::vector<std::chrono::steady_clock::duration> delays;
  for (int i = 0; i < 20; ++i) {
    auto start = std::chrono::steady_clock::now();
    std::uint64_t csn = put_value(*a, oid, i);
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return !seen.empty() && seen.back().first == csn; }))
        << "commit " << csn << " was never pushed";
    delays.push_back(std::chrono::steady_clock::now() - start);
    EXPECT_EQ(seen.back().second, std::vector<Oid>{oid});
  }
  std::sort(delays.begin(), delays.end());
  EXPECT_LT(delays[delays.size() / 2], 100ms) << "median push delay";
  // B's own commits reach it too, in CSN order with everything else.
  std::uint64_t own = put_value(*b, oid, 99);
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return seen.back().first == own; }));
  for (std::size_t i = 1; i < seen.size(); ++i)
    EXPECT_LT(seen[i - 1].first, seen[i].first);
}

// Counts the calls that ask the store what changed: pushed commits should make them rare.
class CountingStore final : public ForwardingStore {
 public:
  explicit CountingStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  std::atomic<int> changes_calls{0};
  Changes changes_since(std::uint64_t csn) override {
    ++changes_calls;
    return inner_->changes_since(csn);
  }

 private:
  Store& inner() const override { return *inner_; }
  std::unique_ptr<Store> inner_;
};

TEST(Server, AnotherClientsCommitReachesCachedViewsWithoutAskingTheServer) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  Database a(server.connect());
  auto counting = std::make_unique<CountingStore>(server.connect());
  CountingStore& b_store = *counting;
  Database b(std::move(counting));
  Oid oid = a.transaction([](Txn& tx) { return tx.create(Value(std::int64_t{0})).oid(); });
  auto read_b = [&] { return b.view([&](View& v) { return v.get(oid).get().as_int(); }); };
  // B caches the object (its view's connection is pooled and keeps its cache).
  for (auto deadline = std::chrono::steady_clock::now() + 5s; read_b() != 0;) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
  }
  int asked_before = b_store.changes_calls.load();
  std::vector<std::chrono::steady_clock::duration> delays;
  for (std::int64_t i = 1; i <= 10; ++i) {
    auto start = std::chrono::steady_clock::now();
    a.transaction([&](Txn& tx) { tx.modify(oid, [&](Value& v) { v = Value(i); }); });
    while (read_b() != i) {
      ASSERT_LT(std::chrono::steady_clock::now() - start, 5s) << "B never saw commit " << i;
      std::this_thread::sleep_for(1ms);
    }
    delays.push_back(std::chrono::steady_clock::now() - start);
  }
  std::sort(delays.begin(), delays.end());
  EXPECT_LT(delays[delays.size() / 2], 100ms) << "median delay until B's view saw A's commit";
  EXPECT_EQ(b_store.changes_calls.load(), asked_before)
      << "B asked the server what changed instead of learning it from pushes";
}

// sync() asks the server: a commit another client has finished is seen after it, even while
// its push is still on the way (with only the push, 14-38% of these reads were stale).
TEST(Server, SyncSeesEveryCommitFinishedBeforeIt) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  Database a(server.connect());
  Database b(server.connect());
  Connection ca = a.connect();
  Connection cb = b.connect();
  ca.root().set("n", std::int64_t{0});
  ca.commit();
  int stale = 0;
  for (std::int64_t i = 1; i <= 300; ++i) {
    ca.root().set("n", i);
    ca.commit();
    if (i % 2 == 0) {
      cb.sync();
    } else {
      cb.abort();
    }
    if (cb.root().get("n").as_int() != i) ++stale;
  }
  EXPECT_EQ(stale, 0) << "reads after sync() or abort() missed a finished commit";
}

TEST(Server, WrongMissingOrLateTokenIsRefusedAndOthersAreServed) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.token = "s3cret"; }));
  EXPECT_THROW(server.connect(), AuthError);
  EXPECT_THROW(server.connect("s3cre"), AuthError);
  EXPECT_THROW(server.connect("s3cret!"), AuthError);
  auto good = server.connect("s3cret");
  Oid oid = good->new_oids(1);
  put_value(*good, oid, 7);

  // Any request before hello: an auth error frame, then the server hangs up, returning nothing.
  RawClient late(server.port());
  net::Writer w;
  w.array(1);
  net::write_oids(w, std::vector<Oid>{oid});
  late.request(net::Op::load, 5, w.bytes());
  auto reply = late.read_frame();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->first.kind, net::Kind::error);
  EXPECT_EQ(error_code_of(reply->second), ErrorCode::auth);
  EXPECT_TRUE(late.closed_by_server());

  // The good client never noticed.
  Oid oids[] = {oid};
  EXPECT_EQ(decode(good->load(oids).objects[0].data), Value(std::int64_t{7}));
}

TEST(Server, HostileFramesCloseOnlyTheirConnection) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_frame_bytes = 4096; }));
  auto good = server.connect();
  Oid oid = good->new_oids(1);
  {
    RawClient oversized(server.port());
    oversized.hello();
    std::string frame;
    net::append_frame(frame, net::Kind::request, 2, 9, std::string(5000, 'x'));
    oversized.send(frame);
    auto reply = oversized.read_frame();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->first.kind, net::Kind::error);
    EXPECT_EQ(error_code_of(reply->second), ErrorCode::protocol);
    EXPECT_TRUE(oversized.closed_by_server());
  }
  {
    RawClient bad_checksum(server.port());
    bad_checksum.hello();
    std::string frame;
    net::append_frame(frame, net::Kind::request, static_cast<std::uint16_t>(net::Op::ping), 3,
                      net::Writer().array(0).bytes());
    frame[12] ^= 1;
    bad_checksum.send(frame);
    auto reply = bad_checksum.read_frame();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(error_code_of(reply->second), ErrorCode::protocol);
    EXPECT_TRUE(bad_checksum.closed_by_server());
  }
  {
    RawClient wrong_types(server.port());
    wrong_types.hello();
    net::Writer w;
    w.array(1).str("not a list of oids");
    wrong_types.request(net::Op::load, 4, w.bytes());
    auto reply = wrong_types.read_frame();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->first.id, 4u);
    EXPECT_EQ(error_code_of(reply->second), ErrorCode::protocol);
  }
  {
    RawClient garbage(server.port());
    garbage.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    auto reply = garbage.read_frame();
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->first.kind, net::Kind::error);
    EXPECT_TRUE(garbage.closed_by_server());
  }
  put_value(*good, oid, 1);
  Oid oids[] = {oid};
  EXPECT_EQ(good->load(oids).objects[0].version, good->changes_since(0).csn);
}

TEST(Server, RandomAndTruncatedFramesNeverHurtAWellBehavedClient) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  std::atomic<bool> done{false};
  std::atomic<int> commits{0};
  std::thread good_client([&] {
    auto good = server.connect();
    Oid oid = good->new_oids(1);
    while (!done) {
      put_value(*good, oid, commits++);
    }
  });
  std::mt19937 rng(42);
  auto byte = [&] { return static_cast<char>(rng() & 0xff); };
  // 10,000 frames: 2,000 connections of 5 frames each, half of them past hello.
  std::optional<RawClient> evil;
  for (int i = 0; i < 10'000; ++i) {
    if (i % 5 == 0) {
      evil.emplace(server.port());
      if (i % 2) evil->hello();
    }
    std::string frame;
    std::string body(rng() % 64, '\0');
    for (char& c : body)
      c = byte();
    net::append_frame(frame, static_cast<net::Kind>(1 + rng() % 4),
                      static_cast<std::uint16_t>(rng() % 20), static_cast<std::uint32_t>(rng()),
                      body);
    if (i % 3 == 0) frame.resize(1 + rng() % frame.size());  // truncated
    if (i % 5 == 0) frame[rng() % frame.size()] = byte();    // corrupted
    evil->send(frame);
  }
  done = true;
  good_client.join();
  EXPECT_GT(commits.load(), 0);
  auto after = server.connect();
  EXPECT_NO_THROW(after->ping());
}

TEST(Server, AClientThatPipelinesMoreThanItReadsIsServedInFull) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto writer = server.connect();
  Oid big = writer->new_oids(1);
  CommitRequest put;
  put.writes.push_back(WriteOp{big, "", "", std::string(256 * 1024, 'x')});
  writer->commit(put);
  // 400 loads of a 256 KiB object (100 MiB of replies) sent before reading any: the server
  // stops taking requests while replies pile up, and takes them again as they drain.
  RawClient greedy(server.port());
  greedy.hello();
  std::string frames;
  for (std::uint32_t id = 1; id <= 400; ++id) {
    net::Writer w;
    w.array(1);
    net::write_oids(w, std::vector<Oid>{big});
    net::append_frame(frames, net::Kind::request, static_cast<std::uint16_t>(net::Op::load), id,
                      w.bytes());
  }
  std::thread sender([&] { greedy.send(frames); });
  std::this_thread::sleep_for(300ms);
  std::set<std::uint32_t> answered;
  for (int i = 0; i < 400; ++i) {
    auto reply = greedy.read_frame();
    ASSERT_TRUE(reply.has_value()) << "the connection ended after " << i << " replies";
    ASSERT_EQ(reply->first.kind, net::Kind::response);
    ASSERT_GT(reply->second.size(), 256u * 1024);
    answered.insert(reply->first.id);
  }
  sender.join();
  EXPECT_EQ(answered.size(), 400u);
  EXPECT_NO_THROW(writer->ping()) << "other clients were held up";
}

// A client reading a large reply slowly is not a slow reader: pushes that arrive while the
// reply is still being written do not get it dropped, however small max_output_bytes is.
TEST(Server, PushesDuringALargeReplyDoNotDropTheClient) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_output_bytes = 1u << 20; }));
  auto writer = server.connect();
  std::vector<Oid> oids = put_large(*writer, 4, 4u << 20);
  RawClient reader(server.port());
  reader.hello();
  {
    net::Writer w;
    w.array(1).boolean(true);
    reader.request(net::Op::watch, 2, w.bytes());
    auto reply = reader.read_frame();
    ASSERT_TRUE(reply.has_value());
    ASSERT_EQ(reply->first.kind, net::Kind::response);
  }
  net::Writer w;
  w.array(1);
  net::write_oids(w, oids);
  reader.request(net::Op::load, 3, w.bytes());
  std::this_thread::sleep_for(200ms);  // the 16 MiB reply waits, mostly unsent
  std::uint64_t csn = put_value(*writer, oids[0], 7);
  auto reply = reader.read_frame();
  ASSERT_TRUE(reply.has_value()) << "the connection was dropped";
  EXPECT_EQ(reply->first.kind, net::Kind::response);
  EXPECT_EQ(reply->first.id, 3u);
  EXPECT_GT(reply->second.size(), 16u << 20);
  auto push = reader.read_frame();
  ASSERT_TRUE(push.has_value()) << "the connection was dropped";
  ASSERT_EQ(push->first.kind, net::Kind::push);
  net::Body body(push->second);
  EXPECT_EQ(body.reader().u64(), csn);
}

// A backing store whose changes_since can be held, once armed, until the test lets it go. Only
// a client's question is held, not the server's probe for its newest CSN as it starts (asked
// with csn = UINT64_MAX).
class GatedChanges final : public OverMemoryStore {
 public:
  Changes changes_since(std::uint64_t csn) override {
    {
      std::unique_lock lock(mu_);
      if (armed_ && csn != UINT64_MAX) {
        armed_ = false;
        entered_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return released_; });
      }
    }
    return inner().changes_since(csn);
  }
  void arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  bool wait_entered() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 5s, [&] { return entered_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool entered_ = false;
  bool released_ = false;
};

// A reconnecting client asks what changed while it was away; a push that arrives while that
// answer is on its way must not make the client skip it. Here the push is for the very CSN the
// answer reaches, so the answer, not the push, must be what the listener hears.
TEST(Server, APushDuringTheCatchUpDoesNotHideWhatChangedWhileAway) {
  auto owned = std::make_unique<GatedChanges>();
  GatedChanges& backing = *owned;
  TestServer server(std::move(owned), options_with([](net::ServerOptions& o) {
                      o.workers = 4;
                      o.blocking_store = true;  // the held call leaves the loop free for pushes
                    }));
  auto client = server.connect();
  ListenerLog heard;
  Subscription sub = client->subscribe(heard.listener());
  Oid a = backing.new_oids(1);
  Oid b = backing.new_oids(1);
  auto other = server.connect();
  ASSERT_TRUE(heard.wait_for(put_value(*other, a, 1), 5s));

  server.stop();
  ASSERT_TRUE(eventually([&] { return !client->hears_commits(); }));
  put_value(backing, b, 1);  // while the client is away
  backing.arm();
  server.restart();
  // Its catch-up (made by the client's reconnecting thread or by this call, whichever comes
  // first) is held in changes_since.
  std::thread reconnect([&] { client->ping(); });
  ASSERT_TRUE(backing.wait_entered());
  std::uint64_t csn = put_value(*other, a, 2);  // pushed to the client during the catch-up
  std::this_thread::sleep_for(200ms);           // the push arrives
  backing.release();
  reconnect.join();
  ASSERT_TRUE(heard.wait_for(csn, 5s));
  std::vector<Oid> oids = heard.oids_of(csn);
  EXPECT_NE(std::find(oids.begin(), oids.end(), b), oids.end())
      << "the commit made while the client was away was never reported";
  // The reconnecting thread (this test's call, or the store's own) says so once its greeting
  // ends, a moment after the catch-up it delivered.
  EXPECT_TRUE(eventually([&] { return client->hears_commits(); }));
}

// Whether `client` reaches its server again (after a restart) within eventually()'s patience:
// until it has reconnected, a call may still go out on the connection the server closed, and
// fail with IoError.
bool reconnected_to(net::RemoteStore& client) {
  return eventually([&] {
    try {
      client.ping();
      return true;
    } catch (const IoError&) {
      return false;
    }
  });
}

// A server started again over other data (a database replaced by a backup) may reach the same
// CSN as the one a client knew, with other states behind it. The client must not take what it
// cached, or versions it read, as current: that once let a stale cache overwrite the restored
// data without a conflict.
TEST(Server, AClientTakesNothingAsCurrentFromAServerStartedOverOtherData) {
  auto first = make_memory_store();
  TestServer server(std::move(first), options_with([](net::ServerOptions&) {}));
  auto remote = server.connect();
  net::RemoteStore& client = *remote;
  Database db(std::move(remote));
  auto reconnected = [&] { return reconnected_to(client); };
  db.transaction([](Txn& tx) { tx.root().set("n", Value(std::int64_t{1})); });
  db.transaction([](Txn& tx) { tx.root().set("n", Value(std::int64_t{2})); });
  Connection conn = db.connect();
  ASSERT_EQ(conn.root().get("n"), Value(std::int64_t{2}));
  conn.root().set("k", Value(std::int64_t{1}));  // read the root at version 2, then write

  // The backup: a store whose two commits gave the root other contents.
  auto restored = make_memory_store();
  {
    Oid root = Oid::root();
    for (const char* state : {R"({"n": 999})", R"({"n": 999, "m": "restored"})"}) {
      CommitRequest req;
      req.writes.push_back(WriteOp{root, "", "", encode(from_json(state))});
      restored->commit(req);
    }
  }
  server.restart_over(std::move(restored));
  ASSERT_TRUE(reconnected());

  // The transaction read the root before: it cannot commit over the restored one. The error
  // names it (the list was once moved away before the message was made).
  try {
    conn.commit();
    ADD_FAILURE() << "no ConflictError";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{Oid::root()});
    EXPECT_NE(std::string(e.what()).find("conflicts on oids 0: "), std::string::npos) << e.what();
  }
  // After that abort, and on a sync, the connection sees the restored root, not its cache.
  conn.sync();
  EXPECT_EQ(conn.root().get("n"), Value(std::int64_t{999}));
  conn.root().set("k", Value(std::int64_t{1}));
  conn.commit();
  db.view([](View& v) {
    EXPECT_EQ(v.root().get("n"), Value(std::int64_t{999}));
    EXPECT_EQ(v.root().get("m"), Value("restored"));
    EXPECT_EQ(v.root().get("k"), Value(std::int64_t{1}));
  });

  // A backup with a shorter history: CSN 1, below what the client has seen.
  auto older = make_memory_store();
  {
    CommitRequest req;
    req.writes.push_back(WriteOp{Oid::root(), "", "", encode(from_json(R"({"n": 7})"))});
    older->commit(req);
  }
  server.restart_over(std::move(older));
  ASSERT_TRUE(reconnected());
  conn.sync();
  EXPECT_EQ(conn.root().get("n"), Value(std::int64_t{7}))
      << "the connection kept states of a history the server no longer has";
  EXPECT_EQ(db.transaction([](Txn& tx) {
    tx.root().set("n", Value(std::int64_t{8}));
    return tx.root().get("n").as_int();
  }),
            8);
}

// A memory server started again has none of its data and hands out the same oids again. An
// object created before that, committed after, once went to an oid the new run had given another
// client since: that client's committed object was overwritten, without a conflict.
TEST(Server, AnObjectCreatedBeforeAServerRestartNeverOverwritesAnother) {
  TestServer server(make_memory_store());
  auto remote = server.connect();
  net::RemoteStore& client = *remote;
  Database db(std::move(remote));
  auto reconnected = [&] { return reconnected_to(client); };
  // Another client of the new run creates an object and links it at root "y".
  auto others_object = [&](const char* owner) {
    Database other(server.connect());
    return other.transaction([&](Txn& tx) {
      Object o = tx.create(Value(owner));
      tx.root().set("y", Value(o.ref()));
      return o.oid();
    });
  };
  auto state_of = [&](Oid oid) {
    Database fresh(server.connect());
    return fresh.view([&](View& v) { return v.get(oid).get(); });
  };

  // A connection's object, created before the restart and committed after.
  Connection conn = db.connect();
  Object mine = conn.create(Value("A"));
  server.restart_over(make_memory_store());
  ASSERT_TRUE(reconnected());
  Oid theirs = others_object("B");
  ASSERT_EQ(theirs, mine.oid()) << "the new run handed out another oid: nothing to test";
  conn.root().set("x", Value(mine.ref()));
  try {
    conn.commit();
    ADD_FAILURE() << "the commit wrote over the other client's object";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{theirs});
  }
  EXPECT_EQ(state_of(theirs), Value("B"));

  // With no other client since, the new run has not handed the oid out yet: a conflict too (it
  // was an InvalidArgument, which transaction() does not retry), and the object can be made
  // again.
  Object early = conn.create(Value("A"));
  server.restart_over(make_memory_store());
  ASSERT_TRUE(reconnected());
  conn.root().set("x", Value(early.ref()));
  try {
    conn.commit();
    ADD_FAILURE() << "committed an oid the new run never handed out";
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), std::vector<Oid>{early.oid()});
  }
  Object remade = conn.create(Value("A"));
  conn.root().set("x", Value(remade.ref()));
  conn.commit();
  EXPECT_EQ(state_of(remade.oid()), Value("A"));

  // The same in transaction(): the run that created its object before the restart conflicts,
  // and the next one creates it anew, at an oid of the new run.
  server.restart_over(make_memory_store());
  ASSERT_TRUE(reconnected());
  int runs = 0;
  Oid created = db.transaction([&](Txn& tx) {
    Object o = tx.create(Value("A"));
    if (++runs == 1) {
      server.restart_over(make_memory_store());
      EXPECT_TRUE(reconnected());
      EXPECT_EQ(others_object("B"), o.oid());
    }
    tx.root().set("x", Value(o.ref()));
    return o.oid();
  });
  EXPECT_EQ(runs, 2);
  EXPECT_NE(created, theirs);
  EXPECT_EQ(state_of(theirs), Value("B"));
  EXPECT_EQ(state_of(created), Value("A"));
}

// A client that only listens makes no calls that would reconnect it: after the server comes
// back, it reconnects by itself, hears what changed while it was away, and hears pushes again.
TEST(Server, AListenerHearsAgainAfterTheServerRestartsWithoutAnyCall) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  Store& backing = server.backing();
  auto client = server.connect();
  ListenerLog heard;
  Subscription sub = client->subscribe(heard.listener());
  Oid a = backing.new_oids(1);
  Oid b = backing.new_oids(1);
  ASSERT_TRUE(heard.wait_for(put_value(*server.connect(), a, 1), 5s));

  server.stop();
  ASSERT_TRUE(eventually([&] { return !client->hears_commits(); }));
  std::uint64_t away = put_value(backing, b, 1);
  std::this_thread::sleep_for(300ms);  // a few failed attempts while the server is down
  server.restart();
  ASSERT_TRUE(heard.wait_for(away, 10s)) << "the listener never heard of the commit made while "
                                            "the server was down";
  std::vector<Oid> oids = heard.oids_of(away);
  EXPECT_NE(std::find(oids.begin(), oids.end(), b), oids.end());
  ASSERT_TRUE(eventually([&] { return client->hears_commits(); }));
  EXPECT_TRUE(heard.wait_for(put_value(*server.connect(), a, 2), 5s)) << "no pushes after";
}

// A server restarted with another token refuses the client's: the background reconnect asks
// again only about once a minute, not every 2 s; a call still tries at once and says why.
TEST(Server, ARefusedTokenIsNotOfferedAgainEveryFewMoments) {
  std::atomic<int> refusals{0};
  TestServer server(make_memory_store(), options_with([&](net::ServerOptions& o) {
                      o.token = "old token";
                      o.log = [&](std::string_view message) {
                        if (message.find("wrong or missing token") != std::string_view::npos) {
                          ++refusals;
                        }
                      };
                    }));
  auto client = server.connect("old token");
  ListenerLog heard;
  Subscription sub = client->subscribe(heard.listener());
  server.restart_with_token("new token");
  ASSERT_TRUE(eventually([&] { return refusals.load() >= 1; }));
  // Backing off from 50 ms, the old loop offered it about five more times in this while.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(refusals.load(), 1) << "the background reconnect kept offering a refused token";
  EXPECT_THROW(client->ping(), AuthError);
  EXPECT_EQ(refusals.load(), 2);
}

// A store destroyed while its background reconnect waits on a server that accepted the
// connection but never answers must not wait out the reconnect's timeouts.
TEST(Server, DestroyingAStoreEndsAReconnectInProgress) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  std::uint16_t port = server.port();
  net::ClientOptions options = server.client();
  options.connect_timeout = 20s;
  options.call_timeout = 20s;
  auto client = std::make_unique<net::RemoteStore>(options);
  ListenerLog heard;
  Subscription sub = client->subscribe(heard.listener());
  server.stop();
  ASSERT_TRUE(eventually([&] { return !client->hears_commits(); }));
  // In the server's place, a listening socket nobody reads: connects succeed, hellos hang.
  asio::io_context io;
  asio::ip::tcp::acceptor silent(io);
  silent.open(asio::ip::tcp::v4());
  silent.set_option(asio::socket_base::reuse_address(true));
  silent.bind(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  silent.listen();
  std::this_thread::sleep_for(3s);  // past the back-off: an attempt is waiting for its hello
  auto start = std::chrono::steady_clock::now();
  sub.reset();
  client.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s)
      << "unsubscribing or destroying waited for the reconnect's 20 s timeouts";
}

TEST(Server, LocksDieWithTheirConnection) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto holder = server.connect();
  auto waiter = server.connect();
  auto token = holder->lock(LockRequest{"net", "holder", 60s, 0ms});
  ASSERT_TRUE(token.has_value());
  EXPECT_FALSE(waiter->lock(LockRequest{"net", "waiter", 60s, 0ms}).has_value());
  auto start = std::chrono::steady_clock::now();
  std::optional<std::uint64_t> got;
  std::thread t([&] { got = waiter->lock(LockRequest{"net", "waiter", 60s, 10s}); });
  std::this_thread::sleep_for(50ms);
  holder.reset();  // the connection closes, as when its process dies
  t.join();
  ASSERT_TRUE(got.has_value());
  EXPECT_GT(*got, *token);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(Server, OwnersAreScopedToTheirConnection) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto alice = server.connect();
  auto mallory = server.connect();
  ASSERT_TRUE(alice->lock(LockRequest{"n", "alice", 60s, 0ms}).has_value());
  EXPECT_FALSE(mallory->unlock("n", "alice")) << "another connection unlocked by owner name";
  EXPECT_FALSE(mallory->renew("n", "alice", 60s));
  EXPECT_TRUE(alice->unlock("n", "alice"));
}

// An unlock naming an owner that does not hold the lock releases nothing, and leaves the
// session's own lock to be released when it closes: it used to forget the lock, which then
// stayed until its TTL ran out.
TEST(Server, AnUnlockByAnotherOwnerLeavesTheLockToBeReleasedOnClose) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto holder = server.connect();
  auto other = server.connect();
  ASSERT_TRUE(holder->lock(LockRequest{"n", "alice", 60s, 0ms}).has_value());
  EXPECT_FALSE(holder->unlock("n", "bob"));
  holder.reset();  // the connection closes
  EXPECT_TRUE(other->lock(LockRequest{"n", "carol", 60s, 5s}).has_value());
}

// Several servers may front one store (one Redis): each one's first client was "session1", so
// a client of one server could renew, unlock and then take a lock a client of the other held.
TEST(Server, OwnersAreScopedToTheirServerToo) {
  struct Shared : ForwardingStore {
    explicit Shared(Store& store) : store_(store) {}
    Store& inner() const override { return store_; }
    Store& store_;
  };
  std::unique_ptr<Store> store = make_memory_store();
  TestServer first(std::make_unique<Shared>(*store), options_with([](net::ServerOptions&) {}));
  TestServer second(std::make_unique<Shared>(*store), options_with([](net::ServerOptions&) {}));
  auto alice = first.connect();
  auto mallory = second.connect();
  auto token = alice->lock(LockRequest{"shared", "worker", 60s, 0ms});
  ASSERT_TRUE(token.has_value());
  EXPECT_FALSE(mallory->renew("shared", "worker", 60s));
  EXPECT_FALSE(mallory->unlock("shared", "worker"));
  EXPECT_FALSE(mallory->lock(LockRequest{"shared", "worker", 60s, 0ms}).has_value());
  EXPECT_TRUE(alice->renew("shared", "worker", 60s));
  // Closing the other server's connection releases nothing of this one's.
  mallory.reset();
  auto third = second.connect();
  EXPECT_FALSE(third->lock(LockRequest{"shared", "other", 60s, 0ms}).has_value());
  EXPECT_TRUE(alice->unlock("shared", "worker"));
}

// The server's scope does not shorten a client's owner: the whole limit stays usable, and an
// owner past it is refused with its own size.
TEST(Server, ALockOwnerMayBeAsLongAsOnAStore) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto client = server.connect();
  auto other = server.connect();
  const std::string longest(max_lock_name_length, 'o');
  const std::string almost = longest.substr(1) + "p";  // same length, another owner
  ASSERT_TRUE(client->lock(LockRequest{"long", longest, 60s, 0ms}).has_value());
  EXPECT_FALSE(client->renew("long", almost, 60s));
  EXPECT_FALSE(other->renew("long", longest, 60s));
  EXPECT_TRUE(client->renew("long", longest, 60s));
  EXPECT_TRUE(client->unlock("long", longest));
  try {
    client->lock(LockRequest{"long", longest + "x", 60s, 0ms});
    FAIL() << "an owner over the limit was taken";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(max_lock_name_length + 1) + " bytes"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(client->renew("long", longest + "x", 60s), InvalidArgument);
  EXPECT_THROW(client->unlock("long", longest + "x"), InvalidArgument);
  EXPECT_NO_THROW(client->ping());  // refused, not hung up on
}

TEST(Server, ClientsPastTheLimitAreRefusedWithBusy) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_clients = 2; }));
  auto one = server.connect();
  auto two = server.connect();
  try {
    auto three = server.connect();
    FAIL() << "a third client was accepted";
  } catch (const Busy& e) {
    EXPECT_NE(std::string(e.what()).find("limit of 2 clients"), std::string::npos) << e.what();
  }
  one.reset();
  std::this_thread::sleep_for(100ms);
  EXPECT_NO_THROW(server.connect()->ping());
}

// A server at --max-clients still serves a few control connections (ping, info, stop), so that
// it can be inspected and stopped; they may do nothing else, and their room is bounded.
TEST(Server, AFullServerStillServesControlConnections) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.max_clients = 1; }));
  auto one = server.connect();
  net::ClientOptions control = server.client();
  control.control = true;
  net::RemoteStore inspector(control);
  EXPECT_NO_THROW(inspector.ping());
  EXPECT_FALSE(inspector.info().empty());
  // Past the limit, a connection whose hello does not say control is still refused.
  EXPECT_THROW(server.connect(), Busy);
  // A control connection may not use the store.
  net::RemoteStore nosy(control);
  try {
    nosy.new_oids(1);
    FAIL() << "a control connection allocated oids";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("only ping, info and stop"), std::string::npos)
        << e.what();
  }
  // The room past the limit is bounded: connections that say nothing hold it until they time
  // out, and one more is refused at once, even a control one.
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 3; ++i)
    silent.push_back(std::make_unique<RawClient>(server.port()));
  std::this_thread::sleep_for(100ms);
  try {
    net::RemoteStore refused(control);
    FAIL() << "a control connection past the room kept for them was served";
  } catch (const Busy& e) {
    EXPECT_NE(std::string(e.what()).find("limit of 1 clients"), std::string::npos) << e.what();
  }
  silent.clear();
  std::this_thread::sleep_for(100ms);
  // The room is free again: the stop gets through.
  net::RemoteStore stopper(control);
  EXPECT_NO_THROW(stopper.stop_server());
}

// A load of 20 million oids (a 20 MB request) took the server 2.8 GB, about 140 bytes an oid:
// a load names at most max_load_oids. The client refuses more before sending; the server
// answers more with InvalidArgument and keeps the connection; a Connection loads in pieces.
TEST(Server, ALoadNamesAtMostMaxLoadOids) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  auto client = server.connect();
  std::vector<Oid> too_many(max_load_oids + 1, Oid::root());
  EXPECT_THROW(client->load(too_many), InvalidArgument);
  too_many.pop_back();
  EXPECT_EQ(client->load(too_many).objects.size(), max_load_oids);

  RawClient raw(server.port());
  raw.hello();
  net::Writer w;
  w.array(1);
  net::write_oids(w, std::vector<Oid>(max_load_oids + 1, Oid::root()));
  raw.request(net::Op::load, 7, w.bytes());
  auto reply = raw.read_frame();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->first.kind, net::Kind::error);
  EXPECT_EQ(reply->first.id, 7u);
  EXPECT_EQ(error_code_of(reply->second), ErrorCode::invalid_argument);
  net::Writer ping;
  ping.array(0);
  raw.request(net::Op::ping, 8, ping.bytes());
  reply = raw.read_frame();
  ASSERT_TRUE(reply.has_value()) << "the connection was closed";
  EXPECT_EQ(reply->first.kind, net::Kind::response);
}

// Before its hello, a connection can make the server buffer only a small frame: a client without
// the token cannot hold 65 MiB per connection.
TEST(Server, ALargeFrameBeforeHelloIsRefusedAtItsHeader) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  RawClient raw(server.port());
  std::string header;
  net::append_frame(header, net::Kind::request, static_cast<std::uint16_t>(net::Op::hello), 1,
                    std::string(net::max_hello_bytes + 1, '\0'));
  header.resize(net::header_size);  // the header alone: the server must refuse without the body
  raw.send(header);
  auto reply = raw.read_frame();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->first.kind, net::Kind::error);
  EXPECT_EQ(error_code_of(reply->second), ErrorCode::protocol);
  EXPECT_TRUE(raw.closed_by_server());
  // After its hello a client may send frames up to the server's limit.
  auto good = server.connect();
  Oid oid = good->new_oids(1);
  CommitRequest big;
  big.writes.push_back(WriteOp{oid, "", "", encode(Value(std::string(200'000, 'x')))});
  EXPECT_NO_THROW(good->commit(big));
}

// After its hello a client may announce a frame up to the limit, but the server holds memory
// only for what arrives: 20 connections that each sent a 64 MiB header and one byte once made
// it reserve 1.3 GB.
TEST(Server, AFrameHeaderAloneDoesNotMakeTheServerReserveItsBody) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  // The server's count of bytes read tells when it has read every header; each info request
  // adds its own size to it, measured first.
  net::ClientOptions control = server.client();
  control.control = true;
  net::RemoteStore inspector(control);
  auto bytes_in = [&] {
    for (const auto& [name, value] : inspector.info()) {
      if (name == "bytes_in") return std::stoull(value);
    }
    ADD_FAILURE() << "no bytes_in in the server's info";
    return 0ull;
  };
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<RawClient>(server.port()));
    clients.back()->hello();  // answered: the server has read it
  }
  const unsigned long long start = bytes_in();
  const unsigned long long per_info = bytes_in() - start;
  std::size_t before = resident_bytes();
  const std::string header = announce_frame(net::Kind::request, net::Op::commit, 2, 64u << 20);
  for (auto& raw : clients)
    raw->send(header);
  // The n-th info reports start + (n - 1) * per_info, plus whatever else the server has read.
  unsigned long long infos = 2;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (bytes_in() < start + infos++ * per_info + clients.size() * header.size()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the server did not read the headers";
    std::this_thread::sleep_for(5ms);
  }
  std::size_t grown = resident_bytes() - std::min(before, resident_bytes());
  EXPECT_LT(grown, 100u << 20) << "20 frame headers made the server hold " << (grown >> 20)
                               << " MiB";
}

// The idle timeout bounds the whole hello, not the gaps between its bytes.
TEST(Server, AHelloTrickledByteByByteIsCutOffAtTheIdleTimeout) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.idle_timeout = 500ms; }));
  RawClient raw(server.port());
  net::Writer w;
  w.array(4).u64(1).u64(1).str("").str("slow");
  std::string frame;
  net::append_frame(frame, net::Kind::request, static_cast<std::uint16_t>(net::Op::hello), 1,
                    w.bytes());
  ASSERT_GT(frame.size(), 20u);  // sent a byte every 100 ms: over 2 s, four timeouts' worth
  for (char c : frame) {
    raw.send(std::string_view(&c, 1));  // each gap well inside the timeout
    std::this_thread::sleep_for(100ms);
  }
  auto reply = raw.read_frame();
  EXPECT_FALSE(reply.has_value() && reply->first.kind == net::Kind::response)
      << "a hello that took four times the idle timeout was answered";
  EXPECT_TRUE(raw.closed_by_server());
}

// A client reading a large reply over a slow link sends nothing meanwhile (the server reads no
// requests while so much is unsent), but it is not idle: the reply must arrive whole.
TEST(Server, AClientReadingALargeReplySlowlyIsNotDroppedAsIdle) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.idle_timeout = 1s; }));
  Oid oid;
  {
    auto writer = server.connect();
    oid = writer->new_oids(1);
    CommitRequest req;
    req.writes.push_back(WriteOp{oid, "", "", std::string(12 * 1024 * 1024, 'x')});
    writer->commit(req);
  }
  RawClient slow(server.port());
  slow.hello();
  net::Writer w;
  w.array(1).array(1).u64(oid.value());
  slow.request(net::Op::load, 2, w.bytes());
  // 256 KiB every 100 ms: about 5 s for the reply, five idle timeouts.
  auto reply = slow.read_frame_slowly(256 * 1024, 100ms);
  ASSERT_TRUE(reply.has_value()) << "the server dropped a client that was reading its reply";
  EXPECT_EQ(reply->first.kind, net::Kind::response);
  EXPECT_GT(reply->second.size(), 12u * 1024 * 1024);
}

TEST(Server, SilentClientsAreDroppedAndHeartbeatsKeepOthersAlive) {
  TestServer server(make_memory_store(),
                    options_with([](net::ServerOptions& o) { o.idle_timeout = 300ms; }));
  RawClient silent(server.port());
  auto live = server.connect();
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_NO_THROW(live->ping()) << "a client that sends heartbeats was dropped";
}

TEST(Server, NonLoopbackWithoutTokenIsRefused) {
  auto store = make_memory_store();
  try {
    net::Server server(*store, options_with([](net::ServerOptions& o) {
      o.host = "0.0.0.0";
      o.port = 0;
    }));
    FAIL() << "listening on all interfaces without a token was allowed";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("without a token"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(net::Server(*store, options_with([](net::ServerOptions& o) {
    o.host = "0.0.0.0";
    o.port = 0;
    o.token = "t";
  })));
}

TEST(Server, StopAnswersInFlightRequestsThenReturns) {
  TempDir dir;
  FileStoreOptions file_options;
  file_options.log = [](std::string_view) {};
  TestServer server(FileStore::open(dir.file("s.cairn"), file_options));
  auto client = server.connect();
  Oid oid = client->new_oids(1);
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&] {
      try {
        for (;;) {
          put_value(*client, oid, 1);
          ++acknowledged;
        }
      } catch (const Error&) {
        // The server went away.
      }
    });
  }
  std::this_thread::sleep_for(200ms);
  server.stop();
  for (auto& w : writers)
    w.join();
  std::uint64_t csn = server.backing().changes_since(0).csn;
  EXPECT_GE(csn, static_cast<std::uint64_t>(acknowledged.load()));
  EXPECT_GT(acknowledged.load(), 0);
}

// Whether every socket of this process connected from `port` (the server's side of its
// connections) has TCP_NODELAY set; false if there is none.
bool server_sockets_have_nodelay(std::uint16_t port) {
  int found = 0;
  for (int fd = 0; fd < 4096; ++fd) {
    sockaddr_in local{};
    sockaddr_in peer{};
    socklen_t length = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) continue;
    length = sizeof peer;
    if (local.sin_family != AF_INET || ntohs(local.sin_port) != port ||
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) {
      continue;
    }
    int on = 0;
    length = sizeof on;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &length) != 0 || on == 0) return false;
    ++found;
  }
  return found > 0;
}

// A TLS server over a memory store, and client options that trust it.
struct TlsServer {
  TlsFiles files;
  TestServer server{make_memory_store(), options_with([this](net::ServerOptions& o) {
                      o.tls_cert = files.cert();
                      o.tls_key = files.key();
                    })};
  net::ClientOptions client() const {
    net::ClientOptions options = server.client();
    options.tls = true;
    options.ca_file = files.ca();
    return options;
  }
};

// Without TCP_NODELAY on the server's side of a TLS connection, each commit of a watching client
// waited about 40 ms for a delayed ACK (4.4 s for 100 commits, against 0.01 s in plain TCP).
TEST(Server, TlsConnectionsSendWithoutDelay) {
  TlsServer tls;
  net::RemoteStore client(tls.client());
  client.ping();
  EXPECT_TRUE(server_sockets_have_nodelay(tls.server.port()));
}

// Connections refused past the room for control connections do not hold that room while they
// linger (a TLS handshake that never comes is closed only at the idle timeout).
TEST(Server, RefusedConnectionsDoNotTakeTheControlRoom) {
  TlsFiles files;
  TestServer server(make_memory_store(), options_with([&](net::ServerOptions& o) {
                      o.tls_cert = files.cert();
                      o.tls_key = files.key();
                      o.max_clients = 1;
                    }));
  net::ClientOptions options = server.client();
  options.tls = true;
  options.ca_file = files.ca();
  net::RemoteStore one(options);
  // Four take the room (their handshakes never come), four more are to be refused.
  std::vector<std::unique_ptr<RawClient>> room, refused;
  for (int i = 0; i < 4; ++i)
    room.push_back(std::make_unique<RawClient>(server.port()));
  std::this_thread::sleep_for(100ms);
  for (int i = 0; i < 4; ++i)
    refused.push_back(std::make_unique<RawClient>(server.port()));
  std::this_thread::sleep_for(100ms);
  room.clear();  // the room is free again; the refused ones still wait for their handshakes
  std::this_thread::sleep_for(200ms);
  net::ClientOptions control = options;
  control.control = true;
  EXPECT_NO_THROW(net::RemoteStore(control).ping())
      << "connections being refused kept the room for control connections";
}

TEST(Server, TlsVerifiesTheServerAndRefusesPlaintext) {
  TlsServer tls;
  TlsFiles& files = tls.files;
  TestServer& server = tls.server;
  net::ClientOptions options = tls.client();
  net::RemoteStore good(options);
  Oid oid = good.new_oids(1);
  put_value(good, oid, 5);

  options.ca_file = files.other_ca();
  EXPECT_THROW(net::RemoteStore{options}, IoError) << "a server signed by another CA was trusted";

  options.insecure = true;  // the explicit opt-out
  EXPECT_NO_THROW(net::RemoteStore{options}.ping());

  net::ClientOptions plain = server.client();
  plain.connect_timeout = 2s;
  EXPECT_THROW(net::RemoteStore{plain}, IoError) << "a plaintext client reached a TLS port";

  Oid oids[] = {oid};
  EXPECT_EQ(decode(good.load(oids).objects[0].data), Value(std::int64_t{5}));
}

TEST(Server, TlsClientToAPlaintextPortFailsCleanly) {
  TestServer server(make_memory_store(), options_with([](net::ServerOptions&) {}));
  net::ClientOptions options = server.client();
  options.tls = true;
  options.insecure = true;
  options.connect_timeout = 2s;
  EXPECT_THROW(net::RemoteStore{options}, IoError);
  EXPECT_NO_THROW(server.connect()->ping());
}

TEST(Server, ReconnectsAfterTheServerRestarts) {
  auto backing = make_memory_store();
  net::ServerOptions options;
  options.workers = 0;
  options.port = 0;
  auto first = std::make_unique<net::Server>(*backing, options);
  std::uint16_t port = first->port();
  std::thread t1([&] { first->run(); });
  net::ClientOptions client_options;
  client_options.port = port;
  net::RemoteStore client(client_options);
  Oid oid = client.new_oids(1);
  put_value(client, oid, 1);
  first->stop();
  t1.join();
  first.reset();
  EXPECT_THROW(put_value(client, oid, 2), IoError);
  options.port = port;
  net::Server second(*backing, options);
  std::thread t2([&] { second.run(); });
  EXPECT_NO_THROW(put_value(client, oid, 3)) << "the client did not reconnect";
  second.stop();
  t2.join();
}

}  // namespace
}  // namespace cairn::testing
