// One byte stream for the protocol, whatever carries it: TCP, a unix socket, or TLS over TCP.
// Server sessions and the client use the same interface, so framing code never cares.
#pragma once

#include <fmt/format.h>
#include <sys/un.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "cairn/error.h"

namespace cairn::net {

class Transport {
 public:
  using IoHandler = std::function<void(const asio::error_code&, std::size_t)>;
  using Done = std::function<void(const asio::error_code&)>;
  virtual ~Transport() = default;
  // TLS handshake (server or client side as constructed); completes at once for plain streams.
  virtual void handshake(Done done) = 0;
  virtual void read_some(asio::mutable_buffer buffer, IoHandler done) = 0;
  // Writes all of `buffer`.
  virtual void write(asio::const_buffer buffer, IoHandler done) = 0;
  // Writes what the stream takes now without waiting, and returns how much that was (0 when it
  // would block, or for a stream that has no such write: TLS). `ec` is set only for an error.
  virtual std::size_t try_write(asio::const_buffer buffer, asio::error_code& ec) = 0;
  virtual void close() = 0;
  virtual std::string peer() const = 0;
};

template <class Stream>
class StreamTransport final : public Transport {
 public:
  // For TLS streams, `server` chooses the handshake side.
  template <class... Args>
  explicit StreamTransport(bool server, Args&&... args)
      : server_(server), stream_(std::forward<Args>(args)...) {}

  Stream& stream() { return stream_; }
  auto& socket() {
    if constexpr (is_tls) {
      return stream_.lowest_layer();
    } else {
      return stream_;
    }
  }

  void handshake(Done done) override {
    if constexpr (is_tls) {
      stream_.async_handshake(
          server_ ? asio::ssl::stream_base::server : asio::ssl::stream_base::client,
          std::move(done));
    } else {
      asio::post(stream_.get_executor(), [done = std::move(done)] { done({}); });
    }
  }
  void read_some(asio::mutable_buffer buffer, IoHandler done) override {
    stream_.async_read_some(buffer, std::move(done));
  }
  void write(asio::const_buffer buffer, IoHandler done) override {
    asio::async_write(stream_, buffer, std::move(done));
  }
  std::size_t try_write(asio::const_buffer buffer, asio::error_code& ec) override {
    ec.clear();
    if constexpr (is_tls) {
      (void)buffer;
      return 0;  // a TLS record is written by the TLS engine's own operations
    } else {
      // Non-blocking mode affects only synchronous calls like this one; the asynchronous reads
      // and writes behave the same either way.
      if (!stream_.non_blocking()) stream_.non_blocking(true, ec);
      if (ec) return 0;
      std::size_t n = stream_.write_some(buffer, ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) ec.clear();
      return n;
    }
  }
  void close() override {
    asio::error_code ignored;
    socket().shutdown(asio::socket_base::shutdown_both, ignored);
    socket().close(ignored);
  }
  std::string peer() const override {
    asio::error_code ec;
    if constexpr (is_tls) {
      auto endpoint = stream_.lowest_layer().remote_endpoint(ec);
      return ec ? std::string("?") : describe(endpoint);
    } else {
      auto endpoint = stream_.remote_endpoint(ec);
      return ec ? std::string("?") : describe(endpoint);
    }
  }

 private:
  static constexpr bool is_tls = !std::is_same_v<Stream, asio::ip::tcp::socket> &&
                                 !std::is_same_v<Stream, asio::local::stream_protocol::socket>;
  static std::string describe(const asio::ip::tcp::endpoint& e) {
    return e.address().to_string() + ":" + std::to_string(e.port());
  }
  static std::string describe(const asio::local::stream_protocol::endpoint& e) {
    return "unix:" + e.path();
  }
  bool server_;
  Stream stream_;
};

// The address of the unix socket at `path`. Throws InvalidArgument naming the path and the limit
// when it is longer than a socket address holds (sun_path, with its terminating NUL), where
// Asio would throw a std::system_error that says only "File name too long".
inline asio::local::stream_protocol::endpoint unix_endpoint(const std::string& path) {
  constexpr std::size_t longest = sizeof(sockaddr_un{}.sun_path) - 1;
  if (path.size() > longest) {
    throw InvalidArgument(fmt::format(
        "unix socket path {} is {} bytes, longer than the {} bytes a socket address holds", path,
        path.size(), longest));
  }
  return asio::local::stream_protocol::endpoint(path);
}

using TcpTransport = StreamTransport<asio::ip::tcp::socket>;
using UnixTransport = StreamTransport<asio::local::stream_protocol::socket>;
using TlsTransport = StreamTransport<asio::ssl::stream<asio::ip::tcp::socket>>;

}  // namespace cairn::net
