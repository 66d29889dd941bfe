// The server: acceptors, sessions, dispatch of requests to the store, pushes, locks, shutdown.
//
// Threading: everything here runs on the one loop thread except the bodies of blocking store
// calls, which run on the worker pool and post their replies back to the loop. So sessions,
// the session table and all counters need no locks.
#include "net/server.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "cairn/error.h"
#include "cairn/version.h"
#include "core/checksum.h"
#include "net/protocol.h"
#include "net/transport.h"

namespace cairn::net {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t read_chunk = 64 * 1024;
// Reading from a connection pauses while this much of its output is unsent.
constexpr std::size_t pause_reading_bytes = 4 * 1024 * 1024;
// ... or while this many of its requests are being worked on.
constexpr std::size_t max_inflight = 1024;
// The most an asynchronous write sends at once (write_more).
constexpr std::size_t write_chunk = 1024 * 1024;

// Compares in time independent of where the strings differ or how long they are.
bool same_token(std::string_view a, std::string_view b) {
  unsigned char da[SHA256_DIGEST_LENGTH];
  unsigned char db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, SHA256_DIGEST_LENGTH) == 0;
}

bool is_loopback(const std::string& host) {
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return host == "localhost";
  return address.is_loopback();
}

}  // namespace

class Session;

class Server::Impl {
 public:
  Impl(Store& store, ServerOptions options);
  ~Impl();

  void start();
  void run();
  void stop() {
    asio::post(io_, [this] { begin_stop("stop requested"); });
  }
  void handle_signals();
  std::uint16_t port() const { return port_; }
  void adopt(std::unique_ptr<Transport> transport);
  void poll() { io_.poll(); }

  // Called by sessions (loop thread).
  void remove(std::uint64_t id);
  void begin_stop(const std::string& why);
  void maybe_finish_stop();
  void write_info(Writer& w) const;
  void log(const std::string& message) const {
    if (options_.log) options_.log(message);
  }

  // Commits handed to Store::commit_async whose callback has not finished: the destructor
  // waits for them, since each callback posts to io_.
  std::atomic<int> async_outstanding_{0};
  std::mutex async_mu_;
  std::condition_variable async_cv_;
  void async_done() {
    std::lock_guard lock(async_mu_);
    if (--async_outstanding_ == 0) async_cv_.notify_all();
  }
  struct AsyncDone {
    Impl& impl;
    explicit AsyncDone(Impl& i) : impl(i) {}
    ~AsyncDone() { impl.async_done(); }
  };

  // What the store's sync thread hands to the loop: commit_async() answers and commit
  // notifications, in the order they happened. A whole sync round's worth is gathered under
  // one lock and costs one post, so one wakeup of the loop, rather than one post (a lock of
  // the io_context's queue and a wakeup each) per commit.
  struct Handoff {
    std::shared_ptr<Session> session;  // null: a commit notification
    FrameHeader header;
    std::uint64_t csn = 0;
    std::exception_ptr error;
    std::vector<Oid> oids;  // a notification's changed oids
  };
  void hand_off(Handoff item);
  void run_handoffs();

  Store& store_;
  ServerOptions options_;
  asio::io_context io_{1};
  std::unique_ptr<asio::thread_pool> pool_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Session>> sessions_;
  // Hand-offs waiting for the loop; a post is pending while not empty. Declared after io_, so
  // that sessions left here (by a loop that stopped first) go before the io_context they use.
  std::mutex handoff_mu_;
  std::vector<Handoff> handoffs_;
  std::uint64_t next_session_ = 1;
  std::uint64_t instance_ = 0;  // this run's id, in every hello reply; never 0
  // Random, in every lock owner this run's sessions store (Session::owner), apart from instance_
  // (which a test may give).
  std::string owner_scope_;
  // Sessions accepted past --max-clients, and how many of them there may be at once.
  std::size_t over_limit_sessions_ = 0;
  std::size_t rejected_sessions_ = 0;  // past the limit and its room: refused after handshake
  static constexpr std::size_t control_room = 4;
  bool accept_paused_ = false;  // accepting failed for want of descriptors; logged once
  std::size_t watchers_ = 0;
  bool stopping_ = false;
  // Counters for info.
  Clock::time_point started_ = Clock::now();
  std::uint64_t commits_ = 0;
  std::uint64_t commits_last_second_ = 0;
  std::uint64_t commits_at_tick_ = 0;
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;
  std::uint64_t last_csn_ = 0;
  std::uint64_t committed_bytes_since_pack_ = 0;
  std::uint64_t packs_ = 0;  // finished since start, automatic or asked for
  bool packing_ = false;

 private:
  template <class Acceptor, class TransportType>
  void accept(Acceptor& acceptor);
  void tick();
  void on_commit(std::uint64_t csn, std::vector<Oid> oids);

