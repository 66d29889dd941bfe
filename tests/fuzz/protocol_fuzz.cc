// libFuzzer target: arbitrary bytes sent to a server, as a client would send them, are decoded
// (frames, bodies) and dispatched to a store; the server never crashes, never reads out of
// bounds, and answers only with well-formed frames.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "cairn/error.h"
#include "cairn/store.h"
#include "net/protocol.h"
#include "net/server.h"
#include "net/transport.h"

namespace {

using namespace cairn;

// A connection whose client sends `input` in small pieces, then hangs up; everything the server
// writes is checked to be a sequence of valid frames.
class FuzzTransport final : public net::Transport {
 public:
  FuzzTransport(asio::io_context& io, std::string input, bool* done)
      : io_(io), input_(std::move(input)), done_(done) {}
  void handshake(Done done) override {
    asio::post(io_, [done] { done({}); });
  }
  void read_some(asio::mutable_buffer buffer, IoHandler done) override {
    std::size_t n = std::min({buffer.size(), input_.size() - at_, std::size_t{97}});
    std::memcpy(buffer.data(), input_.data() + at_, n);
    at_ += n;
    asio::post(io_, [done, n] { done(n ? asio::error_code() : asio::error::eof, n); });
  }
  void write(asio::const_buffer buffer, IoHandler done) override {
    output_.append(static_cast<const char*>(buffer.data()), buffer.size());
    asio::post(io_, [done, n = buffer.size()] { done({}, n); });
  }
  // Takes a little at once (so that the server's immediate and asynchronous writes both run).
  std::size_t try_write(asio::const_buffer buffer, asio::error_code& ec) override {
    ec.clear();
    std::size_t n = std::min(buffer.size(), std::size_t{61});
    output_.append(static_cast<const char*>(buffer.data()), n);
    return n;
  }
  void close() override {
    *done_ = true;
    // Whatever the server sent must parse as frames.
    std::size_t at = 0;
    while (at < output_.size()) {
      net::FrameHeader h =
          net::parse_header(std::string_view(output_).substr(at), net::default_max_frame_bytes);
      if (output_.size() - at - net::header_size < h.body_size) std::abort();
      net::check_body(h, std::string_view(output_).substr(at + net::header_size, h.body_size));
      at += net::header_size + h.body_size;
    }
  }
  std::string peer() const override { return "fuzz"; }

 private:
  asio::io_context& io_;
  std::string input_;
  std::size_t at_ = 0;
  std::string output_;
  bool* done_;
};

struct Fixture {
  Fixture() {
    net::ServerOptions options;
    options.tcp = false;
    options.workers = 0;
    options.max_frame_bytes = 1 << 20;
    server = std::make_unique<net::Server>(*store, options);
  }
  std::unique_ptr<Store> store = make_memory_store();
  std::unique_ptr<net::Server> server;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture fixture;  // one server for every input, as a long-running server would be
  asio::io_context& io = fixture.server->io_context();
  bool done = false;
  fixture.server->adopt(std::make_unique<FuzzTransport>(
      io, std::string(reinterpret_cast<const char*>(data), size), &done));
  for (int i = 0; !done && i < 100000; ++i)
    fixture.server->poll();
  if (!done) std::abort();  // the server stopped making progress on a finite input
  return 0;
}
