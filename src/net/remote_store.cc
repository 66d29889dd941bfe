// RemoteStore (remote_store.h): calls become request frames written by the I/O thread; the
// caller waits for the reply with the same request id. Pushes go to the commit listeners.
#include "net/remote_store.h"

#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "cairn/error.h"
#include "cairn/version.h"
#include "net/protocol.h"
#include "net/transport.h"
#include "store/store_util.h"

namespace cairn::net {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t read_chunk = 64 * 1024;

struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Kind kind = Kind::response;
  std::string body;
  std::string failure;  // set when the connection died before the reply came
};

}  // namespace

ClientOptions client_options(const StoreUrl& url) {
  ClientOptions options;
  options.host = url.host.empty() ? "127.0.0.1" : url.host;
  options.port = url.port ? url.port : default_server_port;
  options.token = url.user;
  if (options.token.empty()) {
    if (const char* env = std::getenv("CAIRN_TOKEN")) options.token = env;
  }
  options.tls = url.scheme == StoreUrl::Scheme::cairns;
  for (const auto& [name, value] : url.params) {
    if (name == "ca") {
      options.ca_file = value;
    } else if (name == "insecure") {
      if (value != "1" && value != "true" && value != "0" && value != "false") {
        throw InvalidArgument(
            fmt::format("insecure={} in a cairn URL: give 1 or true (or 0 or false)", value));
      }
      options.insecure = value == "1" || value == "true";
    } else if (name == "socket") {
      options.unix_path = value;
    } else {
      throw InvalidArgument(fmt::format(
          "unknown parameter \"{}\" in a cairn URL (known: ca, insecure, socket)", name));
    }
  }
  // Settings that would be ignored, and with them what the user meant, are refused.
  if (!options.unix_path.empty()) {
    if (options.tls) {
      // Asked for TLS (and perhaps a CA to check), it would have connected in plaintext.
      throw InvalidArgument(
          "socket= connects to a local unix socket, in plaintext: use cairn://localhost?socket=, "
          "not cairns://");
    }
    if (options.host != "localhost" || options.port != default_server_port) {
      throw InvalidArgument(
          fmt::format("socket= connects to a local unix socket, not to {}:{}: write "
                      "cairn://localhost?socket=PATH",
                      options.host, options.port));
    }
  }
  if (!options.tls && (!options.ca_file.empty() || options.insecure)) {
    throw InvalidArgument(
        "ca and insecure are TLS settings: use them with cairns://, not cairn:// (which connects "
        "in plaintext)");
  }
  if (options.insecure && !options.ca_file.empty()) {
    throw InvalidArgument(
        "a cairn URL gives ca (verify the server against this CA) and insecure (verify nothing): "
        "give one");
  }
  return options;
}

class RemoteStore::Impl : public std::enable_shared_from_this<Impl> {
 public:
  explicit Impl(ClientOptions options) : options_(std::move(options)) {}

  ~Impl() {
    {
      std::lock_guard lock(reconnect_mu_);
      stopping_ = true;
    }
    reconnect_cv_.notify_all();
    if (reconnector_.joinable()) {
      // A reconnect in progress ends now, not when its connect or calls time out: whichever
      // thread runs the I/O context (the reconnecting one while it opens the transport, the I/O
      // thread after) closes the transport and fails the call waiting.
      asio::post(io_, [this] {
        if (transport_) transport_->close();
        lost("the store is being closed");
      });
      reconnector_.join();
    }
    shutdown();
  }

