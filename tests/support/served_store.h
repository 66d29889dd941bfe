// A cairn server run in-process on its own thread over a backing store, for tests that talk to
// it through RemoteStore or raw sockets.
#pragma once

#include <memory>
#include <random>
#include <thread>

#include "cairn/store.h"
#include "net/remote_store.h"
#include "net/server.h"
#include "support/forwarding_store.h"

namespace cairn::testing {

class TestServer {
 public:
  explicit TestServer(std::unique_ptr<Store> backing, net::ServerOptions options = {})
      : backing_(std::move(backing)), options_(std::move(options)) {
    options_.port = 0;
    // Kept by restart(), which goes on over the same store and history.
    if (options_.instance == 0) options_.instance = new_instance();
    start();
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;
  ~TestServer() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }

  // Stops the server, if it runs, and starts a new one on the same port and backing store.
  void restart() {
    stop();
    options_.port = server_->port();
    start();
  }

  // Stops the server and starts it again on the same port and store, asking for another token.
  void restart_with_token(std::string token) {
    stop();
    options_.port = server_->port();
    options_.token = std::move(token);
    start();
  }

  // Stops the server and starts one on the same port over `backing` instead, as after a
  // database was replaced by a backup: another history, so another instance.
  void restart_over(std::unique_ptr<Store> backing) {
    stop();
    options_.port = server_->port();
    server_.reset();  // uses the old store until here
    backing_ = std::move(backing);
    options_.instance = new_instance();
    start();
  }

  std::uint16_t port() const { return server_->port(); }
  Store& backing() { return *backing_; }

  net::ClientOptions client(std::string token = {}) const {
    net::ClientOptions options;
    options.port = port();
    options.token = std::move(token);
    return options;
  }
  std::unique_ptr<net::RemoteStore> connect(std::string token = {}) const {
    return std::make_unique<net::RemoteStore>(client(std::move(token)));
  }

 private:
  static std::uint64_t new_instance() {
    std::random_device random;
    return (std::uint64_t{random()} << 32) | random() | 1;
  }
  void start() {
    server_.reset();
    server_ = std::make_unique<net::Server>(*backing_, options_);
    thread_ = std::thread([this] { server_->run(); });
  }

  std::unique_ptr<Store> backing_;
  net::ServerOptions options_;
  std::unique_ptr<net::Server> server_;
  std::thread thread_;
};

// A Store that is a RemoteStore talking to a server of its own: what the conformance suite
// runs against.
class ServedStore final : public ForwardingStore {
 public:
  ServedStore(std::unique_ptr<Store> backing, net::ServerOptions options = {})
      : server_(std::move(backing), std::move(options)), remote_(server_.connect()) {}
  ~ServedStore() override {
    remote_.reset();
    server_.stop();
  }

 private:
  Store& inner() const override { return *remote_; }
  TestServer server_;
  std::unique_ptr<net::RemoteStore> remote_;
};

}  // namespace cairn::testing
