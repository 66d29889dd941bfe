// The per-field self-describing JSON form of a record (Record<T>::to_json, docs/records.md):
// every field is {"type": KIND, "value": VALUE}, so that a person (or another program) reading
// the text knows what each value is without the C++ type.
#include <string>

#include "cairn/error.h"
#include "cairn/json.h"
#include "cairn/record.h"

namespace cairn::detail {

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16 |
                      static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8 |
                      static_cast<unsigned char>(in[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6)
      out += alphabet[(n >> shift) & 63];
  }
  std::size_t rest = in.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (rest == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += rest == 2 ? alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view in, const std::string& where) {
  if (in.size() % 4 != 0) throw InvalidArgument(where + ": invalid base64");
  std::string out;
  std::uint32_t n = 0;
  int bits = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '=') {
      if (i + 2 < in.size()) throw InvalidArgument(where + ": invalid base64");
      break;
    }
    const char* p = std::char_traits<char>::find(alphabet, 64, c);
    if (p == nullptr) throw InvalidArgument(where + ": invalid base64");
    n = n << 6 | static_cast<std::uint32_t>(p - alphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((n >> bits) & 0xff);
    }
  }
  return out;
}

Value to_plain(const FieldSpec& f, const Value& v) {
  if (v.is_null()) return v;
  switch (f.kind) {
    case FieldKind::bytes:
      return Value(base64_encode(v.as_bytes().data));
    case FieldKind::uuid:
      return Value(v.as_uuid().str());
    case FieldKind::timestamp:
      return Value(v.as_timestamp().str());
    case FieldKind::decimal:
      return Value(v.as_decimal().str());
    case FieldKind::pointer:
    case FieldKind::bytestream:
      return Value(static_cast<std::int64_t>(v.as_ref().oid.value()));
    default:
      return v;
  }
}

Value from_plain(const TypeSpec& spec, const FieldSpec& f, const Value& v) {
  if (v.is_null()) return v;
  std::string where = spec.name + "." + f.name;
  auto need = [&](bool ok, std::string_view what) {
    if (!ok) throw InvalidArgument(where + ": the JSON value is not " + std::string(what));
  };
  switch (f.kind) {
    case FieldKind::bytes:
      need(v.is_string(), "base64 text");
      return Value(Bytes{base64_decode(v.as_string(), where)});
    case FieldKind::uuid:
      need(v.is_string(), "a uuid");
      return Value(Uuid::parse(v.as_string()));
    case FieldKind::timestamp:
      need(v.is_string(), "an RFC 3339 time");
      return Value(Timestamp::parse(v.as_string()));
    case FieldKind::decimal:
      need(v.is_string(), "decimal text");
      return Value(Decimal(v.as_string()));
    case FieldKind::floating:
      if (v.is_int()) {
        std::optional<double> d = exact_double(v.as_int());
        need(d.has_value(), "an integer a float holds exactly");
        return Value(*d);
      }
      return v;
    case FieldKind::pointer:
    case FieldKind::bytestream:
      need(v.is_int() && v.as_int() >= 0, "an oid");
      return Value(Ref{Oid(static_cast<std::uint64_t>(v.as_int())), f.target});
    default:
      return v;
  }
}

}  // namespace

std::string to_record_json(const TypeSpec& spec, const std::string& id, const Value::Map& state) {
  Value::Map out;
  if (!spec.find("id")) out.emplace("id", Value::Map{{"type", "id"}, {"value", id}});
  for (const FieldSpec& f : spec.fields) {
    auto it = state.find(f.name);
    const Value& v = it != state.end() ? it->second : f.default_value;
    Value::Map entry{{"type", std::string(to_string(f.kind))}, {"value", to_plain(f, v)}};
    if (f.kind == FieldKind::pointer) entry.emplace("to", f.target);
    out.emplace(f.name, std::move(entry));
  }
  return cairn::to_json(Value(std::move(out)));
}

Value::Map from_record_json(const TypeSpec& spec, std::string_view text, std::string* id) {
  Value parsed = cairn::from_json(text);
  if (!parsed.is_map()) throw InvalidArgument(spec.name + ": the JSON form is an object");
  Value::Map fields;
  for (const auto& [name, entry] : parsed.as_map()) {
    const Value* type = entry.find("type");
    const Value* value = entry.find("value");
    if (!type || !type->is_string() || !value) {
      throw InvalidArgument(spec.name + "." + name + ": expected {\"type\": ..., \"value\": ...}");
    }
    if (name == "id" && !spec.find("id")) {
      if (type->as_string() != "id" || !value->is_string()) {
        throw InvalidArgument(spec.name + ".id: expected {\"type\": \"id\", \"value\": text}");
      }
      if (id) *id = value->as_string();
      continue;
    }
    const FieldSpec& f = spec.at(name);
    if (type->as_string() != to_string(f.kind)) {
      throw InvalidArgument(spec.name + "." + name + ": the JSON says \"" + type->as_string() +
                            "\", the field holds " + std::string(to_string(f.kind)));
    }
    fields.insert_or_assign(name, from_plain(spec, f, *value));
  }
  return fields;
}

}  // namespace cairn::detail