  std::unique_ptr<asio::ip::tcp::acceptor> tcp_;
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_;
  asio::signal_set signals_{io_};
  asio::steady_timer tick_timer_{io_};
  asio::steady_timer stop_deadline_{io_};
  std::uint16_t port_ = 0;
  Subscription subscription_;
  std::uint32_t max_frame_ = default_max_frame_bytes;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Server::Impl& server, std::uint64_t id, std::unique_ptr<Transport> transport)
      : server_(server),
        id_(id),
        owner_prefix_(fmt::format("session{}.{}/", server.owner_scope_, id)),
        transport_(std::move(transport)),
        idle_(server.io_) {}

  std::uint64_t id() const { return id_; }
  bool watching() const { return watching_; }
  bool idle() const { return inflight_ == 0 && writing_.empty() && pending_.empty(); }

  // A commit_async() commit is durable (error null) or failed: answer it. Loop thread.
  void commit_done(const FrameHeader& header, std::uint64_t csn, const std::exception_ptr& error) {
    try {
      if (error) std::rethrow_exception(error);
      Writer w;
      w.array(1).u64(csn);
      reply(header, w.bytes());
    } catch (const Error& e) {
      reply_error(header, e.code(), e.what());
    } catch (const std::exception& e) {
      reply_error(header, ErrorCode::internal, e.what());
    }
    answered();
  }

  // `over_limit`: past --max-clients, served only as a control connection (its hello says so);
  // `reject`: past even the room kept for those, refused at once.
  void start(bool over_limit, bool reject) {
    over_limit_ = over_limit;
    rejected_ = reject;
    reset_idle();
    auto self = shared_from_this();
    transport_->handshake([this, self, reject](const asio::error_code& ec) {
      if (ec) return close();
      if (reject) return refuse_busy();
      read();
    });
  }
  bool over_limit() const { return over_limit_; }
  bool rejected() const { return rejected_; }

  void refuse_busy() {
    fail(0, 0, ErrorCode::busy,
         fmt::format("the server is at its limit of {} clients", server_.options_.max_clients));
  }

  // Sends an error frame, then closes once it is written.
  void fail(std::uint16_t op, std::uint32_t id, ErrorCode code, const std::string& message) {
    send(Kind::error, op, id, error_body(code, message));
    closing_ = true;
    if (writing_.empty() && pending_.empty()) close();
  }

  void send(Kind kind, std::uint16_t op, std::uint32_t id, std::string_view body) {
    if (closed_) return;
    append_frame(pending_, kind, op, id, body);
    if (kind == Kind::response) reply_bytes_ += body.size();
    flush();
  }

  void send_raw(const std::string& frame) {
    if (closed_ || closing_) return;
    pending_ += frame;
    // Replies being written do not count: a client reading a large load is not slow. (The
    // server reads no more requests from it while 4 MiB are unsent, so replies cannot pile up.)
    if (pending_.size() + writing_.size() > server_.options_.max_output_bytes + reply_bytes_) {
      server_.log(fmt::format("dropped a client at {}: over {} bytes of output it has not read",
                              transport_->peer(), server_.options_.max_output_bytes));
      // The frames not begun go; the error frame follows the ones being written, and reaches a
      // client that reads them. One that reads nothing more is closed at its idle timeout,
      // within a frame.
      pending_.clear();
      fail(0, 0, ErrorCode::busy, "connection dropped: it reads more slowly than the server sends");
      return;
    }
    flush();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    idle_.cancel();
    transport_->close();
    release_locks();
    if (watching_) --server_.watchers_;
    watching_ = false;
    server_.remove(id_);
  }

  // Stop serving new requests; close when what is in flight is answered.
  void drain() {
    draining_ = true;
    if (idle()) close();
  }

 private:
  void reset_idle() {
    idle_.expires_after(server_.options_.idle_timeout);
    idle_.async_wait([this, self = shared_from_this()](const asio::error_code& ec) {
      if (ec || closed_) return;
      close();
    });
  }

  // Too much owed to this client: take no more requests from it until that drains.
  bool busy() const {
    return pending_.size() + writing_.size() > pause_reading_bytes || inflight_ >= max_inflight;
  }

  void resume() {
    if (!paused_ || busy() || closed_) return;
    paused_ = false;
    consume();
    read();
  }

  void read() {
    if (closed_ || closing_ || draining_ || reading_) return;
    if (busy()) {
      paused_ = true;
      return;
    }
    reading_ = true;
    if (in_.size() - in_len_ < read_chunk) in_.resize(in_len_ + read_chunk);
    transport_->read_some(
        asio::buffer(in_.data() + in_len_, in_.size() - in_len_),
        [this, self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
          reading_ = false;
          if (ec || closed_) return close();
          server_.bytes_in_ += n;
          in_len_ += n;
          consume();
          // Until its hello is answered a connection has the one deadline start() set, however
          // slowly it trickles bytes: else a few clients without the token could hold every
          // place up to --max-clients.
          if (authed_ && !closed_) reset_idle();
          read();
        });
  }

  void consume() {
    if (consuming_) return;  // a request answered at once, inside the loop below
    consuming_ = true;
    std::size_t at = 0;
    while (!closing_ && !draining_ && !busy() && in_len_ - at >= header_size) {
      FrameHeader header;
      try {
        header = parse_header(std::string_view(in_.data() + at, header_size), max_frame());
      } catch (const Error& e) {
        fail(0, 0, e.code(), e.what());
        break;
      }
      if (in_len_ - at < header_size + header.body_size) break;
      std::string_view body(in_.data() + at + header_size, header.body_size);
      at += header_size + header.body_size;
      dispatch(header, body);
    }
    consuming_ = false;
    // Keep the unconsumed tail at the front of the buffer.
    if (at > 0) {
      std::memmove(in_.data(), in_.data() + at, in_len_ - at);
      in_len_ -= at;
    }
    if (closing_ || draining_) return;
    // Room for more of a frame whose header has arrived (it was checked above): else a client
    // could make the server hold max_frame() bytes per connection for 21 bytes sent.
    std::size_t want =
        in_len_ >= header_size
            ? header_size +
                  parse_header(std::string_view(in_.data(), header_size), max_frame()).body_size
            : 0;
    in_.resize(frame_buffer_size(in_.size(), in_len_, want));
    if (in_.size() > 4 * read_chunk && in_len_ < read_chunk && want < read_chunk) {
      in_.resize(read_chunk);
      in_.shrink_to_fit();
    }
  }

  std::uint32_t max_reply() const {
    // No larger than clients accept.
    std::uint32_t limit = server_.options_.max_reply_bytes;
    return limit == 0 ? default_max_reply_bytes : std::min(limit, default_max_reply_bytes);
  }
  std::uint32_t max_frame() const {
    std::uint32_t limit = server_.options_.max_frame_bytes ? server_.options_.max_frame_bytes
                                                           : default_max_frame_bytes;
    // Before its hello, a connection may send only a hello: a client without the token cannot
    // make the server buffer a large frame.
    return authed_ ? limit : std::min(limit, max_hello_bytes);
  }

  void dispatch(const FrameHeader& header, std::string_view body);
  void handle(const FrameHeader& header, const Body& body);
  void hello(const FrameHeader& header, Reader r);
  void lock(const FrameHeader& header, LockRequest request, Clock::time_point deadline);
  void release_locks();

  // Runs `work` on the loop or a worker, then replies with its result or its error.
  template <class Work>
  void run(const FrameHeader& header, bool blocking, Work work);
  void reply(const FrameHeader& header, std::string_view body) {
    send(Kind::response, header.op, header.id, body);
  }
  void reply_error(const FrameHeader& header, ErrorCode code, std::string_view message,
                   std::span<const Oid> oids = {}) {
    send(Kind::error, header.op, header.id, error_body(code, message, oids));
  }
  void answered() {
    --inflight_;
    if (draining_ && idle()) close();
    resume();
    server_.maybe_finish_stop();
  }

  void flush() {
    if (closed_ || !writing_.empty() || pending_.empty()) return;
    // Most replies fit in the socket's send buffer: write them at once, without an asynchronous
    // write and its completion's round through the loop (a large share of the loop's work per
    // request). Only what the socket does not take now goes the asynchronous way.
    asio::error_code failed;
    std::size_t taken = transport_->try_write(asio::buffer(pending_), failed);
    server_.bytes_out_ += taken;
    if (failed) return close();
    if (taken == pending_.size()) {
      pending_.clear();
      if (writing_.empty()) reply_bytes_ = 0;  // all written
      // Whatever follows a finished write (closing, resuming a paused reader, a stop waiting for
      // this session) runs from the loop, not from inside whatever is sending.
      if (closing_ || draining_ || paused_) {
        asio::post(server_.io_, [self = shared_from_this()] { self->wrote(); });
      }
      return;
    }
    pending_.erase(0, taken);
    writing_.swap(pending_);
    written_ = 0;
    write_more();
  }

  // Writes writing_ from written_ on, a chunk at a time: each chunk the client takes counts as
  // activity, so a client reading a large reply over a slow link is not dropped as idle (it
  // cannot send meanwhile: the server reads nothing while so much is unsent).
  void write_more() {
    std::size_t chunk = std::min(write_chunk, writing_.size() - written_);
    transport_->write(asio::buffer(writing_.data() + written_, chunk),
                      [this, self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
                        server_.bytes_out_ += n;
                        written_ += n;
                        if (ec) {
                          writing_.clear();
                          return close();
                        }
                        if (closed_) return;
                        if (authed_) reset_idle();
                        if (written_ < writing_.size()) return write_more();
                        writing_.clear();
                        if (!pending_.empty()) return flush();
                        reply_bytes_ = 0;  // all written
                        wrote();
                      });
  }

  // Everything owed has been written.
  void wrote() {
    if (closed_ || !writing_.empty() || !pending_.empty()) return;  // a later write's turn
    if (closing_ || (draining_ && inflight_ == 0)) return close();
    resume();
    server_.maybe_finish_stop();
  }

  // Lock owners are scoped to the connection, and to this server's run: no other client, of this
  // server or of another one in front of the same store (several may front one Redis), can
  // unlock or renew them. An owner that the prefix would take past the stores' limit is kept as
  // its hash, so that a client has the whole limit.
  std::string owner(const std::string& client_owner) const {
    if (owner_prefix_.size() + client_owner.size() <= max_lock_name_length) {
      return owner_prefix_ + client_owner;
    }
    return fmt::format("{}#{:016x}", owner_prefix_, checksum64(client_owner));
  }
  // Replies with an error and returns true if a client's lock owner is over the limit.
  bool refuse_long_owner(const FrameHeader& header, const std::string& client_owner) {
    if (client_owner.size() <= max_lock_name_length) return false;
    reply_error(header, ErrorCode::invalid_argument,
                fmt::format("lock owner of {} bytes is longer than the limit of {}",
                            client_owner.size(), max_lock_name_length));
    return true;
  }

  Server::Impl& server_;
  std::uint64_t id_;
  std::string owner_prefix_;
  std::unique_ptr<Transport> transport_;
  asio::steady_timer idle_;
  std::string in_;
  std::size_t in_len_ = 0;
  std::string pending_;
  std::string writing_;
  std::size_t written_ = 0;  // of writing_, by write_more()
  // Bytes of replies in pending_ and writing_ (at most: reset once both are empty).
  std::size_t reply_bytes_ = 0;
  bool authed_ = false;
  bool over_limit_ = false;  // accepted past --max-clients: a control connection or nothing
  bool rejected_ = false;    // past even the room for those: refused after the handshake
  bool control_ = false;     // its hello said it sends only ping, info and stop
  bool watching_ = false;
  bool reading_ = false;
  bool consuming_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool draining_ = false;
  bool closed_ = false;
  std::size_t inflight_ = 0;
  // Names this session locked and has not unlocked: released (if still ours) on close.
  std::map<std::string, std::string, std::less<>> locks_;  // name -> owner as stored
};

