// A Redis connection with timeouts, reconnects and back-off (redis_connection.h).
#include "store/redis_connection.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <span>

#include "cairn/error.h"

namespace cairn::redis {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000),
                 static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

std::chrono::milliseconds millis_param(const StoreUrl& url, std::string_view name,
                                       std::chrono::milliseconds fallback) {
  auto p = url.params.find(name);
  if (p == url.params.end()) return fallback;
  std::int64_t v = 0;
  const std::string& s = p->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 1 || v > 86'400'000) {
    throw InvalidArgument(fmt::format(
        "redis URL: {}=\"{}\" must be a number of milliseconds from 1 to 86400000", name, s));
  }
  return std::chrono::milliseconds(v);
}

}  // namespace

ConnectionOptions connection_options(const StoreUrl& url) {
  ConnectionOptions o;
  o.connect_timeout = millis_param(url, "connect_timeout_ms", o.connect_timeout);
  o.command_timeout = millis_param(url, "timeout_ms", o.command_timeout);
  return o;
}

Connection::Connection(StoreUrl url, std::string password, ConnectionOptions options)
    : url_(std::move(url)), password_(std::move(password)), options_(options) {}

std::string Connection::endpoint() const {
  return url_.path.empty() ? fmt::format("{}:{}", url_.host, url_.port) : url_.path;
}

void Connection::connect() {
  if (ctx_ && looks_closed()) drop();
  ensure_connected();
}

RedisReplyPtr Connection::run(const Args& args, Resend resend) {
  bool reused = ctx_ != nullptr;
  ensure_connected();
  try {
    append(args);
    flush();
    return read();
  } catch (const IoError&) {
    if (!reused || resend == Resend::never || timed_out_) throw;
  }
  ensure_connected();
  append(args);
  flush();
  return read();
}

void Connection::exchange(std::size_t count, const std::function<void()>& send,
                          const ReplySink& sink, Resend resend) {
  auto attempt = [&] {
    send();
    flush();
    for (std::size_t i = 0; i < count; ++i)
      sink(i, read());
  };
  bool reused = ctx_ != nullptr;
  ensure_connected();
  try {
    return attempt();
  } catch (const IoError&) {
    if (!reused || resend == Resend::never || timed_out_) throw;
  }
  ensure_connected();
  attempt();
}

std::vector<RedisReplyPtr> Connection::exchange(std::size_t count,
                                                const std::function<void()>& send, Resend resend) {
  std::vector<RedisReplyPtr> replies;
  exchange(
      count, send,
      [&](std::size_t i, RedisReplyPtr reply) {
        if (i == 0) replies.clear();  // a resend starts over
        if (replies.empty()) replies.reserve(count);
        replies.push_back(std::move(reply));
      },
      resend);
  return replies;
}

std::vector<RedisReplyPtr> Connection::run_all(const std::vector<Args>& commands, Resend resend) {
  return exchange(
      commands.size(),
      [&] {
        for (const Args& args : commands)
          append(args);
      },
      resend);
}

std::vector<RedisReplyPtr> Connection::run_all(const Pipeline& pipeline, Resend resend) {
  return exchange(
      pipeline.size(), [&] { send_pipeline(pipeline); }, resend);
}

void Connection::run_each(const Pipeline& pipeline, const ReplySink& sink, Resend resend) {
  exchange(
      pipeline.size(), [&] { send_pipeline(pipeline); }, sink, resend);
}

void Connection::send_pipeline(const Pipeline& pipeline) {
  flush();
  send_all(pipeline.bytes());
}

namespace {

// One command in the Redis protocol, appended to `out`: *<argc>\r\n, then $<len>\r\n<arg>\r\n
// for each argument.
void encode_command(std::string& out, std::span<const std::string_view> args) {
  // <marker><decimal>\r\n, written in place: loads add a hundred commands per round trip.
  auto header = [&out](char marker, std::size_t n) {
    char buf[24];
    buf[0] = marker;
    char* end = std::to_chars(buf + 1, buf + sizeof buf - 2, n).ptr;
    *end++ = '\r';
    *end++ = '\n';
    out.append(buf, static_cast<std::size_t>(end - buf));
  };
  header('*', args.size());
  for (std::string_view a : args) {
    header('$', a.size());
    out.append(a);
    out.append("\r\n", 2);
  }
}

}  // namespace

void Pipeline::add(std::initializer_list<std::string_view> args) {
  encode_command(bytes_, std::span<const std::string_view>(args.begin(), args.size()));
  ++count_;
}

void Connection::interrupt() {
  std::lock_guard lk(fd_mu_);
  interrupted_ = true;
  // Wakes a thread blocked reading this socket; its read fails and it drops the connection.
  if (ctx_) ::shutdown(ctx_->fd, SHUT_RDWR);
}

void Connection::ensure_connected() {
  if (ctx_) return;
  {
    std::lock_guard lk(fd_mu_);
    if (interrupted_) throw IoError(fmt::format("redis at {}: connection closed", endpoint()));
  }
  auto now = std::chrono::steady_clock::now();
  if (backoff_.count() > 0 && now < next_attempt_) {
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now);
    throw IoError(fmt::format("redis at {} is unreachable ({}); next attempt in {} ms", endpoint(),
                              last_error_, wait.count() + 1));
  }
  try {
    open_socket();
    backoff_ = std::chrono::milliseconds(0);
  } catch (const IoError& e) {
    backoff_ =
        backoff_.count() == 0 ? options_.min_backoff : std::min(backoff_ * 2, options_.max_backoff);
    next_attempt_ = std::chrono::steady_clock::now() + backoff_;
    last_error_ = e.what();
    throw;
  }
}

