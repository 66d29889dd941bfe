// The MessagePack codec for Value (docs/file-format.md, "Value encoding").
//
// Encoding uses msgpack-cxx's packer. Decoding uses msgpack-cxx's event parser (iterative: its
// own explicit stack, so hostile nesting cannot overflow ours) with a visitor that builds the
// Value directly, enforces max_value_depth, and never reserves more elements than the remaining
// input could hold, so a forged length cannot make us allocate without bound.
#include "cairn/codec.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <limits>
#include <optional>

#include <msgpack.hpp>

#include "cairn/error.h"
#include "core/checked_math.h"
#include "core/codec_ext.h"
#include "core/endian.h"

namespace cairn {

namespace {

struct StringSink {
  std::string& out;
  void write(const char* data, std::size_t size) { out.append(data, size); }
};

void put_be64(char* p, std::uint64_t v) {
  put_be(p, v, 8);
}

std::uint32_t checked_length(std::size_t n, std::string_view what) {
  if (n > std::numeric_limits<std::uint32_t>::max()) {
    throw InvalidArgument(fmt::format("{} of {} elements exceeds the 2^32-1 limit", what, n));
  }
  return static_cast<std::uint32_t>(n);
}

void pack_ext(msgpack::packer<StringSink>& pk, std::int8_t type, const char* data,
              std::size_t size) {
  pk.pack_ext(size, type);
  pk.pack_ext_body(data, checked_length(size, "extension"));
}

void pack_timestamp(msgpack::packer<StringSink>& pk, Timestamp t) {
  // MessagePack's timestamp extension (-1) counts whole seconds plus non-negative nanoseconds,
  // so split with floor division: -1 µs is second -1 plus 999,999,000 ns.
  std::int64_t seconds = t.micros / 1'000'000;
  std::int64_t micros = t.micros % 1'000'000;
  if (micros < 0) micros += 1'000'000, seconds -= 1;
  auto nanos = static_cast<std::uint64_t>(micros) * 1000;
  char buf[12];
  if (seconds >= 0 && seconds < (std::int64_t{1} << 34)) {
    if (nanos == 0 && seconds <= 0xffffffff) {  // timestamp 32
      auto s = static_cast<std::uint64_t>(seconds);
      for (int i = 3; i >= 0; --i)
        buf[i] = static_cast<char>(s & 0xff), s >>= 8;
      return pack_ext(pk, ext::timestamp, buf, 4);
    }
    put_be64(buf, nanos << 34 | static_cast<std::uint64_t>(seconds));  // timestamp 64
    return pack_ext(pk, ext::timestamp, buf, 8);
  }
  for (int i = 3; i >= 0; --i)
    buf[i] = static_cast<char>(nanos & 0xff), nanos >>= 8;
  put_be64(buf + 4, static_cast<std::uint64_t>(seconds));  // timestamp 96
  pack_ext(pk, ext::timestamp, buf, 12);
}

void pack_value(msgpack::packer<StringSink>& pk, std::string& out, const Value& v,
                std::size_t depth) {
  switch (v.kind()) {
    case Kind::null:
      pk.pack_nil();
      return;
    case Kind::boolean:
      v.as_bool() ? pk.pack_true() : pk.pack_false();
      return;
    case Kind::integer:
      pk.pack_int64(v.as_int());
      return;
    case Kind::floating: {
      // Always float 64: msgpack-cxx's pack_double() writes integral doubles as integers,
      // which would turn 1.0 into 1 and lose -0.0.
      char buf[9];
      buf[0] = static_cast<char>(0xcb);
      put_be64(buf + 1, std::bit_cast<std::uint64_t>(v.as_double()));
      out.append(buf, sizeof buf);  // the packer writes straight through to `out` too
      return;
    }
    case Kind::decimal: {
      const std::string& s = v.as_decimal().str();
      return pack_ext(pk, ext::decimal, s.data(), s.size());
    }
    case Kind::string: {
      const std::string& s = v.as_string();
      auto n = checked_length(s.size(), "string");
      pk.pack_str(n);
      pk.pack_str_body(s.data(), n);
      return;
    }
    case Kind::bytes: {
      const std::string& s = v.as_bytes().data;
      auto n = checked_length(s.size(), "bytes");
      pk.pack_bin(n);
      pk.pack_bin_body(s.data(), n);
      return;
    }
    case Kind::list:
    case Kind::map: {
      if (depth >= max_value_depth) {
        throw InvalidArgument(
            fmt::format("value nests deeper than the limit of {} lists/maps", max_value_depth));
      }
      if (v.is_list()) {
        const auto& list = v.as_list();
        pk.pack_array(checked_length(list.size(), "list"));
        for (const auto& item : list)
          pack_value(pk, out, item, depth + 1);
      } else {
        const auto& map = v.as_map();
        pk.pack_map(checked_length(map.size(), "map"));
        for (const auto& [key, item] : map) {
          auto n = checked_length(key.size(), "map key");
          pk.pack_str(n);
          pk.pack_str_body(key.data(), n);
          pack_value(pk, out, item, depth + 1);
        }
      }
      return;
    }
    case Kind::ref: {
      const Ref& r = v.as_ref();
      std::string payload(8, '\0');
      put_be64(payload.data(), r.oid.value());
      payload += r.type;
      return pack_ext(pk, ext::ref, payload.data(), payload.size());
    }
    case Kind::timestamp:
      return pack_timestamp(pk, v.as_timestamp());
    case Kind::uuid: {
      const auto& b = v.as_uuid().bytes;
      return pack_ext(pk, ext::uuid, reinterpret_cast<const char*>(b.data()), b.size());
    }
  }
}

// Builds a Value from msgpack-cxx parse events. Any problem stops the parse and records why.
class ValueBuilder : public msgpack::null_visitor {
 public:
  explicit ValueBuilder(std::size_t input_size) : input_size_(input_size) {}