template <class Work>
void Session::run(const FrameHeader& header, bool blocking, Work work) {
  ++inflight_;
  auto finish = [this, header](std::string body, std::optional<Error> error,
                               std::vector<Oid> oids) {
    if (error)
      reply_error(header, error->code(), error->what(), oids);
    else
      reply(header, body);
    answered();
  };
  auto attempt = [work = std::move(work)]() mutable {
    std::string body;
    std::optional<Error> error;
    std::vector<Oid> oids;
    try {
      body = work();
    } catch (const ConflictError& e) {
      error.emplace(e.code(), e.what());
      oids = e.oids();
    } catch (const Error& e) {
      error.emplace(e.code(), e.what());
    } catch (const std::exception& e) {
      error.emplace(ErrorCode::internal, e.what());
    }
    return std::make_tuple(std::move(body), std::move(error), std::move(oids));
  };
  if ((!blocking && !server_.options_.blocking_store) || !server_.pool_) {
    auto [body, error, oids] = attempt();
    finish(std::move(body), std::move(error), std::move(oids));
    return;
  }
  asio::post(*server_.pool_, [this, self = shared_from_this(), attempt = std::move(attempt),
                              finish = std::move(finish)]() mutable {
    auto result = std::make_shared<decltype(attempt())>(attempt());
    asio::post(server_.io_, [self = std::move(self), result, finish = std::move(finish)]() mutable {
      auto& [body, error, oids] = *result;
      finish(std::move(body), std::move(error), std::move(oids));
    });
  });
}

