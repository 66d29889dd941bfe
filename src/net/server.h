// `cairn serve`: one Asio event loop in front of a Store. Requests are pipelined per connection;
// calls that may block (commits that fsync, pack, every call on a networked store) run on a
// worker pool so that commits from all clients meet in the store's group commit while the loop
// keeps serving. Protocol: docs/protocol.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cairn/store.h"

namespace asio {
class io_context;
}
namespace cairn::net {
class Transport;
}

namespace cairn::net {

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 2972;  // 0 = any free port (see Server::port())
  std::string unix_path;      // also (or, with port_enabled false, only) listen here
  bool tcp = true;
  std::string token;  // required in hello when not empty
  std::string tls_cert, tls_key;
  std::size_t max_clients = 1024;
  std::uint32_t max_frame_bytes = 0;  // 0 = default_max_frame_bytes
  // A load whose reply would be larger is refused (InvalidArgument): clients accept no larger
  // frame than default_max_reply_bytes, which is also the default (0) and the most allowed.
  std::uint32_t max_reply_bytes = 0;
  // A client silent for this long is dropped; clients ping at a third of it.
  std::chrono::milliseconds idle_timeout{30'000};
  // Worker threads for blocking calls. 0 = run commits on the loop (right for a store whose
  // commits never wait for a disk or a network, e.g. memory: or --fsync never).
  std::size_t workers = 32;
  // Every call on the store may block (a networked store): run them all on the workers.
  bool blocking_store = false;
  // A connection whose unsent replies and pushes exceed this is dropped as too slow.
  std::size_t max_output_bytes = 256u * 1024 * 1024;
  // Run pack() when this many bytes were committed since the last one (0 = never).
  std::uint64_t gc_bytes = 0;
  std::string name = "cairn";  // reported in hello and info
  // Names the history the store's CSNs count, in every hello reply (docs/protocol.md §4.1): a
  // client that reconnects to another instance takes nothing it knew as current. 0 = a random
  // one, new for each Server. Give a Server started again over the same Store object (whose
  // history goes on) the same nonzero value; never give it to one over other data.
  std::uint64_t instance = 0;
  // Where the server reports what it does (stopping, automatic packs). Default: nowhere.
  std::function<void(std::string_view)> log;
};

class Server {
 public:
  // Binds and starts accepting. Throws InvalidArgument for a non-loopback address without a
  // token or an unusable TLS key pair, IoError when the address cannot be bound.
  Server(Store& store, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  std::uint16_t port() const;  // the bound TCP port
  // Serves until stop() (or a stop request, or SIGINT/SIGTERM if handle_signals()) and the
  // in-flight requests have finished.
  void run();
  // Thread-safe: stop accepting, finish in-flight requests, close connections, return from run().
  void stop();
  void handle_signals();

  // For fuzzing: serve a connection over `transport` (server side, not yet handshaken), and
  // run whatever handlers are ready without blocking. Only while run() is not running.
  void adopt(std::unique_ptr<Transport> transport);
  void poll();
  asio::io_context& io_context();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::net