  void shutdown() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
    if (transport_) transport_->close();
    transport_.reset();
  }

  void connect() {
    std::lock_guard connect_lock(connect_mu_);
    if (ready()) return;
    shutdown();
    // The I/O thread is stopped: this thread alone runs io_ until read() below. What the old
    // connection left queued (its read's abort, a failed greeting's drop) runs while the new
    // one opens (open_transport runs io_): the old one is taken as lost first, with its pending
    // calls failed, so that those handlers find nothing to drop.
    lost("the connection is being made again");
    ++connection_;
    io_.restart();
    open_transport();
    {
      std::lock_guard lock(mu_);
      connected_ = true;
      refusal_.clear();  // the last connection's
    }
    in_len_ = 0;
    replied_ = false;
    out_pending_.clear();
    out_writing_.clear();
    read();
    thread_ = std::thread([this] { io_.run(); });

    try {
      greet();
    } catch (...) {
      // Connected, but not greeted, watching or caught up: drop the connection (on the I/O
      // thread, which owns it), so that the next call starts over. Only this connection: the
      // handler may run after the next connect() has made another (io_ keeps what was posted
      // across its restart), which it must leave alone.
      asio::post(io_, [this, connection = connection_] {
        if (connection == connection_) lost("the connection failed while it was being set up");
      });
      throw;
    }
  }

  // connect()'s conversation once the transport is open: hello, then (if anyone listens)
  // watch and catch up.
  void greet() {
    Writer w;
    w.array(options_.control ? 5 : 4)
        .u64(protocol_version)
        .u64(protocol_version)
        .str(options_.token)
        .str(fmt::format("cairn {}", version));
    if (options_.control) w.u64(hello_control);
    std::string reply;
    try {
      reply = call_connected(Op::hello, w.bytes(), options_.connect_timeout);
    } catch (const IoError& e) {
      // A TLS server closes a plaintext connection without a word: its handshake failed.
      if (options_.tls || replied_) throw;
      throw IoError(fmt::format(
          "{} (if the server serves TLS, connect with cairns:// or cairn shell --tls)", e.what()));
    }
    Body body(reply);
    Reader r = body.reader();
    if (std::uint64_t spoken = r.u64(); spoken != protocol_version) {
      throw ProtocolError(
          fmt::format("{} answered hello in protocol version {}; this client "
                      "speaks {}",
                      where(), spoken, protocol_version));
    }
    server_name_ = r.str();
    r.u64();  // its CSN
    heartbeat_ = std::chrono::milliseconds(std::max<std::uint64_t>(r.u64(), 50));
    features_ = r.at_end() ? 0 : r.u64();               // a server from before features has none
    std::uint64_t instance = r.at_end() ? 0 : r.u64();  // 0: a server from before instances
    // 0: a server from before it said its frame limit; requests then go out unchecked.
    max_request_body_ = r.at_end() ? 0 : r.u64();
    {
      std::lock_guard lock(mu_);
      if (instance_ != 0 && instance != instance_) {
        // Another run of the server, perhaps over a database restored from a backup: its CSNs
        // and versions may be ours with other meanings. From now on callers see them shifted
        // past every value handed out so far, so that nothing learned before can pass for
        // something current (docs/protocol.md §6).
        offset_ = highest_ + 1;
      }
      instance_ = instance;
    }
    asio::post(io_, [this] {
      silent_ticks_ = 0;
      heartbeat();
    });
    bool rewatch = false;
    std::uint64_t since = 0;
    {
      std::lock_guard lock(listeners_mu_);
      rewatch = !listeners_.empty();
      // From here until the catch-up is delivered, pushes wait: one delivered first would move
      // last_push_csn_ past commits the catch-up has yet to report.
      since = last_push_csn_;
      catching_up_ = rewatch;
      held_pushes_.clear();
    }
    if (rewatch) {
      watch(true, true);
      catch_up(since);
    }
    std::lock_guard lock(mu_);
    if (!connected_) return;  // lost meanwhile
    ready_ = true;
    hearing_ = true;
  }

  // Connected and greeted: calls may go out.
  bool ready() {
    std::lock_guard lock(mu_);
    return connected_ && ready_;
  }

  // A CSN or version as callers see it: the server's plus the offset of the connection it came
  // on. Versions keep 0 for "absent".
  std::uint64_t client_csn(std::uint64_t server_csn, std::uint64_t offset) {
    std::uint64_t csn = server_csn + offset;
    hand_out(offset, csn);
    return csn;
  }
  // Before values computed with `offset` go to a caller: notes the highest of them, unless a
  // reconnect to another instance changed the offset meanwhile (they could then pass for the
  // new history's): IoError, as for a connection lost during the call. Ordered against greet()
  // by mu_.
  void hand_out(std::uint64_t offset, std::uint64_t highest) {
    std::lock_guard lock(mu_);
    if (offset != offset_) {
      throw IoError(
          fmt::format("connection to {} lost during the call: the server was started "
                      "again, with another history",
                      where()));
    }
    highest_ = std::max(highest_, highest);
  }
  std::uint64_t offset() {
    std::lock_guard lock(mu_);
    return offset_;
  }

  bool hearing() const { return hearing_.load(); }

  // Throws Unsupported unless the server (connected to first, if need be) has `feature`.
  void require(std::uint64_t feature, std::string_view what) {
    if (!ready()) connect();
    if ((features_.load() & feature) == 0) {
      throw Unsupported(fmt::format("the server at {} ({}) does not support {}: upgrade it",
                                    where(), server_name_, what));
    }
  }

  // Sends a request and waits for its reply; connects first if the connection is down.
  // `offset`, if given, is set to the offset of the connection the request went on (for the
  // reply's CSNs); `expect`, if given, is the offset the body was written for: should the
  // connection now have another, the request is not sent and HistoryChanged is thrown.
  // `need`: the features (hello) the request needs of the server; should the connection it
  // would go on (perhaps a new one, to another server) lack one, it is not sent: Unsupported.
  std::string call(Op op, std::string_view body, std::uint64_t* offset = nullptr,
                   std::optional<std::uint64_t> expect = std::nullopt, std::uint64_t need = 0) {
    return call(op, body, options_.call_timeout, offset, expect, need);
  }
  std::string call(Op op, std::string_view body, std::chrono::milliseconds timeout,
                   std::uint64_t* offset = nullptr,
                   std::optional<std::uint64_t> expect = std::nullopt, std::uint64_t need = 0) {
    if (!ready()) connect();
    return call_connected(op, body, timeout, offset, expect, need);
  }

  struct HistoryChanged {};

  std::string call_connected(Op op, std::string_view body, std::chrono::milliseconds timeout,
                             std::uint64_t* offset = nullptr,
                             std::optional<std::uint64_t> expect = std::nullopt,
                             std::uint64_t need = 0) {
    if (std::uint64_t limit = max_request_body_.load(); limit != 0 && body.size() > limit) {
      throw InvalidArgument(fmt::format(
          "a {} request of {} bytes is larger than the server's frame limit of {} bytes "
          "(cairn serve --max-frame-bytes); nothing was sent{}",
          op_name(static_cast<std::uint16_t>(op)), body.size(), limit,
          op == Op::commit ? ": commit fewer or smaller objects at a time" : ""));
    }
    auto pending = std::make_shared<Pending>();
    std::uint32_t id = 0;
    {
      std::lock_guard lock(mu_);
      if (!connected_) {
        // Refused before this call was even sent (at --max-clients the server may answer the
        // handshake with its refusal before hello): the refusal, as lost() gives it to calls.
        if (!refusal_.empty()) throw_error_body(refusal_);
        throw IoError(fmt::format("connection to {} lost: {}", where(), lost_));
      }
      if (expect && *expect != offset_) throw HistoryChanged{};
      if ((features_.load() & need) != need) {
        throw Unsupported(fmt::format(
            "the server at {} does not support what this {} needs (feature bits {}): upgrade "
            "it; nothing was sent",
            where(), op_name(static_cast<std::uint16_t>(op)), need & ~features_.load()));
      }
      if (offset != nullptr) *offset = offset_;
      do {
        id = next_id_++;
      } while (id == 0 || pending_.contains(id));
      pending_.emplace(id, pending);
    }
    std::string frame;
    append_frame(frame, Kind::request, static_cast<std::uint16_t>(op), id, body);
    asio::post(io_, [this, frame = std::move(frame)] { send(frame); });
    std::unique_lock wait_lock(pending->mu);
    if (!pending->cv.wait_for(wait_lock, timeout, [&] { return pending->done; })) {
      wait_lock.unlock();
      std::lock_guard lock(mu_);
      pending_.erase(id);
      throw IoError(fmt::format("{} did not answer {} within {} ms", where(),
                                op_name(static_cast<std::uint16_t>(op)), timeout.count()));
    }
    if (!pending->failure.empty()) {
      throw IoError(fmt::format("connection to {} lost during {}: {}", where(),
                                op_name(static_cast<std::uint16_t>(op)), pending->failure));
    }
    if (pending->kind == Kind::error) throw_error_body(pending->body);
    return std::move(pending->body);
  }

  // `greeting`: from greet(), on a connection not yet ready for other calls.
  void watch(bool on, bool greeting = false) {
    Writer w;
    w.array(1).boolean(on);
    std::uint64_t offset = 0;
    Body body(greeting ? call_connected(Op::watch, w.bytes(), options_.call_timeout, &offset)
                       : call(Op::watch, w.bytes(), &offset));
    Reader r = body.reader();
    std::uint64_t csn = client_csn(r.u64(), offset);
    std::lock_guard lock(listeners_mu_);
    if (on && last_push_csn_ == 0) last_push_csn_ = csn;
  }

  // After a reconnect: tell listeners about commits after `since` (the last push before the
  // connection was lost), then about the pushes held back meanwhile.
  void catch_up(std::uint64_t since) {
    std::uint64_t offset = this->offset();
    std::uint64_t csn = 0;
    bool complete = false;
    std::vector<Oid> oids;
    if (since < offset) {
      // From before the server's history changed (greet): `since` means nothing to it. Learn
      // its CSN (a load of no objects) and report everything unknown.
      Writer w;
      w.array(1).array(0);
      Body body(call_connected(Op::load, w.bytes(), options_.call_timeout, &offset));
      csn = client_csn(body.reader().u64(), offset);
    } else {
      Writer w;
      w.array(1).u64(since - offset);
      Body body(call_connected(Op::changes, w.bytes(), options_.call_timeout, &offset));
      Reader r = body.reader();
      csn = client_csn(r.u64(), offset);
      complete = r.boolean();
      oids = read_oids(r.array());
    }
    std::lock_guard lock(listeners_mu_);
    catching_up_ = false;
    if (!complete) {
      deliver_locked(csn, {});  // the server's history is gone: what changed is unknown (store.h)
    } else if (!oids.empty()) {
      deliver_locked(csn, oids);
    }
    for (const auto& [held_csn, held_oids] : held_pushes_)
      deliver_locked(held_csn, held_oids);  // those the catch-up covered are dropped
    held_pushes_.clear();
  }

  Subscription subscribe(CommitListener listener) {
    std::uint64_t id = 0;
    bool first = false;
    {
      std::lock_guard lock(listeners_mu_);
      id = next_listener_++;
      first = listeners_.empty();
      listeners_.emplace(id, std::move(listener));
    }
    if (first) {
      start_reconnector();
      watch(true);
    }
    std::weak_ptr<Impl> weak = shared_from_this();
    return Subscription([weak, id] {
      auto self = weak.lock();
      if (!self) return;
      bool last = false;
      {
        std::lock_guard lock(self->listeners_mu_);
        self->listeners_.erase(id);
        last = self->listeners_.empty();
      }
      if (last) self->unwatch();
    });
  }

  // Unwatching is a courtesy (a closed connection unwatches too): sent without waiting for the
  // answer, and not at all while the connection is down or being made again, so that dropping
  // a subscription never waits on the server. (Id 0: the answer is dropped, as a ping's is.)
  void unwatch() {
    std::lock_guard lock(mu_);
    if (!connected_ || !hearing_) return;
    Writer w;
    w.array(1).boolean(false);
    std::string frame;
    append_frame(frame, Kind::request, static_cast<std::uint16_t>(Op::watch), 0, w.bytes());
    asio::post(io_, [this, frame = std::move(frame)] { send(frame); });
  }

  const std::string& server_name() const { return server_name_; }
  const ClientOptions& options() const { return options_; }
  std::string where() const {
    return options_.unix_path.empty() ? fmt::format("{}:{}", options_.host, options_.port)
                                      : options_.unix_path;
  }

 private:
  // Runs the I/O context on this thread until `done` or the connect timeout.
  void run_until(const bool& done, std::string_view what) {
    auto deadline = Clock::now() + options_.connect_timeout;
    while (!done) {
      auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero() || io_.run_one_for(left) == 0) {
        if (done) break;
        if (transport_) transport_->close();
        io_.restart();
        throw IoError(fmt::format("{} to {} timed out after {} ms", what, where(),
                                  options_.connect_timeout.count()));
      }
    }
    io_.restart();
  }

  void open_transport() {
    asio::error_code ec;
    bool done = false;
    if (!options_.unix_path.empty()) {
      auto unix = std::make_unique<UnixTransport>(false, io_);
      unix->socket().async_connect(unix_endpoint(options_.unix_path),
                                   [&](const asio::error_code& e) {
                                     ec = e;
                                     done = true;
                                   });
      transport_ = std::move(unix);
      run_until(done, "connecting");
      if (ec) throw IoError(fmt::format("cannot connect to {}: {}", where(), ec.message()));
      return;
    }
    asio::ip::tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec) throw IoError(fmt::format("cannot resolve {}: {}", options_.host, ec.message()));
    auto connect_socket = [&](auto& socket) {
      asio::async_connect(socket, endpoints,
                          [&](const asio::error_code& e, const asio::ip::tcp::endpoint&) {
                            ec = e;
                            done = true;
                          });
      run_until(done, "connecting");
      if (ec) throw IoError(fmt::format("cannot connect to {}: {}", where(), ec.message()));
      asio::error_code ignored;
      socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    };
    if (!options_.tls) {
      auto tcp = std::make_unique<TcpTransport>(false, io_);
      auto* raw = tcp.get();
      transport_ = std::move(tcp);
      connect_socket(raw->socket());
      return;
    }
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    if (options_.insecure) {
      tls_->set_verify_mode(asio::ssl::verify_none);
    } else {
      tls_->set_verify_mode(asio::ssl::verify_peer);
      if (options_.ca_file.empty())
        tls_->set_default_verify_paths(ec);
      else
        tls_->load_verify_file(options_.ca_file, ec);
      if (ec) {
        throw InvalidArgument(
            fmt::format("cannot load CA file {}: {}", options_.ca_file, ec.message()));
      }
    }
    auto tls = std::make_unique<TlsTransport>(false, io_, *tls_);
    auto* raw = tls.get();
    transport_ = std::move(tls);
    if (!options_.insecure) {
      raw->stream().set_verify_callback(asio::ssl::host_name_verification(options_.host));
    }
    SSL_set_tlsext_host_name(raw->stream().native_handle(), options_.host.c_str());
    connect_socket(raw->socket());
    done = false;
    raw->handshake([&](const asio::error_code& e) {
      ec = e;
      done = true;
    });
    run_until(done, "TLS handshake");
    if (ec) {
      std::string why = ec.message();
      long verify = SSL_get_verify_result(raw->stream().native_handle());
      if (!options_.insecure && verify == X509_V_ERR_UNSPECIFIED) {
        // What the host name check reports.
        why = fmt::format("the server's certificate is not valid for the host name {}",
                          options_.host);
      } else if (!options_.insecure && verify != X509_V_OK) {
        why =
            fmt::format("the server's certificate is not trusted ({}); it was checked against {}",
                        X509_verify_cert_error_string(verify),
                        options_.ca_file.empty() ? std::string("the system's CAs")
                                                 : fmt::format("the CA file {}", options_.ca_file));
      }
      throw IoError(fmt::format("TLS handshake with {} failed: {}", where(), why));
    }
  }

  // I/O thread from here on.
  void send(const std::string& frame) {
    out_pending_ += frame;
    sent_since_tick_ = true;
    flush();
  }

  void flush() {
    if (!transport_ || !out_writing_.empty() || out_pending_.empty()) return;
    out_writing_.swap(out_pending_);
    transport_->write(asio::buffer(out_writing_),
                      [this, connection = connection_](const asio::error_code& ec, std::size_t) {
                        if (connection != connection_) return;  // an earlier connection's (connect)
                        out_writing_.clear();
                        if (ec) return lost(ec.message());
                        flush();
                      });
  }

  void read() {
    if (in_.size() - in_len_ < read_chunk) in_.resize(in_len_ + read_chunk);
    transport_->read_some(
        asio::buffer(in_.data() + in_len_, in_.size() - in_len_),
        [this, connection = connection_](const asio::error_code& ec, std::size_t n) {
          if (connection != connection_) return;  // an earlier connection's (connect)
          if (ec) {
            return lost(ec == asio::error::eof ? "the server closed it" : ec.message());
          }
          in_len_ += n;
          silent_ticks_ = 0;
          try {
            consume();
          } catch (const Error& e) {
            return lost(e.what());
          }
          read();
        });
  }

  void consume() {
    std::size_t at = 0;
    // A TLS server answers a plaintext hello with a TLS alert record: content type 21 (or 22, a
    // handshake), then major version 3. No frame starts that way (it would be a body of over
    // 350 MB), so say what is wrong rather than that the frame is too large.
    if (!options_.tls && !replied_ && in_len_ >= 2 && (in_[0] == 0x15 || in_[0] == 0x16) &&
        in_[1] == 0x03) {
      throw ProtocolError(
          "the server answered with TLS: it serves TLS only, so connect with cairns:// (cairn "
          "shell --tls)");
    }
    while (in_len_ - at >= header_size) {
      FrameHeader header =
          parse_header(std::string_view(in_.data() + at, header_size), default_max_reply_bytes);
      replied_ = true;  // with a frame: whatever follows, it is not a TLS server
      if (header.kind == Kind::request) throw ProtocolError("the server sent a request");
      if (in_len_ - at < header_size + header.body_size) {
        // read() adds a chunk of room when little is left.
        in_.resize(frame_buffer_size(in_.size(), in_len_, at + header_size + header.body_size));
        break;
      }
      std::string_view body(in_.data() + at + header_size, header.body_size);
      at += header_size + header.body_size;
      check_body(header, body);
      if (header.kind == Kind::push) {
        on_push(header, body);
        continue;
      }
      std::shared_ptr<Pending> pending;
      {
        std::lock_guard lock(mu_);
        auto it = pending_.find(header.id);
        if (it == pending_.end()) {
          // A connection-level error (sent with id 0) ends the connection; replies to pings
          // and to calls that timed out are dropped.
          if (header.kind == Kind::error && header.id == 0) error_without_id_ = std::string(body);
          continue;
        }
        pending = std::move(it->second);
        pending_.erase(it);
      }
      std::lock_guard lock(pending->mu);
      pending->kind = header.kind;
      pending->body.assign(body);
      pending->done = true;
      pending->cv.notify_one();
    }
    if (at > 0) {
      std::memmove(in_.data(), in_.data() + at, in_len_ - at);
      in_len_ -= at;
    }
  }

  void on_push(const FrameHeader& header, std::string_view bytes) {
    if (header.op != push_commit) return;  // unknown pushes are for newer clients
    Body body(bytes);
    Reader r = body.reader();
    std::uint64_t csn = client_csn(r.u64(), offset());
    deliver(csn, read_oids(r.array()));
  }

  void deliver(std::uint64_t csn, std::vector<Oid> oids) {
    std::lock_guard lock(listeners_mu_);
    if (catching_up_) {
      held_pushes_.emplace_back(csn, std::move(oids));
      return;
    }
    deliver_locked(csn, oids);
  }

  void deliver_locked(std::uint64_t csn, const std::vector<Oid>& oids) {
    if (csn <= last_push_csn_) return;
    last_push_csn_ = csn;
    for (auto& [id, listener] : listeners_)
      listener(csn, oids);
  }

  void lost(const std::string& why) {
    std::map<std::uint32_t, std::shared_ptr<Pending>> failed;
    // The server's error frame without an id, if it sent one before closing: why it did (at its
    // client limit: Busy; a refused hello: AuthError). Before the connection was set up, the
    // calls waiting (the greeting's) throw that, not IoError. After, they keep IoError, which
    // says their outcome is unknown: a server dropping a slow reader drops replies to commits
    // it has applied.
    std::string refusal;
    {
      std::lock_guard lock(mu_);
      if (!connected_) return;
      const bool was_ready = ready_;
      connected_ = false;
      ready_ = false;
      hearing_ = false;
      lost_ = why;
      if (!error_without_id_.empty()) {
        try {
          throw_error_body(error_without_id_);
        } catch (const Error& e) {
          lost_ = e.what();
        }
        if (!was_ready) refusal = error_without_id_;
        error_without_id_.clear();
      }
      refusal_ = refusal;
      failed.swap(pending_);
    }
    for (auto& [id, pending] : failed) {
      std::lock_guard lock(pending->mu);
      if (refusal.empty()) {
        pending->failure = lost_;
      } else {
        pending->kind = Kind::error;
        pending->body = refusal;
      }
      pending->done = true;
      pending->cv.notify_one();
    }
    if (transport_) transport_->close();
    heartbeat_timer_.cancel();
    want_reconnect();
  }

  // While anyone listens, a lost connection is made again in the background, so that pushes
  // resume (and the catch-up reports what changed meanwhile) without waiting for the next call.
  // Attempts back off from 50 ms to 2 s, jittered so that the clients of a restarted server do
  // not all come back at once. A server that refuses the token (restarted with another one) is
  // asked again only about once a minute: the token will not change by itself, and each attempt
  // is a handshake and a line in the server's log. A call still tries at once, and throws.
  void start_reconnector() {
    std::lock_guard lock(reconnect_mu_);
    if (reconnector_.joinable() || stopping_) return;
    reconnector_ = std::thread([this] { reconnect_loop(); });
  }

  void want_reconnect() {
    {
      std::lock_guard lock(reconnect_mu_);
      reconnect_wanted_ = true;
    }
    reconnect_cv_.notify_all();
  }

  void reconnect_loop() {
    constexpr std::chrono::milliseconds first_delay{50};
    constexpr std::chrono::milliseconds max_delay{2'000};
    constexpr std::chrono::milliseconds refused_delay{60'000};
    std::minstd_rand jitter(static_cast<std::uint32_t>(
        reinterpret_cast<std::uintptr_t>(this) ^
        static_cast<std::uintptr_t>(Clock::now().time_since_epoch().count())));
    std::chrono::milliseconds delay = first_delay;
    std::unique_lock lock(reconnect_mu_);
    for (;;) {
      reconnect_cv_.wait(lock, [&] { return stopping_ || reconnect_wanted_; });
      if (stopping_) return;
      reconnect_wanted_ = false;
      lock.unlock();
      bool listening = false;
      {
        std::lock_guard listeners_lock(listeners_mu_);
        listening = !listeners_.empty();
      }
      bool up = false;
      bool refused = false;
      if (listening) {
        try {
          connect();  // returns at once if a call has reconnected meanwhile
          up = true;
        } catch (const AuthError&) {
          refused = true;
        } catch (const std::exception&) {
          // Still down: try again after the delay.
        }
      }
      lock.lock();
      if (!listening || up) {
        delay = first_delay;
        continue;
      }
      reconnect_wanted_ = true;
      std::chrono::milliseconds base = refused ? refused_delay : delay;
      auto wait = base / 2 + std::chrono::milliseconds(jitter() % (base.count() / 2 + 1));
      reconnect_cv_.wait_for(lock, wait, [&] { return stopping_; });
      delay = std::min(delay * 2, max_delay);
    }
  }

  // Keeps an idle connection alive: the server drops clients silent for 3 heartbeats. And drops
  // it in turn when nothing, not even the answer to a ping, came for that long: a connection
  // frozen along the way (a proxy, a lost route) raises no error, and a client with listeners
  // would go on serving what it cached as current, hearing of no commit.
  // Counted in ticks, not time, so that a listener holding this thread up is not taken for a
  // silent server.
  void heartbeat() {
    // While a write is under way (a large commit over a slow link) the server, waiting for the
    // rest of the frame, has nothing to say, and the pings queue behind it: silence counts only
    // from its end.
    if (!out_writing_.empty()) {
      silent_ticks_ = 0;
    } else if (++silent_ticks_ > 3) {
      lost(fmt::format("nothing came from the server for 3 heartbeats ({} ms)",
                       (3 * heartbeat_).count()));
      return;
    }
    if (!sent_since_tick_) {
      std::string frame;
      append_frame(frame, Kind::request, static_cast<std::uint16_t>(Op::ping), 0,
                   Writer().array(0).bytes());
      out_pending_ += frame;
      flush();
    }
    sent_since_tick_ = false;
    heartbeat_timer_.expires_after(heartbeat_);
    heartbeat_timer_.async_wait([this](const asio::error_code& ec) {
      if (!ec) heartbeat();
    });
  }

  ClientOptions options_;
  asio::io_context io_{1};
  std::thread thread_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::unique_ptr<Transport> transport_;
  std::mutex connect_mu_;
  std::string server_name_;
  std::atomic<std::uint64_t> features_{0};  // the server's, from its hello reply
  // The largest request body the server takes (its --max-frame-bytes), from its hello reply; 0:
  // not said. A larger request would make it close the connection, failing every other call on
  // it, so such a request is refused here instead, before it is sent.
  std::atomic<std::uint64_t> max_request_body_{0};
  std::chrono::milliseconds heartbeat_{10'000};
  asio::steady_timer heartbeat_timer_{io_};
  int silent_ticks_ = 0;  // heartbeats since bytes last came from the server; I/O thread only
  std::uint64_t connection_ = 0;  // counts connect()s: which connection a posted handler is for

  std::mutex mu_;  // guards what follows
  bool connected_ = false;
  bool ready_ = false;  // connected, greeted, watching and caught up (if anyone listens)
  // The server run of the last hello (0: none yet, or a server from before instances), and what
  // is added to the CSNs and versions of the connection to it (greet).
  std::uint64_t instance_ = 0;
  std::uint64_t offset_ = 0;
  std::uint64_t highest_ = 0;  // the highest CSN or version handed out (hand_out)
  // Connected, and (if anyone listens) watching and caught up: pushes bring every commit.
  std::atomic<bool> hearing_{false};
  std::string lost_ = "not connected";
  std::string refusal_;  // the error frame that closed a connection before it was set up
  std::uint32_t next_id_ = 1;
  std::map<std::uint32_t, std::shared_ptr<Pending>> pending_;
  std::string error_without_id_;

  std::mutex reconnect_mu_;  // guards what follows
  std::condition_variable reconnect_cv_;
  bool reconnect_wanted_ = false;  // the connection was lost (or a reconnect failed)
  bool stopping_ = false;
  std::thread reconnector_;  // started with the first listener

  std::mutex listeners_mu_;  // guards what follows; held while listeners run
  std::map<std::uint64_t, CommitListener> listeners_;
  std::uint64_t next_listener_ = 1;
  std::uint64_t last_push_csn_ = 0;
  // While a reconnect catches up, pushes wait here (in order) to be delivered after it.
  bool catching_up_ = false;
  std::vector<std::pair<std::uint64_t, std::vector<Oid>>> held_pushes_;

  // I/O thread only.
  std::string in_;
  std::size_t in_len_ = 0;
  std::atomic<bool> replied_{false};  // a whole frame has come on this connection
  std::string out_pending_;
  std::string out_writing_;
  bool sent_since_tick_ = false;
};

RemoteStore::RemoteStore(ClientOptions options)
    : impl_(std::make_shared<Impl>(std::move(options))) {
  impl_->connect();
}

RemoteStore::~RemoteStore() = default;

LoadResult RemoteStore::load(std::span<const Oid> oids) {
  if (oids.size() > max_load_oids) {
    throw InvalidArgument(
        fmt::format("a load of {} objects is over the limit of {} a server "
                    "answers: load fewer objects at a time",
                    oids.size(), max_load_oids));
  }
  Writer w;
  w.array(1);
  write_oids(w, oids);
  std::uint64_t offset = 0;
  Body body(impl_->call(Op::load, w.bytes(), &offset));
  Reader r = body.reader();
  LoadResult result;
  result.csn = r.u64() + offset;
  result.objects = read_objects(r.array(), oids);
  for (StoredObject& o : result.objects) {
    if (o.version != 0) o.version += offset;  // 0 stays "absent"
  }
  impl_->hand_out(offset, result.csn);  // no version is above the load's CSN
  return result;
}

std::uint64_t RemoteStore::commit(const CommitRequest& request) {
  // An older server would read the commit without its appends and apply the rest.
  if (!request.appends.empty()) impl_->require(feature_appends, "appends");
  // Nor would it check the locks: the commit would apply unfenced.
  if (!request.locks.empty()) impl_->require(feature_lock_checks, "commits that check locks");
  std::uint64_t offset = impl_->offset();
  // A version read from before the server's history changed (Impl::greet) cannot be checked
  // against the new one: the state read may be gone, though the number be in use again.
  std::vector<Oid> stale;
  for (const ReadCheck& read : request.reads) {
    if (read.version != 0 && read.version <= offset) stale.push_back(read.oid);
  }
  auto changed = [&](std::vector<Oid> oids) {
    // The message first: the vector may be moved into the error before another argument is
    // evaluated.
    std::string message = fmt::format(
        "commit conflicts on oids {}: read from the server at {} before it was started again "
        "(as another instance, whose history this client cannot check them against); nothing "
        "was committed",
        oid_list(oids), impl_->where());
    return ConflictError(message, std::move(oids));
  };
  if (!stale.empty()) throw changed(std::move(stale));
  // The shape the server checks too, here before anything is sent (the oids it alone knows):
  // an object past max_object_bytes is also past the frame limit, and the server would drop the
  // connection, failing every other call under way on it.
  validate_commit_shape(request, std::numeric_limits<std::uint64_t>::max());
  Writer w;
  w.array(1);
  write_commit_request(w, request, offset);
  try {
    // Only read versions depend on the offset: a commit without reads goes to any history.
    std::optional<std::uint64_t> expect;
    if (!request.reads.empty()) expect = offset;
    // The features are checked again on the connection the commit goes on: a reconnect may
    // have found an older server.
    std::uint64_t need = (request.appends.empty() ? 0 : feature_appends) |
                         (request.locks.empty() ? 0 : feature_lock_checks);
    Body body(impl_->call(Op::commit, w.bytes(), &offset, expect, need));
    return impl_->client_csn(body.reader().u64(), offset);
  } catch (const Impl::HistoryChanged&) {
    std::vector<Oid> read;
    for (const ReadCheck& r : request.reads)
      read.push_back(r.oid);
    throw changed(std::move(read));
  }
}

Changes RemoteStore::changes_since(std::uint64_t csn) {
  for (;;) {
    std::uint64_t offset = impl_->offset();
    Changes changes;
    if (csn < offset) {
      // A CSN from before the server's history changed (Impl::greet): anything may differ.
      changes.csn = load({}).csn;
      changes.complete = false;
      return changes;
    }
    Writer w;
    w.array(1).u64(csn - offset);
    try {
      Body body(impl_->call(Op::changes, w.bytes(), &offset, offset));
      Reader r = body.reader();
      changes.csn = impl_->client_csn(r.u64(), offset);
      changes.complete = r.boolean();
      changes.oids = read_oids(r.array());
      return changes;
    } catch (const Impl::HistoryChanged&) {
      // Changed while the request was written: ask again.
    }
  }
}

Subscription RemoteStore::subscribe(CommitListener listener) {
  return impl_->subscribe(std::move(listener));
}

Oid RemoteStore::new_oids(std::uint32_t count) {
  Writer w;
  w.array(1).u64(count);
  Body body(impl_->call(Op::new_oids, w.bytes()));
  return Oid{body.reader().u64()};
}

std::vector<ScanEntry> RemoteStore::scan_type(std::string_view type, Oid after, std::size_t limit) {
  Writer w;
  w.array(3).str(type).u64(after.value()).u64(limit);
  Body body(impl_->call(Op::scan_type, w.bytes()));
  return read_scan(body.reader());
}

std::vector<ScanEntry> RemoteStore::scan_keys(std::string_view type, std::string_view prefix,
                                              std::string_view after, std::size_t limit) {
  Writer w;
  w.array(4).str(type).str(prefix).str(after).u64(limit);
  Body body(impl_->call(Op::scan_keys, w.bytes()));
  return read_scan(body.reader());
}

std::optional<Oid> RemoteStore::find_key(std::string_view type, std::string_view key) {
  Writer w;
  w.array(2).str(type).str(key);
  Body body(impl_->call(Op::find_key, w.bytes()));
  Reader r = body.reader();
  if (r.next_is_nil()) return std::nullopt;
  return Oid{r.u64()};
}

std::optional<std::uint64_t> RemoteStore::lock(const LockRequest& request) {
  Writer w;
  w.array(4)
      .str(request.name)
      .str(request.owner)
      .i64(request.ttl.count())
      .i64(request.wait.count());
  auto wait = std::max(request.wait, std::chrono::milliseconds(0));
  Body body(impl_->call(Op::lock, w.bytes(), impl_->options().call_timeout + wait));
  Reader r = body.reader();
  if (r.next_is_nil()) return std::nullopt;
  return r.u64();
}

bool RemoteStore::hears_commits() const {
  return impl_->hearing();
}

bool RemoteStore::unlock(std::string_view name, std::string_view owner) {
  Writer w;
  w.array(2).str(name).str(owner);
  Body body(impl_->call(Op::unlock, w.bytes()));
  return body.reader().boolean();
}

bool RemoteStore::renew(std::string_view name, std::string_view owner,
                        std::chrono::milliseconds ttl) {
  Writer w;
  w.array(3).str(name).str(owner).i64(ttl.count());
  Body body(impl_->call(Op::renew, w.bytes()));
  return body.reader().boolean();
}

PackStats RemoteStore::pack() {
  Body body(impl_->call(Op::pack, Writer().array(0).bytes(), std::chrono::hours(24)));
  Reader r = body.reader();
  PackStats stats;
  stats.objects_before = r.u64();
  stats.objects_after = r.u64();
  stats.bytes_before = r.u64();
  stats.bytes_after = r.u64();
  return stats;
}

std::vector<std::pair<std::string, std::string>> RemoteStore::info() {
  Body body(impl_->call(Op::info, Writer().array(0).bytes()));
  const msgpack::object& root = body.root();
  if (root.via.array.size < 1 || root.via.array.ptr[0].type != msgpack::type::MAP) {
    throw ProtocolError("info: expected [map]");
  }
  const msgpack::object_map& map = root.via.array.ptr[0].via.map;
  std::vector<std::pair<std::string, std::string>> out;
  for (std::uint32_t i = 0; i < map.size; ++i) {
    const msgpack::object& key = map.ptr[i].key;
    const msgpack::object& value = map.ptr[i].val;
    if (key.type != msgpack::type::STR) throw ProtocolError("info: keys must be strings");
    std::string text;
    if (value.type == msgpack::type::POSITIVE_INTEGER)
      text = std::to_string(value.via.u64);
    else if (value.type == msgpack::type::STR)
      text.assign(value.via.str.ptr, value.via.str.size);
    else
      text = "?";
    out.emplace_back(std::string(key.via.str.ptr, key.via.str.size), std::move(text));
  }
  return out;
}

void RemoteStore::stop_server() {
  impl_->call(Op::stop, Writer().array(0).bytes());
}

void RemoteStore::ping() {
  impl_->call(Op::ping, Writer().array(0).bytes());
}

const std::string& RemoteStore::server_name() const {
  return impl_->server_name();
}

std::unique_ptr<Store> open_remote_store(const StoreUrl& url) {
  return std::make_unique<RemoteStore>(client_options(url));
}

}  // namespace cairn::net