void Session::dispatch(const FrameHeader& header, std::string_view bytes) {
  if (header.kind != Kind::request) {
    return fail(header.op, header.id, ErrorCode::protocol, "a client may only send requests");
  }
  try {
    check_body(header, bytes);
    Body body(bytes);
    if (!authed_ && header.op != static_cast<std::uint16_t>(Op::hello)) {
      if (over_limit_) return refuse_busy();
      return fail(header.op, header.id, ErrorCode::auth,
                  "the first request must be hello (with the token, if the server has one)");
    }
    if (control_ && !control_op(header.op)) {
      return fail(header.op, header.id, ErrorCode::protocol,
                  "a control connection sends only ping, info and stop");
    }
    handle(header, body);
  } catch (const Error& e) {
    // A body that does not decode is a broken client: tell it and hang up.
    fail(header.op, header.id, e.code(), e.what());
  }
}

void Session::hello(const FrameHeader& header, Reader r) {
  if (authed_) {
    return fail(header.op, header.id, ErrorCode::protocol, "hello was already sent");
  }
  std::uint64_t min_version = r.u64();
  std::uint64_t max_version = r.u64();
  std::string token = r.str();
  if (!r.at_end()) r.str();  // the client's name, for people reading traffic
  std::uint64_t flags = r.at_end() ? 0 : r.u64();
  if (min_version > protocol_version || max_version < protocol_version) {
    return fail(header.op, header.id, ErrorCode::protocol,
                fmt::format("client speaks protocol versions {}..{}, this server speaks {}",
                            min_version, max_version, protocol_version));
  }
  if (!server_.options_.token.empty() && !same_token(token, server_.options_.token)) {
    // For the operator: a client with a stale token retrying, or someone guessing.
    server_.log(fmt::format("refused a client at {}: wrong or missing token", transport_->peer()));
    return fail(header.op, header.id, ErrorCode::auth, "wrong or missing token");
  }
  control_ = (flags & hello_control) != 0;
  if (over_limit_ && !control_) return refuse_busy();
  authed_ = true;
  Writer w;
  w.array(7)
      .u64(protocol_version)
      .str(fmt::format("{} {}", server_.options_.name, version))
      .u64(server_.last_csn_)
      .u64(static_cast<std::uint64_t>(server_.options_.idle_timeout.count() / 3))
      .u64(feature_appends | feature_lock_checks)
      .u64(server_.instance_)
      .u64(max_frame());  // authed_ now: the limit for every later request
  reply(header, w.bytes());
}