void Connection::open_socket() {
  timeval connect_timeout = to_timeval(options_.connect_timeout);
  RedisContextPtr c(url_.path.empty()
                        ? redisConnectWithTimeout(url_.host.c_str(), url_.port, connect_timeout)
                        : redisConnectUnixWithTimeout(url_.path.c_str(), connect_timeout));
  if (!c) throw IoError("redis: cannot allocate a connection");
  if (c->err != 0) {
    throw IoError(fmt::format("cannot connect to redis at {}: {}", endpoint(), c->errstr));
  }
  if (redisSetTimeout(c.get(), to_timeval(options_.command_timeout)) != REDIS_OK) {
    throw IoError(fmt::format("redis at {}: cannot set the command timeout", endpoint()));
  }
  {
    std::lock_guard lk(fd_mu_);
    if (interrupted_) throw IoError(fmt::format("redis at {}: connection closed", endpoint()));
    ctx_ = std::move(c);
  }
  timed_out_ = false;
  if (!password_.empty()) {
    Args auth = {"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(password_);
    append(auth);
    flush();
    RedisReplyPtr r = read();
    if (r->type == REDIS_REPLY_ERROR) {
      std::string message(reply_str(r.get()));
      drop();
      throw AuthError(fmt::format("redis at {} refused the password: {}", endpoint(), message));
    }
  }
  if (url_.db != 0) {
    std::string db = std::to_string(url_.db);
    append({"SELECT", db});
    flush();
    RedisReplyPtr r = read();
    if (r->type == REDIS_REPLY_ERROR) {
      std::string message(reply_str(r.get()));
      drop();
      throw InvalidArgument(fmt::format("redis at {}: SELECT {}: {}", endpoint(), db, message));
    }
  }
}

bool Connection::looks_closed() const {
  char byte = 0;
  ssize_t n = ::recv(ctx_->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;  // end of stream: the server closed it
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void Connection::append(const Args& args) {
  encode_command(out_, args);
}

void Connection::flush() {
  send_all(out_);
  out_.clear();
}

void Connection::send_all(std::string_view bytes) {
  // Commands are written here, not by hiredis (which only reads replies), with send() and
  // MSG_NOSIGNAL: a write to a socket the server has closed must not kill a program that has not
  // set SIGPIPE to SIG_IGN. (Blocking the signal around hiredis's write() took four more system
  // calls per round trip.)
  while (!bytes.empty()) {
    ssize_t n = ::send(ctx_->fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      ctx_->err = REDIS_ERR_IO;
      std::snprintf(ctx_->errstr, sizeof(ctx_->errstr), "%s", std::strerror(error));
      errno = error;  // fail() tells a timeout (EAGAIN) from a lost connection by it
      fail("sending a command");
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

RedisReplyPtr Connection::read() {
  void* raw = nullptr;
  if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) fail("reading a reply");
  return RedisReplyPtr(static_cast<redisReply*>(raw));
}

void Connection::fail(std::string_view what) {
  int error = errno;  // hiredis leaves the failing call's errno in place
  bool interrupted = false;
  {
    std::lock_guard lk(fd_mu_);
    interrupted = interrupted_;
  }
  // hiredis reports a socket timeout as an I/O error with errno EAGAIN.
  timed_out_ = !interrupted && ctx_ && ctx_->err == REDIS_ERR_IO &&
               (error == EAGAIN || error == EWOULDBLOCK);
  std::string reason;
  if (interrupted) {
    reason = "connection closed";
  } else if (timed_out_) {
    reason = fmt::format("no reply within {} ms", options_.command_timeout.count());
  } else {
    reason = ctx_ && ctx_->err != 0 ? ctx_->errstr : "connection lost";
  }
  drop();
  throw IoError(fmt::format("redis at {}: {}: {}", endpoint(), what, reason));
}

void Connection::drop() {
  out_.clear();
  std::lock_guard lk(fd_mu_);
  ctx_.reset();
}

// ---- replies ----

std::string_view reply_str(const redisReply* r) {
  return {r->str, r->len};
}

void unexpected(const redisReply* r, std::string_view what) {
  if (r->type == REDIS_REPLY_ERROR) {
    std::string_view message = reply_str(r);
    // A Redis that is up but cannot serve yet (reloading its data after a restart, a replica
    // without its master): it ran nothing, as if it were unreachable. Callers may retry.
    for (std::string_view transient : {"LOADING", "MASTERDOWN", "TRYAGAIN"}) {
      if (message.starts_with(transient)) {
        throw IoError(fmt::format("redis {}: not available yet: {}", what, message));
      }
    }
    throw ProtocolError(fmt::format("redis {}: {}", what, message));
  }
  throw ProtocolError(fmt::format("redis {}: unexpected reply type {}", what, r->type));
}

const redisReply* check(const redisReply* r, std::string_view what) {
  if (r->type == REDIS_REPLY_ERROR) unexpected(r, what);
  return r;
}

const redisReply* expect_array(const redisReply* r, std::string_view what) {
  if (r->type != REDIS_REPLY_ARRAY) unexpected(r, what);
  return r;
}

std::optional<std::string_view> opt_string(const redisReply* r, std::string_view what) {
  if (r->type == REDIS_REPLY_NIL) return std::nullopt;
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) unexpected(r, what);
  return reply_str(r);
}

std::string_view string_of(const redisReply* r, std::string_view what) {
  auto s = opt_string(r, what);
  if (!s) unexpected(r, what);
  return *s;
}

std::uint64_t parse_u64(std::string_view s, std::string_view what) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) {
    throw ProtocolError(fmt::format("redis {}: \"{}\" is not a number", what, s));
  }
  return v;
}

std::uint64_t integer_of(const redisReply* r, std::string_view what) {
  if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
    return static_cast<std::uint64_t>(r->integer);
  }
  return parse_u64(string_of(r, what), what);
}

}  // namespace cairn::redis
