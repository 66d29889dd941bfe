// The hash form of an object's data (docs/redis-layout.md, "Objects"): writing it as hash
// fields, and rebuilding the object from a hash read back.
#include "store/redis_hash.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/json.h"
#include "cairn/value.h"
#include "core/endian.h"
#include "store/redis_connection.h"

namespace cairn::redis {
namespace {

// How a map entry whose value is bytes of UTF-8 text is written, so that it reads as that text:
// {"$utf8":"harry@example.com"} rather than base64 in {"$bytes": ...}.
constexpr std::string_view utf8_tag = "{\"$utf8\":";

// The value of `json` if it is the {"$utf8": "..."} form (spaces allowed), else nullopt.
std::optional<Value> utf8_bytes(std::string_view json) {
  if (!json.starts_with("{\"$utf8\"") || !json.ends_with('}')) return std::nullopt;
  std::string_view rest = json.substr(8, json.size() - 9);
  std::size_t colon = rest.find_first_not_of(" \t\r\n");
  if (colon == std::string_view::npos || rest[colon] != ':') {
    throw InvalidArgument("{\"$utf8\": ...} needs a string");
  }
  Value text = from_json(rest.substr(colon + 1));
  if (!text.is_string()) throw InvalidArgument("{\"$utf8\": ...} needs a string");
  return Value(Bytes{std::move(text.as_string())});
}

// A hash field's value for one map entry: to_json of it, or the $utf8 form for bytes that are
// UTF-8 text (when reading that back gives the same bytes).
std::string field_json(const Value& item) {
  if (item.is_bytes()) {
    std::string json(utf8_tag);
    json += to_json(Value(std::string_view(item.as_bytes().data)));
    json += '}';
    if (utf8_bytes(json) == item) return json;
  }
  return to_json(item);
}

// A hash field's value read back: from_json, or the $utf8 form.
Value parse_field(std::string_view json) {
  if (std::optional<Value> bytes = utf8_bytes(json)) return std::move(*bytes);
  return from_json(json);
}

// The commonest field values, read without a JSON parser: a string of printable ASCII without
// escapes, an integer of up to 18 digits, true, false and null. Each gives exactly what
// from_json gives for it.
struct SimpleJson {
  enum Kind { none, string, integer, boolean, null } kind = none;
  std::string_view text;  // string: the characters between the quotes
  std::int64_t number = 0;
  bool truth = false;
};

SimpleJson simple_json(std::string_view json) {
  if (json.size() >= 2 && json.front() == '"' && json.back() == '"') {
    std::string_view body = json.substr(1, json.size() - 2);
    for (char c : body) {
      if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return {};
    }
    return {SimpleJson::string, body, 0, false};
  }
  if (json == "true") return {SimpleJson::boolean, {}, 0, true};
  if (json == "false") return {SimpleJson::boolean, {}, 0, false};
  if (json == "null") return {SimpleJson::null, {}, 0, false};
  std::string_view digits = json.starts_with('-') ? json.substr(1) : json;
  if (digits.empty() || digits.size() > 18 || (digits[0] == '0' && digits.size() > 1)) return {};
  std::int64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return {};
    n = n * 10 + (c - '0');
  }
  return {SimpleJson::integer, {}, json.starts_with('-') ? -n : n, false};
}

// ---- MessagePack, written directly (docs/file-format.md, "Value encoding") ----
// For the load path: a map of simple fields is encoded as the hash is read, without building
// a Value. Each writes the same bytes as encode() does.

void put_be(std::string& out, std::uint64_t v, std::size_t bytes) {
  char buf[8];
  cairn::put_be(buf, v, bytes);
  out.append(buf, bytes);
}

// A MessagePack marker byte followed by `bytes` bytes of `v`, big-endian.
void put_tagged(std::string& out, unsigned char marker, std::uint64_t v, std::size_t bytes) {
  out.push_back(static_cast<char>(marker));
  put_be(out, v, bytes);
}

void put_str(std::string& out, std::string_view s) {
  std::size_t n = s.size();
  if (n < 32) {
    out.push_back(static_cast<char>(0xa0 | n));
  } else if (n <= 0xff) {
    put_tagged(out, 0xd9, n, 1);
  } else if (n <= 0xffff) {
    put_tagged(out, 0xda, n, 2);
  } else {
    put_tagged(out, 0xdb, n, 4);
  }
  out.append(s);
}

void put_map_header(std::string& out, std::size_t n) {
  if (n < 16) {
    out.push_back(static_cast<char>(0x80 | n));
  } else if (n <= 0xffff) {
    put_tagged(out, 0xde, n, 2);
  } else {
    put_tagged(out, 0xdf, n, 4);
  }
}

// The shortest form: positive fixint, uint 8/16/32/64, negative fixint, int 8/16/32/64.
void put_int(std::string& out, std::int64_t v) {
  if (v >= 0) {
    auto u = static_cast<std::uint64_t>(v);
    if (u < 128) {
      out.push_back(static_cast<char>(u));
    } else if (u <= 0xff) {
      put_tagged(out, 0xcc, u, 1);
    } else if (u <= 0xffff) {
      put_tagged(out, 0xcd, u, 2);
    } else if (u <= 0xffffffff) {
      put_tagged(out, 0xce, u, 4);
    } else {
      put_tagged(out, 0xcf, u, 8);
    }
    return;
  }
  auto bits = static_cast<std::uint64_t>(v);
  if (v >= -32) {
    out.push_back(static_cast<char>(bits & 0xff));
  } else if (v >= -128) {
    put_tagged(out, 0xd0, bits, 1);
  } else if (v >= -32768) {
    put_tagged(out, 0xd1, bits, 2);
  } else if (v >= std::numeric_limits<std::int32_t>::min()) {
    put_tagged(out, 0xd2, bits, 4);
  } else {
    put_tagged(out, 0xd3, bits, 8);
  }
}

// Appends the encoding of a simple field value; false (appending nothing) for any other.
bool put_simple_json(std::string& out, std::string_view json) {
  SimpleJson v = simple_json(json);
  switch (v.kind) {
    case SimpleJson::string:
      put_str(out, v.text);
      return true;
    case SimpleJson::integer:
      put_int(out, v.number);
      return true;
    case SimpleJson::boolean:
      out.push_back(static_cast<char>(v.truth ? 0xc3 : 0xc2));
      return true;
    case SimpleJson::null:
      out.push_back(static_cast<char>(0xc0));
      return true;
    case SimpleJson::none:
      break;
  }
  return false;
}

Value field_value(Oid oid, std::string_view field, std::string_view json) {
  SimpleJson simple = simple_json(json);
  switch (simple.kind) {
    case SimpleJson::string:
      return Value(simple.text);
    case SimpleJson::integer:
      return Value(simple.number);
    case SimpleJson::boolean:
      return Value(simple.truth);
    case SimpleJson::null:
      return Value();
    case SimpleJson::none:
      break;
  }
  try {
    return parse_field(json);
  } catch (const Error& e) {
    throw Corruption(fmt::format("redis object {}: field {} is not cairn JSON: {}", oid.value(),
                                 field, e.what()));
  }
}

// Whether `text` is `oid` in decimal.
bool is_oid(std::string_view text, Oid oid) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  return ec == std::errc() && end == text.data() + text.size() && n == oid.value();
}

}  // namespace

