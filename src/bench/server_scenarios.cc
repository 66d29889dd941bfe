// The server scenarios: 50 clients over loopback against `cairn serve`, and the same load from
// redis-benchmark against redis-server, in the same run.
//
// The cairn side's load comes from a driver built like redis-benchmark: one thread, an event
// loop, 50 connections each with one request outstanding (no pipelining), so both servers see
// the same shape of traffic from a client of the same cost.
#include <fmt/format.h>

#include <asio.hpp>
#include <memory>
#include <thread>

#include "bench/bench.h"
#include "bench/redis_peer.h"
#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/file_store.h"
#include "net/protocol.h"
#include "net/remote_store.h"
#include "net/server.h"

namespace cairn::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int clients = 50;

// A file store served on a free port by a server running on its own thread.
class ServedFile {
 public:
  ServedFile(const std::string& path, FsyncPolicy policy) {
    FileStoreOptions options;
    options.fsync = policy;
    options.log = [](std::string_view) {};
    store_ = FileStore::open(path, options);
    net::ServerOptions server_options;
    server_options.port = 0;
    // Commits that fsync wait on workers; enough that every client's commit can join a group.
    server_options.workers = policy == FsyncPolicy::never ? 0 : 64;
    server_ = std::make_unique<net::Server>(*store_, server_options);
    thread_ = std::thread([this] { server_->run(); });
  }
  ~ServedFile() {
    server_->stop();
    thread_.join();
  }
  std::uint16_t port() const { return server_->port(); }
  Store& store() { return *store_; }

 private:
  std::unique_ptr<FileStore> store_;
  std::unique_ptr<net::Server> server_;
  std::thread thread_;
};

// One connection of the driver: sends its request, waits for the reply, sends the next.
class DriverConnection {
 public:
  DriverConnection(asio::io_context& io, std::uint16_t port, std::string frame,
                   std::uint64_t requests)
      : socket_(io), frame_(std::move(frame)), left_(requests) {
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    socket_.set_option(asio::ip::tcp::no_delay(true));
    net::Writer w;
    w.array(4).u64(1).u64(1).str("").str("cairn bench");
    std::string hello;
    net::append_frame(hello, net::Kind::request, static_cast<std::uint16_t>(net::Op::hello), 0,
                      w.bytes());
    asio::write(socket_, asio::buffer(hello));
    read_reply_sync();
  }

  void start() { send(); }

 private:
  void read_reply_sync() {
    asio::read(socket_, asio::buffer(header_));
    check_header();
    body_.resize(body_size_);
    asio::read(socket_, asio::buffer(body_));
  }
  void check_header() {
    net::FrameHeader h = net::parse_header(std::string_view(header_.data(), header_.size()),
                                           net::default_max_frame_bytes);
    if (h.kind != net::Kind::response) throw Error("bench: the server answered with an error");
    body_size_ = h.body_size;
  }
  void send() {
    if (left_ == 0) return;
    --left_;
    asio::async_write(socket_, asio::buffer(frame_), [this](const asio::error_code& ec, auto) {
      if (ec) throw IoError("bench: write failed: " + ec.message());
      asio::async_read(socket_, asio::buffer(header_), [this](const asio::error_code& e, auto) {
        if (e) throw IoError("bench: read failed: " + e.message());
        check_header();
        body_.resize(body_size_);
        asio::async_read(socket_, asio::buffer(body_), [this](const asio::error_code& e2, auto) {
          if (e2) throw IoError("bench: read failed: " + e2.message());
          send();
        });
      });
    });
  }

  asio::ip::tcp::socket socket_;
  std::string frame_;
  std::uint64_t left_;
  std::array<char, net::header_size> header_{};
  std::size_t body_size_ = 0;
  std::string body_;
};

// Sends `total` requests over `clients` connections (connection i sends frames[i]); returns
// requests per second.
double drive(std::uint16_t port, const std::vector<std::string>& frames, std::uint64_t total) {
  asio::io_context io(1);
  std::vector<std::unique_ptr<DriverConnection>> connections;
  for (const std::string& frame : frames) {
    connections.push_back(
        std::make_unique<DriverConnection>(io, port, frame, total / frames.size()));
  }
  auto start = Clock::now();
  for (auto& c : connections)
    c->start();
  io.run();
  return static_cast<double>(total / frames.size() * frames.size()) / seconds_since(start);
}

std::string request(net::Op op, const std::string& body) {
  std::string frame;
  net::append_frame(frame, net::Kind::request, static_cast<std::uint16_t>(op), 1, body);
  return frame;
}

// One frame per client: a blind write of a 3-byte value (redis-benchmark's SET) to its own oid.
std::vector<std::string> commit_frames(Store& store) {
  Oid first = store.new_oids(clients);
  std::vector<std::string> frames;
  for (int i = 0; i < clients; ++i) {
    CommitRequest commit;
    commit.writes.push_back(
        WriteOp{Oid(first.value() + static_cast<std::uint64_t>(i)), "", "", encode(Value("xxx"))});
    net::Writer w;
    w.array(1);
    net::write_commit_request(w, commit);
    frames.push_back(request(net::Op::commit, w.bytes()));
  }
  return frames;
}