void Session::handle(const FrameHeader& header, const Body& body) {
  Reader r = body.reader();
  Store& store = server_.store_;
  switch (static_cast<Op>(header.op)) {
    case Op::hello:
      return hello(header, r);
    case Op::load:
      return run(header, false, [&store, oids = read_oids(r.array()), limit = max_reply()] {
        if (oids.size() > max_load_oids) {
          throw InvalidArgument(
              fmt::format("a load names {} objects, over the limit of {}: load "
                          "fewer objects at a time",
                          oids.size(), max_load_oids));
        }
        LoadResult result = store.load(oids);
        // Sent, a reply over the limit would make the client drop the connection; refused, the
        // client can ask for fewer objects at a time. The data alone may tell before encoding.
        auto refuse_over = [&](std::uint64_t bytes) {
          if (bytes <= limit) return;
          throw InvalidArgument(fmt::format(
              "a load of {} objects would answer with over {} bytes, over the limit of {}: load "
              "fewer objects at a time",
              oids.size(), bytes, limit));
        };
        std::uint64_t data_bytes = 0;
        for (const StoredObject& object : result.objects)
          data_bytes += object.data.size();
        refuse_over(data_bytes);
        Writer w;
        w.array(2).u64(result.csn);
        write_objects(w, result.objects);
        refuse_over(w.bytes().size());
        return std::move(w.bytes());
      });
    case Op::commit: {
      CommitRequest request = read_commit_request(r.array());
      std::uint64_t bytes = 0;
      for (const WriteOp& write : request.writes)
        bytes += write.data.size();
      for (const AppendOp& append : request.appends)
        bytes += append.data.size();
      server_.committed_bytes_since_pack_ += bytes;
      if (!server_.options_.blocking_store) {
        // A store that makes commits durable on a thread of its own: apply here, on the loop,
        // and answer when its sync says so. No thread waits for the disk per commit.
        ++inflight_;
        ++server_.async_outstanding_;
        try {
          bool async =
              store.commit_async(request, [this, self = shared_from_this(), header](
                                              std::uint64_t csn, std::exception_ptr error) {
                // The server outlives this call (its destructor waits for outstanding ones).
                Server::Impl::AsyncDone leaving(server_);
                server_.hand_off({self, header, csn, error, {}});
              });
          if (async) return;
        } catch (const ConflictError& e) {
          server_.async_done();
          reply_error(header, e.code(), e.what(), e.oids());
          return answered();
        } catch (const Error& e) {
          server_.async_done();
          reply_error(header, e.code(), e.what());
          return answered();
        }
        server_.async_done();
        --inflight_;
      }
      return run(header, server_.pool_ != nullptr, [&store, request = std::move(request)] {
        Writer w;
        w.array(1).u64(store.commit(request));
        return std::move(w.bytes());
      });
    }
    case Op::changes:
      return run(header, false, [&store, csn = r.u64()] {
        Changes changes = store.changes_since(csn);
        Writer w;
        w.array(3).u64(changes.csn).boolean(changes.complete);
        write_oids(w, changes.oids);
        return std::move(w.bytes());
      });
    case Op::new_oids:
      return run(header, false, [&store, count = r.u32()] {
        Writer w;
        w.array(1).u64(store.new_oids(count).value());
        return std::move(w.bytes());
      });
    case Op::scan_type: {
      std::string type = r.str();
      Oid after{r.u64()};
      std::uint64_t limit = r.u64();
      return run(header, false, [&store, type = std::move(type), after, limit] {
        Writer w;
        write_scan(w, store.scan_type(type, after, limit));
        return std::move(w.bytes());
      });
    }
    case Op::scan_keys: {
      std::string type = r.str();
      std::string prefix = r.str();
      std::string after = r.str();
      std::uint64_t limit = r.u64();
      return run(header, false, [&store, type, prefix, after, limit] {
        Writer w;
        write_scan(w, store.scan_keys(type, prefix, after, limit));
        return std::move(w.bytes());
      });
    }
    case Op::find_key: {
      std::string type = r.str();
      std::string key = r.str();
      return run(header, false, [&store, type, key] {
        std::optional<Oid> oid = store.find_key(type, key);
        Writer w;
        w.array(1);
        if (oid)
          w.u64(oid->value());
        else
          w.nil();
        return std::move(w.bytes());
      });
    }
    case Op::lock: {
      LockRequest request;
      request.name = r.str();
      std::string client_owner = r.str();
      if (refuse_long_owner(header, client_owner)) return;
      request.owner = owner(client_owner);
      request.ttl = std::chrono::milliseconds(r.i64());
      auto wait = std::chrono::milliseconds(r.i64());
      if (request.owner == owner_prefix_) {
        return reply_error(header, ErrorCode::invalid_argument, "a lock needs an owner");
      }
      if (wait.count() < 0 || wait > max_lock_duration) {
        return reply_error(header, ErrorCode::invalid_argument,
                           fmt::format("lock wait must be between 0 and {} ms (got {} ms)",
                                       max_lock_duration.count(), wait.count()));
      }
      ++inflight_;
      return lock(header, std::move(request), Clock::now() + wait);
    }
    case Op::unlock: {
      std::string name = r.str();
      std::string client_owner = r.str();
      if (refuse_long_owner(header, client_owner)) return;
      std::string held_by = owner(client_owner);
      // Whether or not it was held, this session no longer needs to release it on close; unless
      // it holds it under another owner, which this unlock does not release.
      if (auto it = locks_.find(name); it != locks_.end() && it->second == held_by)
        locks_.erase(it);
      return run(header, false, [&store, name, held_by] {
        bool released = store.unlock(name, held_by);
        Writer w;
        w.array(1).boolean(released);
        return std::move(w.bytes());
      });
    }
    case Op::renew: {
      std::string name = r.str();
      std::string client_owner = r.str();
      if (refuse_long_owner(header, client_owner)) return;
      std::string held_by = owner(client_owner);
      auto ttl = std::chrono::milliseconds(r.i64());
      return run(header, false, [&store, name, held_by, ttl] {
        Writer w;
        w.array(1).boolean(store.renew(name, held_by, ttl));
        return std::move(w.bytes());
      });
    }
    case Op::pack:
      server_.committed_bytes_since_pack_ = 0;
      return run(header, true, [&server = server_, &store] {
        PackStats stats = store.pack();
        asio::post(server.io_, [&server] { ++server.packs_; });
        Writer w;
        w.array(4)
            .u64(stats.objects_before)
            .u64(stats.objects_after)
            .u64(stats.bytes_before)
            .u64(stats.bytes_after);
        return std::move(w.bytes());
      });
    case Op::watch: {
      bool on = r.boolean();
      if (on != watching_) {
        watching_ = on;
        if (on)
          ++server_.watchers_;
        else
          --server_.watchers_;
      }
      Writer w;
      w.array(1).u64(server_.last_csn_);
      return reply(header, w.bytes());
    }
    case Op::ping:
      return reply(header, Writer().array(0).bytes());
    case Op::info: {
      Writer w;
      w.array(1);
      server_.write_info(w);
      return reply(header, w.bytes());
    }
    case Op::stop:
      reply(header, Writer().array(0).bytes());
      server_.begin_stop("a client asked the server to stop");
      return;
  }
  fail(header.op, header.id, ErrorCode::protocol, fmt::format("unknown request op {}", header.op));
}

