// RemoteStore: the Store contract served by `cairn serve`, over the wire protocol
// (docs/protocol.md). What cairn://TOKEN@HOST:PORT and cairns:// open.
//
// One connection per store, shared by every thread that uses the store: calls are pipelined
// (each carries a request id) and an I/O thread of the store's own reads replies and pushes.
// Commit listeners run on that I/O thread and must not call this store.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/store.h"
#include "cairn/url.h"

namespace cairn::net {

struct ClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 2972;
  std::string unix_path;  // connect here instead of host:port
  std::string token;
  bool tls = false;
  std::string ca_file;    // TLS: the CA that signed the server certificate; "" = system store
  bool insecure = false;  // TLS without verifying the server: an explicit opt-out
  // Say in the hello that this connection sends only ping, info and stop: a server at its
  // --max-clients still serves a few such connections (docs/protocol.md §4.1).
  bool control = false;
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds call_timeout{60'000};
};

// Builds the options a cairn:// or cairns:// URL names. Query parameters: `ca=FILE`,
// `insecure=1`, `socket=PATH` (a unix socket). Without a token in the URL, env CAIRN_TOKEN.
ClientOptions client_options(const StoreUrl& url);

class RemoteStore final : public Store {
 public:
  // Connects and says hello. Throws IoError if the server cannot be reached, AuthError for a
  // refused token, ProtocolError for a server that speaks no common protocol version.
  explicit RemoteStore(ClientOptions options);
  ~RemoteStore() override;

  LoadResult load(std::span<const Oid> oids) override;
  std::uint64_t commit(const CommitRequest& request) override;
  Changes changes_since(std::uint64_t csn) override;
  Subscription subscribe(CommitListener listener) override;
  Oid new_oids(std::uint32_t count) override;
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override;
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override;
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override;
  std::optional<std::uint64_t> lock(const LockRequest& request) override;
  bool unlock(std::string_view name, std::string_view owner) override;
  bool renew(std::string_view name, std::string_view owner, std::chrono::milliseconds ttl) override;
  PackStats pack() override;
  bool is_remote() const override { return true; }
  // False from a lost connection until a reconnect has watched again and caught up. While
  // subscribe()'s listeners exist, a lost connection is made again in the background. Listeners
  // run on the I/O thread, except that a reconnect's catch-up is told on the thread that
  // reconnects (the caller whose call found the connection down, or the background one).
  bool hears_commits() const override;

  // The server's statistics, as (name, value) pairs in the server's order.
  std::vector<std::pair<std::string, std::string>> info();
  // Asks the server to finish in-flight requests and exit.
  void stop_server();
  void ping();
  const std::string& server_name() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

std::unique_ptr<Store> open_remote_store(const StoreUrl& url);

}  // namespace cairn::net
