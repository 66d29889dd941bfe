// The wire protocol between `cairn serve` and RemoteStore: frames, opcodes and the MessagePack
// bodies of every request and reply. The byte layout is specified in docs/protocol.md; this file
// and that page change together.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "cairn/error.h"
#include "cairn/store.h"

namespace cairn::net {

inline constexpr std::uint8_t protocol_version = 1;
// What a server can do beyond protocol version 1 as it first shipped: bits of the optional fifth
// element of its hello reply (docs/protocol.md §4.1). A server without it has none of them.
inline constexpr std::uint64_t feature_appends = 1;      // commits may carry appends (§4.2)
inline constexpr std::uint64_t feature_lock_checks = 2;  // commits may carry lock checks (§4.2)
// Bits of the optional fifth element of a hello request (§4.1).
inline constexpr std::uint64_t hello_control = 1;  // this connection sends only ping, info, stop
inline constexpr std::size_t header_size = 20;
// Large enough for one object at max_object_bytes plus its framing.
inline constexpr std::uint32_t default_max_frame_bytes = max_object_bytes + 1024 * 1024;
// The largest frame body a server reads before the connection's hello is answered.
inline constexpr std::uint32_t max_hello_bytes = 64 * 1024;
// The largest response body a client accepts, and by default the largest a server sends: a load
// of many objects answers in one frame, which may well be larger than any request.
inline constexpr std::uint32_t default_max_reply_bytes = 1u << 30;

// The size for a read buffer of `size` bytes holding `received` bytes, of which a frame whose
// header has arrived takes the first `frame_end`: it grows with what has arrived (doubling, up
// to the frame), never at once to the length a header announces, so that a peer cannot make
// the reader hold memory for bytes it never sends (§2 rule 1).
inline std::size_t frame_buffer_size(std::size_t size, std::size_t received,
                                     std::size_t frame_end) {
  if (size >= frame_end) return size;
  return std::min(frame_end, std::max(size, 2 * received));
}

enum class Kind : std::uint8_t { request = 1, response = 2, error = 3, push = 4 };

enum class Op : std::uint16_t {
  hello = 1,
  load = 2,
  commit = 3,
  changes = 4,
  new_oids = 5,
  scan_type = 6,
  scan_keys = 7,
  find_key = 8,
  lock = 9,
  unlock = 10,
  renew = 11,
  pack = 12,
  watch = 13,
  ping = 14,
  info = 15,
  stop = 16,
};
inline constexpr std::uint16_t max_op = 16;
// What a control connection (hello_control) may send.
inline constexpr bool control_op(std::uint16_t op) {
  return op == static_cast<std::uint16_t>(Op::ping) || op == static_cast<std::uint16_t>(Op::info) ||
         op == static_cast<std::uint16_t>(Op::stop);
}

// The only push: a commit's CSN and changed oids.
inline constexpr std::uint16_t push_commit = 1;

std::string_view op_name(std::uint16_t op);

struct FrameHeader {
  std::uint32_t body_size = 0;
  std::uint8_t version = protocol_version;
  Kind kind = Kind::request;
  std::uint16_t op = 0;
  std::uint32_t id = 0;
  std::uint64_t checksum = 0;
};

// Decodes the first header_size bytes of a frame. Throws ProtocolError for an unknown version
// or kind, or a body longer than max_body.
FrameHeader parse_header(std::string_view bytes, std::uint32_t max_body);
// Throws ProtocolError if the body does not match the header's checksum.
void check_body(const FrameHeader& header, std::string_view body);

// Appends one frame with `body` (which must not exceed 2^32-1 bytes) to `out`.
void append_frame(std::string& out, Kind kind, std::uint16_t op, std::uint32_t id,
                  std::string_view body);

// Writes MessagePack for request and reply bodies.
class Writer {
 public:
  Writer() : packer_(sink_) {}
  Writer& array(std::uint32_t n) {
    packer_.pack_array(n);
    return *this;
  }
  Writer& map(std::uint32_t n) {
    packer_.pack_map(n);
    return *this;
  }
  Writer& u64(std::uint64_t v) {
    packer_.pack_uint64(v);
    return *this;
  }
  Writer& i64(std::int64_t v) {
    packer_.pack_int64(v);
    return *this;
  }
  Writer& f64(double v) {
    packer_.pack_double(v);
    return *this;
  }
  Writer& boolean(bool v) {
    if (v)
      packer_.pack_true();
    else
      packer_.pack_false();
    return *this;
  }
  Writer& nil() {
    packer_.pack_nil();
    return *this;
  }
  Writer& str(std::string_view s);
  Writer& bin(std::string_view s);
  std::string& bytes() { return sink_.out; }

 private:
  struct Sink {
    std::string out;
    void write(const char* data, std::size_t size) { out.append(data, size); }
  };
  Sink sink_;
  msgpack::packer<Sink> packer_;
};

// Reads a MessagePack array element by element; every mismatch is a ProtocolError naming what
// was expected, so a hostile body can only ever produce an error reply.
class Reader {
 public:
  explicit Reader(const msgpack::object& array);
  std::size_t size() const { return size_; }
  bool at_end() const { return next_ == size_; }
  std::uint64_t u64();
  std::int64_t i64();  // any integer that fits
  std::uint32_t u32();
  bool boolean();
  bool next_is_nil() const;
  void skip();
  std::string str();  // str or bin
  Reader array();
  const msgpack::object& object();  // any type

 private:
  const msgpack::object& take(std::string_view expected);
  const msgpack::object* items_ = nullptr;
  std::size_t size_ = 0;
  std::size_t next_ = 0;
};

// A decoded body: owns the parse and hands out a Reader over its top-level array.
class Body {
 public:
  // Throws ProtocolError unless `bytes` is exactly one MessagePack array. Sizes are bounded by
  // the body length, so a forged length cannot make the parser allocate without bound.
  explicit Body(std::string_view bytes);
  Reader reader() const { return Reader(handle_.get()); }
  const msgpack::object& root() const { return handle_.get(); }

 private:
  msgpack::object_handle handle_;
};

// Shared encodings of the store contract's types.
void write_oids(Writer& w, std::span<const Oid> oids);
std::vector<Oid> read_oids(Reader r);
// `version_offset` is subtracted from every read version but 0 (RemoteStore's CSN offset).
void write_commit_request(Writer& w, const CommitRequest& request,
                          std::uint64_t version_offset = 0);
CommitRequest read_commit_request(Reader r);
void write_objects(Writer& w, std::span<const StoredObject> objects);
std::vector<StoredObject> read_objects(Reader r, std::span<const Oid> oids);
void write_scan(Writer& w, std::span<const ScanEntry> entries);
std::vector<ScanEntry> read_scan(Reader r);

// An error reply: [code, message, [oids]].
std::string error_body(ErrorCode code, std::string_view message, std::span<const Oid> oids = {});
// Throws the cairn::Error subclass an error reply names.
[[noreturn]] void throw_error_body(std::string_view body);

}  // namespace cairn::net
