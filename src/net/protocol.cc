// Frames and bodies of the wire protocol (docs/protocol.md).
#include "net/protocol.h"

#include <fmt/format.h>

#include <limits>

#include "core/checksum.h"
#include "core/endian.h"

namespace cairn::net {

namespace {

std::string_view type_name(msgpack::type::object_type type) {
  switch (type) {
    case msgpack::type::NIL:
      return "nil";
    case msgpack::type::BOOLEAN:
      return "bool";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER:
      return "integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return "float";
    case msgpack::type::STR:
      return "str";
    case msgpack::type::BIN:
      return "bin";
    case msgpack::type::ARRAY:
      return "array";
    case msgpack::type::MAP:
      return "map";
    case msgpack::type::EXT:
      return "ext";
  }
  return "unknown";
}

}  // namespace

std::string_view op_name(std::uint16_t op) {
  static constexpr std::string_view names[] = {
      "none",      "hello",     "load",     "commit", "changes", "new_oids",
      "scan_type", "scan_keys", "find_key", "lock",   "unlock",  "renew",
      "pack",      "watch",     "ping",     "info",   "stop"};
  return op <= max_op ? names[op] : "unknown";
}

FrameHeader parse_header(std::string_view bytes, std::uint32_t max_body) {
  if (bytes.size() < header_size) throw ProtocolError("truncated frame header");
  FrameHeader h;
  h.body_size = static_cast<std::uint32_t>(get_be(bytes.data(), 4));
  h.version = static_cast<std::uint8_t>(bytes[4]);
  auto kind = static_cast<std::uint8_t>(bytes[5]);
  h.op = static_cast<std::uint16_t>(get_be(bytes.data() + 6, 2));
  h.id = static_cast<std::uint32_t>(get_be(bytes.data() + 8, 4));
  h.checksum = get_be(bytes.data() + 12, 8);
  if (h.version != protocol_version) {
    throw ProtocolError(fmt::format("unsupported frame version {} (this side speaks {})", h.version,
                                    protocol_version));
  }
  if (kind < 1 || kind > 4) throw ProtocolError(fmt::format("unknown frame kind {}", kind));
  h.kind = static_cast<Kind>(kind);
  if (h.body_size > max_body) {
    throw ProtocolError(
        fmt::format("frame body of {} bytes exceeds the limit of {}", h.body_size, max_body));
  }
  return h;
}

void check_body(const FrameHeader& header, std::string_view body) {
  if (checksum64(body) != header.checksum) {
    throw ProtocolError(fmt::format("checksum mismatch in a {}-byte frame body", body.size()));
  }
}

void append_frame(std::string& out, Kind kind, std::uint16_t op, std::uint32_t id,
                  std::string_view body) {
  std::size_t at = out.size();
  out.resize(at + header_size);
  char* p = out.data() + at;
  put_be(p, body.size(), 4);
  p[4] = static_cast<char>(protocol_version);
  p[5] = static_cast<char>(kind);
  put_be(p + 6, op, 2);
  put_be(p + 8, id, 4);
  put_be(p + 12, checksum64(body), 8);
  out.append(body);
}

Writer& Writer::str(std::string_view s) {
  packer_.pack_str(static_cast<std::uint32_t>(s.size()));
  packer_.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
  return *this;
}

Writer& Writer::bin(std::string_view s) {
  packer_.pack_bin(static_cast<std::uint32_t>(s.size()));
  packer_.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
  return *this;
}

Reader::Reader(const msgpack::object& array) {
  if (array.type != msgpack::type::ARRAY) {
    throw ProtocolError(fmt::format("expected an array, got {}", type_name(array.type)));
  }
  items_ = array.via.array.ptr;
  size_ = array.via.array.size;
}

const msgpack::object& Reader::take(std::string_view expected) {
  if (next_ >= size_) {
    throw ProtocolError(
        fmt::format("expected {} at element {}, but the array ends", expected, next_));
  }
  return items_[next_++];
}

std::uint64_t Reader::u64() {
  const msgpack::object& o = take("an unsigned integer");
  if (o.type != msgpack::type::POSITIVE_INTEGER) {
    throw ProtocolError(fmt::format("expected an unsigned integer at element {}, got {}", next_ - 1,
                                    type_name(o.type)));
  }
  return o.via.u64;
}

std::int64_t Reader::i64() {
  const msgpack::object& o = take("an integer");
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  if (o.type == msgpack::type::POSITIVE_INTEGER &&
      o.via.u64 <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return static_cast<std::int64_t>(o.via.u64);
  }
  throw ProtocolError(
      fmt::format("expected a 64-bit integer at element {}, got {}", next_ - 1, type_name(o.type)));
}

std::uint32_t Reader::u32() {
  std::uint64_t v = u64();
  if (v > std::numeric_limits<std::uint32_t>::max()) {
    throw ProtocolError(fmt::format("integer {} at element {} exceeds 32 bits", v, next_ - 1));
  }
  return static_cast<std::uint32_t>(v);
}

bool Reader::boolean() {
  const msgpack::object& o = take("a bool");
  if (o.type != msgpack::type::BOOLEAN) {
    throw ProtocolError(
        fmt::format("expected a bool at element {}, got {}", next_ - 1, type_name(o.type)));
  }
  return o.via.boolean;
}

bool Reader::next_is_nil() const {
  return next_ < size_ && items_[next_].type == msgpack::type::NIL;
}

void Reader::skip() {
  take("a value");
}

std::string Reader::str() {
  const msgpack::object& o = take("a string");
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  throw ProtocolError(
      fmt::format("expected a string at element {}, got {}", next_ - 1, type_name(o.type)));
}

Reader Reader::array() {
  return Reader(take("an array"));
}

const msgpack::object& Reader::object() {
  return take("a value");
}

Body::Body(std::string_view bytes) {
  // Every element takes at least one byte, so no count can honestly exceed the body's length.
  auto n = static_cast<std::size_t>(bytes.size());
  msgpack::unpack_limit limit(n, n, n, n, n, 32);
  std::size_t offset = 0;
  try {
    handle_ = msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    throw ProtocolError(fmt::format("malformed message body: {}", e.what()));
  }
  if (offset != bytes.size()) {
    throw ProtocolError(
        fmt::format("{} trailing bytes after the message body", bytes.size() - offset));
  }
  if (handle_.get().type != msgpack::type::ARRAY) {
    throw ProtocolError("a message body must be an array");
  }
}

void write_oids(Writer& w, std::span<const Oid> oids) {
  w.array(static_cast<std::uint32_t>(oids.size()));
  for (Oid oid : oids)
    w.u64(oid.value());
}

std::vector<Oid> read_oids(Reader r) {
  std::vector<Oid> out;
  out.reserve(r.size());
  while (!r.at_end())
    out.push_back(Oid{r.u64()});
  return out;
}

void write_commit_request(Writer& w, const CommitRequest& request, std::uint64_t version_offset) {
  // The appends are a fourth element only when there are any (or lock checks follow), and the
  // lock checks a fifth only when there are any, so that a commit without them is the same
  // bytes as before they existed.
  w.array(!request.locks.empty() ? 5 : request.appends.empty() ? 3 : 4);
  w.array(static_cast<std::uint32_t>(request.reads.size()));
  for (const ReadCheck& read : request.reads)
    w.array(2).u64(read.oid.value()).u64(read.version == 0 ? 0 : read.version - version_offset);
  w.array(static_cast<std::uint32_t>(request.writes.size()));
  for (const WriteOp& write : request.writes)
    w.array(4).u64(write.oid.value()).str(write.type).str(write.key).bin(write.data);
  write_oids(w, request.deletes);
  if (request.appends.empty() && request.locks.empty()) return;
  w.array(static_cast<std::uint32_t>(request.appends.size()));
  for (const AppendOp& append : request.appends)
    w.array(2).u64(append.oid.value()).bin(append.data);
  if (request.locks.empty()) return;
  w.array(static_cast<std::uint32_t>(request.locks.size()));
  for (const LockCheck& lock : request.locks)
    w.array(2).str(lock.name).u64(lock.token);
}

CommitRequest read_commit_request(Reader r) {
  CommitRequest out;
  Reader reads = r.array();
  out.reads.reserve(reads.size());
  while (!reads.at_end()) {
    Reader one = reads.array();
    Oid oid{one.u64()};
    out.reads.push_back(ReadCheck{oid, one.u64()});
  }
  Reader writes = r.array();
  out.writes.reserve(writes.size());
  while (!writes.at_end()) {
    Reader one = writes.array();
    WriteOp write;
    write.oid = Oid{one.u64()};
    write.type = one.str();
    write.key = one.str();
    write.data = one.str();
    out.writes.push_back(std::move(write));
  }
  out.deletes = read_oids(r.array());
  if (r.at_end()) return out;
  Reader appends = r.array();
  out.appends.reserve(appends.size());
  while (!appends.at_end()) {
    Reader one = appends.array();
    AppendOp append;
    append.oid = Oid{one.u64()};
    append.data = one.str();
    out.appends.push_back(std::move(append));
  }
  if (r.at_end()) return out;
  Reader locks = r.array();
  out.locks.reserve(locks.size());
  while (!locks.at_end()) {
    Reader one = locks.array();
    LockCheck lock;
    lock.name = one.str();
    lock.token = one.u64();
    out.locks.push_back(std::move(lock));
  }
  return out;
}

void write_objects(Writer& w, std::span<const StoredObject> objects) {
  w.array(static_cast<std::uint32_t>(objects.size()));
  for (const StoredObject& o : objects) {
    if (!o.exists()) {
      w.array(1).u64(0);
      continue;
    }
    w.array(4).u64(o.version).str(o.type).str(o.key).bin(o.data);
  }
}

std::vector<StoredObject> read_objects(Reader r, std::span<const Oid> oids) {
  if (r.size() != oids.size()) {
    throw ProtocolError(
        fmt::format("asked for {} objects, the reply has {}", oids.size(), r.size()));
  }
  std::vector<StoredObject> out(oids.size());
  for (std::size_t i = 0; i < oids.size(); ++i) {
    Reader one = r.array();
    out[i].oid = oids[i];
    out[i].version = one.u64();
    if (out[i].version == 0) continue;
    out[i].type = one.str();
    out[i].key = one.str();
    out[i].data = one.str();
  }
  return out;
}

void write_scan(Writer& w, std::span<const ScanEntry> entries) {
  w.array(static_cast<std::uint32_t>(entries.size()));
  for (const ScanEntry& e : entries)
    w.array(2).u64(e.oid.value()).str(e.key);
}

std::vector<ScanEntry> read_scan(Reader r) {
  std::vector<ScanEntry> out;
  out.reserve(r.size());
  while (!r.at_end()) {
    Reader one = r.array();
    Oid oid{one.u64()};
    out.push_back(ScanEntry{oid, one.str()});
  }
  return out;
}

std::string error_body(ErrorCode code, std::string_view message, std::span<const Oid> oids) {
  Writer w;
  w.array(3).u64(static_cast<std::uint16_t>(code)).str(message);
  write_oids(w, oids);
  return std::move(w.bytes());
}

void throw_error_body(std::string_view bytes) {
  Body body(bytes);
  Reader r = body.reader();
  std::uint64_t number = r.u64();
  auto code = static_cast<ErrorCode>(number);
  std::string message = r.str();
  std::vector<Oid> oids = r.at_end() ? std::vector<Oid>{} : read_oids(r.array());
  switch (code) {
    case ErrorCode::invalid_argument:
      throw InvalidArgument(message);
    case ErrorCode::not_found:
      throw NotFound(message);
    case ErrorCode::conflict:
      throw ConflictError(message, std::move(oids));
    case ErrorCode::corruption:
      throw Corruption(message);
    case ErrorCode::io:
      throw IoError(message);
    case ErrorCode::protocol:
      throw ProtocolError(message);
    case ErrorCode::auth:
      throw AuthError(message);
    case ErrorCode::lock_timeout:
      throw LockTimeout(message);
    case ErrorCode::unsupported:
      throw Unsupported(message);
    case ErrorCode::busy:
      throw Busy(message);
    case ErrorCode::lock_lost:
      throw LockLost(message);
    case ErrorCode::internal:
      throw Error(code, message);
  }
  // A code this build does not know (a newer peer's): keep its number in the message, not in a
  // code() no switch over ErrorCode expects.
  throw Error(ErrorCode::internal, fmt::format("{} (error code {})", message, number));
}

}  // namespace cairn::net
