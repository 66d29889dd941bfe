// The per-field self-describing JSON form of a record (Record<T>::to_json, docs/records.md):
// every field is {"type": KIND, "value": VALUE}, so that a person (or another program) reading
// the text knows what each value is without the C++ type.
#include <string>

#include "cairn/error.h"
#include "cairn/json.h"
#include "cairn/record.h"
#include "core/base64.h"

namespace cairn::detail {

namespace {

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
    case FieldKind::bytes: {
      need(v.is_string(), "base64 text");
      std::optional<std::string> bytes = base64_decode(v.as_string());
      if (!bytes) throw InvalidArgument(where + ": invalid base64");
      return Value(Bytes{std::move(*bytes)});
    }
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
      if (type->as_string() != "id" || !value->is_string() || entry.as_map().size() != 2) {
        throw InvalidArgument(spec.name + ".id: expected {\"type\": \"id\", \"value\": text}");
      }
      if (value->as_string().empty()) {
        throw InvalidArgument(spec.name + ".id: must be a non-empty string");
      }
      if (id) *id = value->as_string();
      continue;
    }
    const FieldSpec& f = spec.at(name);
    // Members it does not know were meant for something: refused, not dropped. A pointer's
    // "to" (written by to_json) must name the field's target.
    for (const auto& [member, member_value] : entry.as_map()) {
      if (member == "type" || member == "value") continue;
      if (member == "to" && f.kind == FieldKind::pointer && member_value.is_string() &&
          member_value.as_string() == f.target) {
        continue;
      }
      throw InvalidArgument(
          spec.name + "." + name + ": unexpected member \"" + member +
          "\" (expected type and value" +
          (f.kind == FieldKind::pointer ? ", and to: \"" + f.target + "\")" : ")"));
    }
    if (type->as_string() != to_string(f.kind)) {
      throw InvalidArgument(spec.name + "." + name + ": the JSON says \"" + type->as_string() +
                            "\", the field holds " + std::string(to_string(f.kind)));
    }
    fields.insert_or_assign(name, from_plain(spec, f, *value));
  }
  return fields;
}

}  // namespace cairn::detail