void Session::lock(const FrameHeader& header, LockRequest request, Clock::time_point deadline) {
  Store& store = server_.store_;
  auto done = [this, header, name = request.name,
               held_by = request.owner](std::optional<std::uint64_t> token) {
    if (token && !closed_) locks_[name] = held_by;
    if (token && closed_) {
      // Taken for a connection that died meanwhile: give it back at once.
      try {
        server_.store_.unlock(name, held_by);
      } catch (const Error&) {
        // It expires by its TTL.
      }
    }
    Writer w;
    w.array(1);
    if (token)
      w.u64(*token);
    else
      w.nil();
    reply(header, w.bytes());
    answered();
  };
  auto failed = [this, header](const Error& e) {
    reply_error(header, e.code(), e.what());
    answered();
  };
  if (server_.options_.blocking_store) {
    auto now = Clock::now();
    request.wait = deadline > now
                       ? std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now)
                       : std::chrono::milliseconds(0);
    asio::post(*server_.pool_, [this, self = shared_from_this(), &store, request, done, failed] {
      std::optional<std::uint64_t> token;
      std::optional<Error> error;
      try {
        token = store.lock(request);
      } catch (const Error& e) {
        error.emplace(e.code(), e.what());
      }
      asio::post(server_.io_, [self, token, error, done, failed] {
        if (error)
          failed(*error);
        else
          done(token);
      });
    });
    return;
  }
  // A stopping server grants no more locks: the holders' locks are being released only because
  // the server is closing their connections, and would be granted to a waiter that way.
  if (closed_ || draining_) return done(std::nullopt);
  // An in-process store answers at once; wait here by retrying on a timer, never blocking the
  // loop. A held lock is never taken: only the store's own expiry frees it.
  std::optional<std::uint64_t> token;
  request.wait = std::chrono::milliseconds(0);
  try {
    token = store.lock(request);
  } catch (const Error& e) {
    return failed(e);
  }
  auto now = Clock::now();
  if (token || now >= deadline || closed_ || draining_) return done(token);
  auto timer = std::make_shared<asio::steady_timer>(server_.io_);
  timer->expires_after(std::min<Clock::duration>(std::chrono::milliseconds(2), deadline - now));
  timer->async_wait(
      [this, self = shared_from_this(), timer, header, request = std::move(request),
       deadline](const asio::error_code&) mutable { lock(header, std::move(request), deadline); });
}

void Session::release_locks() {
  for (const auto& [name, held_by] : locks_) {
    if (server_.options_.blocking_store) {
      asio::post(*server_.pool_, [&store = server_.store_, name = name, held_by = held_by] {
        try {
          store.unlock(name, held_by);
        } catch (const Error&) {
          // The lock expires by its TTL.
        }
      });
      continue;
    }
    try {
      server_.store_.unlock(name, held_by);
    } catch (const Error&) {
    }
  }
  locks_.clear();
}

Server::Impl::Impl(Store& store, ServerOptions options)
    : store_(store), options_(std::move(options)) {
  // Random, so that a client can tell this run from any other (docs/protocol.md §4.1): a server
  // started again, perhaps over a file restored from a backup, may reuse CSNs with other
  // meanings.
  instance_ = options_.instance;
  std::random_device random;
  while (instance_ == 0)
    instance_ = (std::uint64_t{random()} << 32) | random();
  owner_scope_ = fmt::format("{:08x}{:08x}", random(), random());
  if (options_.max_frame_bytes) max_frame_ = options_.max_frame_bytes;
  if (options_.tcp && options_.token.empty() && !is_loopback(options_.host)) {
    throw InvalidArgument(fmt::format(
        "refusing to listen on {} without a token: anyone who can reach it could read and change "
        "the database. Give --token, --token-file or CAIRN_TOKEN (and --tls-cert/--tls-key), or "
        "listen on 127.0.0.1",
        options_.host));
  }
  if (options_.tls_cert.empty() != options_.tls_key.empty()) {
    throw InvalidArgument("TLS needs both a certificate (--tls-cert) and a key (--tls-key)");
  }
  if (!options_.tls_cert.empty()) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    asio::error_code ec;
    tls_->use_certificate_chain_file(options_.tls_cert, ec);
    if (ec) {
      throw InvalidArgument(
          fmt::format("cannot use TLS certificate {}: {}", options_.tls_cert, ec.message()));
    }
    tls_->use_private_key_file(options_.tls_key, asio::ssl::context::pem, ec);
    if (ec) {
      throw InvalidArgument(
          fmt::format("cannot use TLS key {}: {}", options_.tls_key, ec.message()));
    }
  }
  if (options_.workers > 0 || options_.blocking_store) {
    pool_ = std::make_unique<asio::thread_pool>(std::max<std::size_t>(options_.workers, 4));
  }
  subscription_ = store_.subscribe([this](std::uint64_t csn, std::span<const Oid> oids) {
    hand_off({nullptr, {}, csn, nullptr, std::vector<Oid>(oids.begin(), oids.end())});
  });
  last_csn_ = store_.changes_since(UINT64_MAX).csn;
  start();
}

