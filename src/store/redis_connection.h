// One hiredis connection to the Redis server a store URL names, and the helpers that turn
// replies into values or cairn errors. Used by RedisStore (its command connection and the
// connection that follows the change stream) and by the bench.
//
// Failure model: connecting has a timeout, and so has every reply. Any I/O failure or timeout
// drops the socket (a late reply must never be taken for the next command's) and throws
// IoError; the next call reconnects. While the server stays unreachable, reconnect attempts
// back off (10 ms doubling to 1 s), and calls in between fail at once instead of each waiting
// for a connect to fail. An error reply, or a reply of an unexpected type, is ProtocolError.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/url.h"
#include "store/redis_ptr.h"

namespace cairn::redis {

using Args = std::vector<std::string_view>;

struct ConnectionOptions {
  // How long a connect (TCP or unix socket) may take. URL parameter `connect_timeout_ms`.
  std::chrono::milliseconds connect_timeout{2'000};
  // How long a reply may take once the command is sent. URL parameter `timeout_ms`.
  std::chrono::milliseconds command_timeout{10'000};
  // Back-off between reconnect attempts while the server is unreachable.
  std::chrono::milliseconds min_backoff{10};
  std::chrono::milliseconds max_backoff{1'000};
};

// The options a URL's parameters set (InvalidArgument for a malformed or out-of-range value).
ConnectionOptions connection_options(const StoreUrl& url);

// Commands for one round trip, encoded in the Redis protocol as they are added: one buffer
// however many commands, rather than a formatted command each.
class Pipeline {
 public:
  void add(std::initializer_list<std::string_view> args);
  void reserve(std::size_t bytes) { bytes_.reserve(bytes); }
  std::size_t size() const { return count_; }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
  std::size_t count_ = 0;
};

// Whether a failed command may be sent again on a fresh connection. Reads may; a commit may
// not, since the server may have applied it before the connection broke.
enum class Resend { never, once };

class Connection {
 public:
  Connection(StoreUrl url, std::string password, ConnectionOptions options);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects now unless connected (AUTH and SELECT included), first dropping a socket the
  // server has closed since its last use (after a restart, say). Throws IoError (unreachable or
  // backing off), AuthError, InvalidArgument (SELECT refused). Call it before a command that
  // must not be resent, so that a failure here means nothing was sent.
  void connect();

  // Sends one command and reads its reply (which may be an error reply: see check()). With
  // Resend::once, a reused connection that turns out to be broken is replaced and the command
  // sent once more (unless it timed out).
  RedisReplyPtr run(const Args& args, Resend resend = Resend::once);

  // Sends every command before reading any reply: one round trip.
  std::vector<RedisReplyPtr> run_all(const std::vector<Args>& commands,
                                     Resend resend = Resend::once);

  // The same for commands added to a Pipeline.
  std::vector<RedisReplyPtr> run_all(const Pipeline& pipeline, Resend resend = Resend::once);

  // Receives reply `i` of a pipeline. Must not throw (the replies after it would be left
  // unread); after a failure that is resent, the replies come again from index 0.
  using ReplySink = std::function<void(std::size_t i, RedisReplyPtr reply)>;

  // Like run_all, but hands each reply to `sink` as soon as it is read, so that it can be used
  // and freed before the next one is read: many small replies reuse the same memory instead of
  // all being held at once.
  void run_each(const Pipeline& pipeline, const ReplySink& sink, Resend resend = Resend::once);

  // Makes a call blocked in another thread on this connection fail now, and every later call
  // fail too. The one method that may be called from another thread.
  void interrupt();

  std::string endpoint() const;
  const ConnectionOptions& options() const { return options_; }

 private:
  // Sends what `send` buffers and reads `count` replies; on a reused connection that turns out
  // to be broken, reconnects and does it once more if `resend` allows.
  std::vector<RedisReplyPtr> exchange(std::size_t count, const std::function<void()>& send,
                                      Resend resend);
  void exchange(std::size_t count, const std::function<void()>& send, const ReplySink& sink,
                Resend resend);
  void send_pipeline(const Pipeline& pipeline);
  void ensure_connected();
  void open_socket();
  bool looks_closed() const;  // the server has closed a connection we have not used since
  void append(const Args& args);
  void flush();  // writes what append() buffered
  void send_all(std::string_view bytes);
  RedisReplyPtr read();
  [[noreturn]] void fail(std::string_view what);
  void drop();

  StoreUrl url_;
  std::string password_;
  ConnectionOptions options_;
  RedisContextPtr ctx_;  // written only by the owning thread, with fd_mu_ held
  std::string out_;      // commands appended and not yet sent
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point next_attempt_;
  std::string last_error_;
  bool timed_out_ = false;  // the last failure was a timeout: resending would wait again
  std::mutex fd_mu_;        // lets interrupt() reach the socket of a connection in use
  bool interrupted_ = false;
};

// ---- replies ----

std::string_view reply_str(const redisReply* r);
// Throws ProtocolError: the error reply's message, or the unexpected type.
[[noreturn]] void unexpected(const redisReply* r, std::string_view what);
// Throws ProtocolError for an error reply; returns `r`.
const redisReply* check(const redisReply* r, std::string_view what);
const redisReply* expect_array(const redisReply* r, std::string_view what);
// A bulk string or status reply; nullopt for nil.
std::optional<std::string_view> opt_string(const redisReply* r, std::string_view what);
std::string_view string_of(const redisReply* r, std::string_view what);
std::uint64_t parse_u64(std::string_view s, std::string_view what);
// A non-negative integer reply, or a string holding one.
std::uint64_t integer_of(const redisReply* r, std::string_view what);

}  // namespace cairn::redis