Result commit_50(Context& ctx, bool durable) {
  std::string name = durable ? "server.durable_commit_50" : "server.commit_50";
  std::string peer_name = durable ? "redis_aof_always_set_50" : "redis_set_50";
  if (auto why = missing_redis_tools()) return skipped(name, "commits/s", peer_name, 1.0, *why);
  std::uint64_t n = durable ? ctx.size(5'000, 40'000) : ctx.size(50'000, 500'000);
  ctx.progress(fmt::format("{}: {} single-object commits from {} clients, fsync {}", name, n,
                           clients, durable ? "batch" : "never"));
  double cairn = 0;
  {
    ServedFile served(ctx.dir + "/served.cairn", durable ? FsyncPolicy::batch : FsyncPolicy::never);
    cairn = drive(served.port(), commit_frames(served.store()), n);
  }
  ctx.progress(fmt::format("{}: redis-benchmark -c {} -t set, {}", name, clients,
                           durable ? "appendfsync always" : "no persistence"));
  RedisPeer redis(ctx.dir, durable);
  double peer = redis.benchmark("set", clients, n);
  return measured(name, "commits/s", cairn, peer_name, peer, 1.0);
}

Result load_50(Context& ctx) {
  if (auto why = missing_redis_tools()) {
    return skipped("server.load_50", "loads/s", "redis_get_50", 1.0, *why);
  }
  std::uint64_t n = ctx.size(50'000, 500'000);
  ctx.progress(fmt::format("server.load_50: {} loads by oid from {} clients", n, clients));
  double cairn = 0;
  {
    ServedFile served(ctx.dir + "/served.cairn", FsyncPolicy::never);
    std::vector<std::string> commits = commit_frames(served.store());
    drive(served.port(), commits, clients);  // one object per client, written once
    Oid first = served.store().new_oids(1);  // the oids written were the 50 before this one
    std::vector<std::string> frames;
    for (int i = 0; i < clients; ++i) {
      net::Writer w;
      w.array(1);
      net::write_oids(
          w, std::vector<Oid>{Oid(first.value() - clients + static_cast<std::uint64_t>(i))});
      frames.push_back(request(net::Op::load, w.bytes()));
    }
    cairn = drive(served.port(), frames, n);
  }
  ctx.progress(fmt::format("server.load_50: redis-benchmark -c {} -t get", clients));
  RedisPeer redis(ctx.dir, false);
  redis.benchmark("set", clients, 1000);  // so that GET finds its key, as our loads find theirs
  double peer = redis.benchmark("get", clients, n);
  return measured("server.load_50", "loads/s", cairn, "redis_get_50", peer, 1.0);
}

// The network's limit: one connection over loopback TCP, a thread echoing each 20-byte message
// (a frame header's size) back, the client waiting for each echo before sending the next.
double loopback_ping_pong(std::uint64_t n) {
  asio::io_context io(1);
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::thread echo([&] {
    asio::ip::tcp::socket peer = acceptor.accept();
    peer.set_option(asio::ip::tcp::no_delay(true));
    std::array<char, net::header_size> buf{};
    for (std::uint64_t i = 0; i < n; ++i) {
      asio::read(peer, asio::buffer(buf));
      asio::write(peer, asio::buffer(buf));
    }
  });
  asio::ip::tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  client.set_option(asio::ip::tcp::no_delay(true));
  std::array<char, net::header_size> buf{};
  auto start = Clock::now();
  for (std::uint64_t i = 0; i < n; ++i) {
    asio::write(client, asio::buffer(buf));
    asio::read(client, asio::buffer(buf));
  }
  double rate = static_cast<double>(n) / seconds_since(start);
  echo.join();
  return rate;
}

// One client's round trips through the protocol and the server (ping requests on one
// connection, each awaited) against the loopback ping-pong above.
Result ping_1(Context& ctx) {
  std::uint64_t n = ctx.size(20'000, 200'000);
  ctx.progress(fmt::format("server.ping_1: {} pings on one connection vs a loopback ping-pong", n));
  auto store = make_memory_store();
  net::ServerOptions options;
  options.port = 0;
  options.workers = 0;
  net::Server server(*store, options);
  std::thread loop([&] { server.run(); });
  std::vector<std::string> frames = {request(net::Op::ping, net::Writer().array(0).bytes())};
  auto [cairn, peer] = best_of(
      ctx.quick ? 1 : 3, [&] { return drive(server.port(), frames, n); },
      [&] { return loopback_ping_pong(n); });
  server.stop();
  loop.join();
  return measured("server.ping_1", "round trips/s", cairn, "loopback_ping_pong", peer, 0.5);
}

}  // namespace

std::vector<Scenario> server_scenarios() {
  return {
      {"server.commit_50", [](Context& ctx) { return commit_50(ctx, false); }},
      {"server.durable_commit_50", [](Context& ctx) { return commit_50(ctx, true); }},
      {"server.load_50", load_50},
      {"server.ping_1", ping_1},
  };
}

}  // namespace cairn::bench