Server::Impl::~Impl() {
  {
    std::unique_lock lock(async_mu_);
    async_cv_.wait(lock, [&] { return async_outstanding_.load() == 0; });
  }
  subscription_.reset();
  if (pool_) pool_->join();
}

void Server::Impl::start() {
  asio::error_code ec;
  if (options_.tcp) {
    asio::ip::tcp::resolver resolver(io_);
    auto results = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec || results.empty()) {
      throw IoError(fmt::format("cannot resolve {}: {}", options_.host, ec.message()));
    }
    asio::ip::tcp::endpoint endpoint = results.begin()->endpoint();
    tcp_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
    tcp_->open(endpoint.protocol(), ec);
    if (!ec) tcp_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) tcp_->bind(endpoint, ec);
    if (!ec) tcp_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw IoError(
          fmt::format("cannot listen on {}:{}: {}", options_.host, options_.port, ec.message()));
    }
    port_ = tcp_->local_endpoint().port();
    if (tls_)
      accept<asio::ip::tcp::acceptor, TlsTransport>(*tcp_);
    else
      accept<asio::ip::tcp::acceptor, TcpTransport>(*tcp_);
  }
  if (!options_.unix_path.empty()) {
    asio::local::stream_protocol::endpoint endpoint = unix_endpoint(options_.unix_path);
    // A socket file left by a server that died is removed; a live server's is not, nor is
    // anything else (bind would say only "Address already in use").
    struct stat st {};
    bool exists = ::lstat(options_.unix_path.c_str(), &st) == 0;
    if (exists && !S_ISSOCK(st.st_mode)) {
      throw IoError(
          fmt::format("cannot listen on {}: it exists and is not a socket", options_.unix_path));
    }
    if (exists) {
      asio::local::stream_protocol::socket probe(io_);
      probe.connect(endpoint, ec);
      if (!ec) {
        throw IoError(fmt::format("another server is listening on {}", options_.unix_path));
      }
      ::unlink(options_.unix_path.c_str());
    }
    unix_ = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
    unix_->open(endpoint.protocol(), ec);
    if (!ec) unix_->bind(endpoint, ec);
    if (!ec) unix_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      throw IoError(fmt::format("cannot listen on {}: {}", options_.unix_path, ec.message()));
    }
    accept<asio::local::stream_protocol::acceptor, UnixTransport>(*unix_);
  }
  tick();
}

template <class Acceptor, class TransportType>
void Server::Impl::accept(Acceptor& acceptor) {
  acceptor.async_accept([this, &acceptor](const asio::error_code& ec, auto socket) {
    if (stopping_) return;
    if (ec == asio::error::no_descriptors ||
        ec == asio::error_code(ENFILE, asio::error::get_system_category()) ||
        ec == asio::error::no_buffer_space || ec == asio::error::no_memory) {
      // Out of descriptors (or memory): the connection stays queued, and accepting again at
      // once would fail at once, a busy loop. Wait for sessions to end, saying so once a run.
      if (!accept_paused_) {
        accept_paused_ = true;
        log(
            fmt::format("cannot accept connections ({}): waiting for some to close; raise the "
                        "limit on open files (ulimit -n) or lower --max-clients",
                        ec.message()));
      }
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      timer->async_wait([this, &acceptor, timer](const asio::error_code&) {
        if (!stopping_) accept<Acceptor, TransportType>(acceptor);
      });
      return;
    }
    if (!ec) {
      if (accept_paused_) {
        accept_paused_ = false;
        log("accepting connections again");
      }
      if constexpr (std::is_same_v<TransportType, TcpTransport> ||
                    std::is_same_v<TransportType, TlsTransport>) {
        // Replies and pushes are small writes: with Nagle's algorithm each could wait for the
        // client's delayed ACK (about 40 ms), under TLS as much as without.
        asio::error_code ignored;
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      }
      if constexpr (std::is_same_v<TransportType, TlsTransport>) {
        adopt(std::make_unique<TlsTransport>(true, std::move(socket), *tls_));
      } else {
        adopt(std::make_unique<TransportType>(true, std::move(socket)));
      }
    }
    accept<Acceptor, TransportType>(acceptor);
  });
}

void Server::Impl::adopt(std::unique_ptr<Transport> transport) {
  // Past the limit a few connections more are read, so that `cairn serve --stop` and
  // `cairn info --connect` still reach a full server; any but a control connection among them
  // is refused at its hello.
  // Sessions being refused (busy after their handshake) count neither way.
  bool over_limit =
      sessions_.size() - over_limit_sessions_ - rejected_sessions_ >= options_.max_clients;
  bool reject = over_limit && over_limit_sessions_ >= control_room;
  std::uint64_t id = next_session_++;
  auto session = std::make_shared<Session>(*this, id, std::move(transport));
  sessions_.emplace(id, session);
  if (reject) {
    ++rejected_sessions_;
  } else if (over_limit) {
    ++over_limit_sessions_;
  }
  session->start(over_limit, reject);
}

void Server::Impl::hand_off(Handoff item) {
  bool post = false;
  {
    std::lock_guard lock(handoff_mu_);
    post = handoffs_.empty();
    handoffs_.push_back(std::move(item));
  }
  // Only the first of a batch posts; the others join it while the loop has not yet run it.
  if (post) asio::post(io_, [this] { run_handoffs(); });
}