  bool visit_nil() { return emit(Value()); }
  bool visit_boolean(bool b) { return emit(Value(b)); }
  bool visit_positive_integer(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return fail("unsigned integer does not fit in int64");
    }
    return emit(Value(static_cast<std::int64_t>(n)));
  }
  bool visit_negative_integer(std::int64_t n) { return emit(Value(n)); }
  bool visit_float32(float f) { return emit(Value(static_cast<double>(f))); }
  bool visit_float64(double d) { return emit(Value(d)); }
  bool visit_str(const char* p, std::uint32_t n) {
    if (in_key()) {
      stack_.back().key.assign(p, n);
      stack_.back().have_key = true;
      return true;
    }
    return emit(Value(std::string(p, n)));
  }
  bool visit_bin(const char* p, std::uint32_t n) { return emit(Value(Bytes{std::string(p, n)})); }
  bool visit_ext(const char* p, std::uint32_t n);

  bool start_array(std::uint32_t n) { return open(Value(Value::List{}), n); }
  bool end_array() { return close(); }
  bool start_map(std::uint32_t n) { return open(Value(Value::Map{}), n); }
  bool start_map_key() {
    stack_.back().in_key = true;
    stack_.back().have_key = false;
    return true;
  }
  bool end_map_key() {
    stack_.back().in_key = false;
    if (!stack_.back().have_key) return fail("map key is not a string");
    return true;
  }
  bool end_map() { return close(); }

  void parse_error(std::size_t, std::size_t offset) { set_error("malformed MessagePack", offset); }
  void insufficient_bytes(std::size_t, std::size_t offset) {
    set_error("truncated MessagePack", offset);
  }

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  std::optional<std::size_t> error_offset() const { return error_offset_; }
  Value take() { return std::move(result_); }

 private:
  struct Frame {
    Value container;
    std::string key;
    bool in_key = false;
    bool have_key = false;
  };

  bool in_key() const { return !stack_.empty() && stack_.back().in_key; }

  // A visitor-detected problem: the parser stops and reports where (decode() reads it).
  bool fail(std::string_view why) {
    if (error_.empty()) error_ = why;
    return false;
  }
  // A parser-detected problem, with its offset.
  void set_error(std::string_view why, std::size_t offset) {
    if (error_.empty()) error_ = why, error_offset_ = offset;
  }

  bool emit(Value v) {
    if (stack_.empty()) {
      result_ = std::move(v);
      return true;
    }
    Frame& top = stack_.back();
    if (top.in_key) return fail("map key is not a string");
    if (top.container.is_list()) {
      top.container.as_list().push_back(std::move(v));
      return true;
    }
    auto [it, inserted] = top.container.as_map().try_emplace(std::move(top.key), std::move(v));
    if (!inserted) return fail(fmt::format("duplicate map key \"{}\"", it->first));
    top.key.clear();
    return true;
  }

