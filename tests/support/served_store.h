// A cairn server run in-process on its own thread over a backing store, for tests that talk to
// it through RemoteStore or raw sockets.
#pragma once

#include <memory>
#include <thread>

#include "cairn/store.h"
#include "net/remote_store.h"
#include "net/server.h"

namespace cairn::testing {

class TestServer {
 public:
  explicit TestServer(std::unique_ptr<Store> backing, net::ServerOptions options = {})
      : backing_(std::move(backing)) {
    options.port = 0;
    server_ = std::make_unique<net::Server>(*backing_, std::move(options));
    thread_ = std::thread([this] { server_->run(); });
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;
  ~TestServer() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
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
  std::unique_ptr<Store> backing_;
  std::unique_ptr<net::Server> server_;
  std::thread thread_;
};

// A Store that is a RemoteStore talking to a server of its own: what the conformance suite
// runs against.
class ServedStore final : public Store {
 public:
  ServedStore(std::unique_ptr<Store> backing, net::ServerOptions options = {})
      : server_(std::move(backing), std::move(options)), remote_(server_.connect()) {}
  ~ServedStore() override {
    remote_.reset();
    server_.stop();
  }
  LoadResult load(std::span<const Oid> oids) override { return remote_->load(oids); }
  std::uint64_t commit(const CommitRequest& r) override { return remote_->commit(r); }
  Changes changes_since(std::uint64_t csn) override { return remote_->changes_since(csn); }
  Subscription subscribe(CommitListener l) override { return remote_->subscribe(std::move(l)); }
  Oid new_oids(std::uint32_t count) override { return remote_->new_oids(count); }
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override {
    return remote_->scan_type(type, after, limit);
  }
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override {
    return remote_->scan_keys(type, prefix, after, limit);
  }
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override {
    return remote_->find_key(type, key);
  }
  std::optional<std::uint64_t> lock(const LockRequest& r) override { return remote_->lock(r); }
  bool unlock(std::string_view name, std::string_view owner) override {
    return remote_->unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return remote_->renew(name, owner, ttl);
  }
  PackStats pack() override { return remote_->pack(); }

 private:
  TestServer server_;
  std::unique_ptr<net::RemoteStore> remote_;
};

}  // namespace cairn::testing