void Server::Impl::run_handoffs() {
  std::vector<Handoff> batch;
  {
    std::lock_guard lock(handoff_mu_);
    batch.swap(handoffs_);
  }
  for (Handoff& item : batch) {
    if (item.session) {
      item.session->commit_done(item.header, item.csn, item.error);
    } else {
      on_commit(item.csn, std::move(item.oids));
    }
  }
}

void Server::Impl::remove(std::uint64_t id) {
  // Sessions call this from their own handlers; keep the object alive until they return.
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (it->second->rejected()) {
    --rejected_sessions_;
  } else if (it->second->over_limit()) {
    --over_limit_sessions_;
  }
  asio::post(io_, [session = std::move(it->second)] {});
  sessions_.erase(it);
  maybe_finish_stop();
}

void Server::Impl::on_commit(std::uint64_t csn, std::vector<Oid> oids) {
  last_csn_ = std::max(last_csn_, csn);
  ++commits_;
  if (watchers_ == 0) return;
  Writer w;
  w.array(2).u64(csn);
  write_oids(w, oids);
  std::string frame;
  append_frame(frame, Kind::push, push_commit, 0, w.bytes());
  // Copy the list: a session may close (and leave the table) while being sent to.
  std::vector<std::shared_ptr<Session>> targets;
  for (auto& [id, session] : sessions_)
    if (session->watching()) targets.push_back(session);
  for (auto& session : targets)
    session->send_raw(frame);
}

void Server::Impl::tick() {
  commits_last_second_ = commits_ - commits_at_tick_;
  commits_at_tick_ = commits_;
  if (options_.gc_bytes && !packing_ && committed_bytes_since_pack_ >= options_.gc_bytes) {
    packing_ = true;
    committed_bytes_since_pack_ = 0;
    auto run_pack = [this] {
      try {
        PackStats stats = store_.pack();
        log(fmt::format(
            "packed automatically (--gc-bytes {}): {} objects kept of {}, {} bytes from {}",
            options_.gc_bytes, stats.objects_after, stats.objects_before, stats.bytes_after,
            stats.bytes_before));
        asio::post(io_, [this] { ++packs_; });
      } catch (const Error& e) {
        log(fmt::format("automatic pack failed: {}", e.what()));
      }
      asio::post(io_, [this] { packing_ = false; });
    };
    if (pool_)
      asio::post(*pool_, run_pack);
    else
      run_pack();
  }
  tick_timer_.expires_after(std::chrono::seconds(1));
  tick_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec && !stopping_) tick();
  });
}

void Server::Impl::write_info(Writer& w) const {
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_);
  w.map(10);
  w.str("server").str(fmt::format("{} {}", options_.name, version));
  w.str("clients").u64(sessions_.size());
  w.str("watching").u64(watchers_);
  w.str("csn").u64(last_csn_);
  w.str("commits").u64(commits_);
  w.str("commits_per_second").u64(commits_last_second_);
  w.str("bytes_in").u64(bytes_in_);
  w.str("bytes_out").u64(bytes_out_);
  w.str("uptime_seconds").u64(static_cast<std::uint64_t>(uptime.count()));
  w.str("packs").u64(packs_);
}

void Server::Impl::begin_stop(const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  log(fmt::format("stopping ({})", why));
  asio::error_code ignored;
  if (tcp_) tcp_->close(ignored);
  if (unix_) {
    unix_->close(ignored);
    ::unlink(options_.unix_path.c_str());
  }
  signals_.cancel(ignored);
  tick_timer_.cancel();
  std::vector<std::shared_ptr<Session>> all;
  for (auto& [id, session] : sessions_)
    all.push_back(session);
  for (auto& session : all)
    session->drain();
  // In-flight work normally ends in milliseconds; never hang on a stuck client.
  stop_deadline_.expires_after(std::chrono::seconds(10));
  stop_deadline_.async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    std::vector<std::shared_ptr<Session>> rest;
    for (auto& [id, session] : sessions_)
      rest.push_back(session);
    for (auto& session : rest)
      session->close();
    io_.stop();
  });
  maybe_finish_stop();
}

void Server::Impl::maybe_finish_stop() {
  if (!stopping_ || !sessions_.empty()) return;
  stop_deadline_.cancel();
  io_.stop();
}

void Server::Impl::run() {
  io_.run();
  // Let blocking work still running (a pack) finish before the store goes away.
  if (pool_) pool_->join();
}

void Server::Impl::handle_signals() {
  signals_.add(SIGINT);
  signals_.add(SIGTERM);
  signals_.async_wait([this](const asio::error_code& ec, int signal) {
    if (!ec) begin_stop(signal == SIGINT ? "SIGINT" : "SIGTERM");
  });
}

Server::Server(Store& store, ServerOptions options)
    : impl_(std::make_unique<Impl>(store, std::move(options))) {}
Server::~Server() = default;
std::uint16_t Server::port() const {
  return impl_->port();
}
void Server::run() {
  impl_->run();
}
void Server::stop() {
  impl_->stop();
}
void Server::handle_signals() {
  impl_->handle_signals();
}
void Server::adopt(std::unique_ptr<Transport> transport) {
  impl_->adopt(std::move(transport));
}
void Server::poll() {
  if (impl_->io_.stopped()) impl_->io_.restart();
  impl_->poll();
}
asio::io_context& Server::io_context() {
  return impl_->io_;
}

}  // namespace cairn::net