std::vector<std::pair<std::string, std::string>> data_fields(const std::string& data) {
  try {
    Value v = decode(data);
    if (encode(v) == data) {
      if (v.kind() == Kind::map && !v.as_map().empty() &&
          std::none_of(v.as_map().begin(), v.as_map().end(),
                       [](const auto& e) { return e.first.starts_with('_'); })) {
        std::vector<std::pair<std::string, std::string>> fields;
        Value::Map rebuilt;
        for (const auto& [name, item] : v.as_map()) {
          std::string json = field_json(item);
          rebuilt.emplace(name, parse_field(json));
          fields.emplace_back(name, std::move(json));
        }
        if (encode(Value(std::move(rebuilt))) == data) return fields;
      }
      std::string json = to_json(v);
      if (encode(from_json(json)) == data) return {{"_value", std::move(json)}};
    }
  } catch (const std::exception&) {
    // Not a Value (or not one JSON can carry exactly): kept as raw bytes below.
  }
  return {{"_raw", data}};
}

std::optional<StoredObject> object_from_hash(Oid oid, const redisReply* r, bool check_oid,
                                             bool& blob) {
  blob = false;
  expect_array(r, "HGETALL");
  StoredObject out;
  out.oid = oid;
  if (r->elements == 0) {
    if (check_oid) return std::nullopt;
    return out;
  }
  if (r->elements % 2 != 0) unexpected(r, "HGETALL");
  // First the metadata, and whether the data fields came in ascending order (as a commit
  // writes them), so that they can be encoded as they are read.
  std::optional<std::string_view> raw, value_json, version, owner;
  std::size_t data_fields = 0;
  bool ascending = true;
  std::string_view last;
  for (std::size_t i = 0; i < r->elements; i += 2) {
    std::string_view name = string_of(r->element[i], "HGETALL");
    std::string_view val = string_of(r->element[i + 1], "HGETALL");
    if (!name.starts_with('_')) {
      if (data_fields++ > 0 && !(last < name)) ascending = false;
      last = name;
    } else if (name == "_version") {
      version = val;
    } else if (name == "_type") {
      out.type = val;
    } else if (name == "_key") {
      out.key = val;
    } else if (name == "_raw") {
      raw = val;
    } else if (name == bytes_field) {
      blob = true;
    } else if (name == "_value") {
      value_json = val;
    } else if (name == "_oid") {
      owner = val;
      if (check_oid && !is_oid(val, oid)) return std::nullopt;
    } else if (name == "_at") {
      return std::nullopt;
    }
  }
  if (check_oid && !owner) return std::nullopt;
  if (!version) {
    throw Corruption(fmt::format("redis object {}: hash has no _version field", oid.value()));
  }
  out.version = parse_u64(*version, "_version");
  if (blob) {
    out.data.assign(1, blob_marker);
  } else if (raw) {
    out.data = *raw;
  } else if (value_json) {
    out.data = encode(field_value(oid, "_value", *value_json));
  } else if (ascending) {
    put_map_header(out.data, data_fields);
    for (std::size_t i = 0; i < r->elements; i += 2) {
      std::string_view name(r->element[i]->str, r->element[i]->len);
      if (name.starts_with('_')) continue;
      std::string_view val(r->element[i + 1]->str, r->element[i + 1]->len);
      put_str(out.data, name);
      if (!put_simple_json(out.data, val)) encode(field_value(oid, name, val), out.data);
    }
  } else {
    Value::Map map;
    for (std::size_t i = 0; i < r->elements; i += 2) {
      std::string_view name(r->element[i]->str, r->element[i]->len);
      if (name.starts_with('_')) continue;
      std::string_view val(r->element[i + 1]->str, r->element[i + 1]->len);
      map.emplace(std::string(name), field_value(oid, name, val));
    }
    out.data = encode(Value(std::move(map)));
  }
  return out;
}

}  // namespace cairn::redis