  bool open(Value container, std::uint32_t n) {
    if (in_key()) return fail("map key is not a string");
    if (stack_.size() >= max_value_depth) {
      return fail(fmt::format("value nests deeper than the limit of {}", max_value_depth));
    }
    // Every element takes at least one byte, so never reserve more than the input can hold.
    if (container.is_list()) container.as_list().reserve(std::min<std::size_t>(n, input_size_));
    stack_.push_back(Frame{std::move(container), {}, false, false});
    return true;
  }

  bool close() {
    Value done = std::move(stack_.back().container);
    stack_.pop_back();
    return emit(std::move(done));
  }

  std::size_t input_size_;
  std::vector<Frame> stack_;
  Value result_;
  std::string error_;
  std::optional<std::size_t> error_offset_;
};

bool ValueBuilder::visit_ext(const char* p, std::uint32_t n) {
  if (n < 1) return fail("empty extension");
  auto type = static_cast<std::int8_t>(p[0]);
  const char* body = p + 1;
  std::size_t size = n - 1;
  switch (type) {
    case ext::ref: {
      if (size < 8) return fail("ref extension shorter than 8 bytes");
      return emit(Value(Ref{Oid(get_be(body, 8)), std::string(body + 8, size - 8)}));
    }
    case ext::uuid: {
      if (size != 16) return fail("uuid extension is not 16 bytes");
      Uuid u;
      std::memcpy(u.bytes.data(), body, 16);
      return emit(Value(u));
    }
    case ext::decimal: {
      try {
        return emit(Value(Decimal(std::string_view(body, size))));
      } catch (const InvalidArgument& e) {
        return fail(e.what());
      }
    }
    case ext::timestamp: {
      std::int64_t seconds;
      std::uint64_t nanos;
      if (size == 4) {
        seconds = static_cast<std::int64_t>(get_be(body, 4)), nanos = 0;
      } else if (size == 8) {
        std::uint64_t v = get_be(body, 8);
        nanos = v >> 34, seconds = static_cast<std::int64_t>(v & ((std::uint64_t{1} << 34) - 1));
      } else if (size == 12) {
        nanos = get_be(body, 4), seconds = static_cast<std::int64_t>(get_be(body + 4, 8));
      } else {
        return fail("timestamp extension is not 4, 8 or 12 bytes");
      }
      if (nanos >= 1'000'000'000) return fail("timestamp nanoseconds out of range");
      // Every int64 count of microseconds, and nothing past it.
      std::optional<std::int64_t> micros =
          detail::combine_units(seconds, 1'000'000, static_cast<std::int64_t>(nanos / 1000));
      if (!micros) return fail("timestamp out of range");
      return emit(Value(Timestamp{*micros}));
    }
    default:
      return fail(fmt::format("unknown extension type {}", static_cast<int>(type)));
  }
}

}  // namespace

void encode(const Value& value, std::string& out) {
  StringSink sink{out};
  msgpack::packer<StringSink> pk(sink);
  std::size_t start = out.size();
  try {
    pack_value(pk, out, value, 0);
  } catch (...) {
    out.resize(start);  // leave `out` as it was
    throw;
  }
}

std::string encode(const Value& value) {
  std::string out;
  encode(value, out);
  return out;
}

Value decode(std::string_view bytes) {
  ValueBuilder builder(bytes.size());
  std::size_t offset = 0;
  bool ok = msgpack::parse(bytes.data(), bytes.size(), offset, builder);
  if (!ok || builder.failed()) {
    std::string why = builder.failed() ? builder.error() : "malformed MessagePack";
    std::size_t at = builder.error_offset().value_or(offset);
    throw Corruption(fmt::format("cannot decode value: {} near byte {} of {}", why,
                                 std::min(at, bytes.size()), bytes.size()));
  }
  if (offset != bytes.size()) {
    throw Corruption(fmt::format("cannot decode value: {} trailing bytes after byte {}",
                                 bytes.size() - offset, offset));
  }
  return builder.take();
}

}  // namespace cairn
