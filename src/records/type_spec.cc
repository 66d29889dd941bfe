// Type descriptions of records (include/cairn/record.h): field lookup, the checks a field's
// value must pass, and the conversion of query values to a field's kind.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cairn/error.h"
#include "cairn/record.h"

namespace cairn {

namespace {

Kind value_kind(FieldKind kind) {
  switch (kind) {
    case FieldKind::string:
      return Kind::string;
    case FieldKind::bytes:
      return Kind::bytes;
    case FieldKind::uuid:
      return Kind::uuid;
    case FieldKind::timestamp:
      return Kind::timestamp;
    case FieldKind::decimal:
      return Kind::decimal;
    case FieldKind::floating:
      return Kind::floating;
    case FieldKind::integer:
      return Kind::integer;
    case FieldKind::boolean:
      return Kind::boolean;
    case FieldKind::list:
      return Kind::list;
    case FieldKind::map:
    case FieldKind::object:
      return Kind::map;
    case FieldKind::pointer:
    case FieldKind::bytestream:
      return Kind::ref;
    case FieldKind::json:
      break;
  }
  return Kind::null;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF.
    static constexpr std::uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

bool is_empty(const Value& v) {
  switch (v.kind()) {
    case Kind::null:
      return true;
    case Kind::string:
      return v.as_string().empty();
    case Kind::bytes:
      return v.as_bytes().data.empty();
    case Kind::list:
      return v.as_list().empty();
    case Kind::map:
      return v.as_map().empty();
    default:
      return false;
  }
}

}  // namespace

std::string_view to_string(FieldKind kind) {
  switch (kind) {
    case FieldKind::string:
      return "string";
    case FieldKind::bytes:
      return "bytes";
    case FieldKind::json:
      return "json";
    case FieldKind::uuid:
      return "uuid";
    case FieldKind::timestamp:
      return "timestamp";
    case FieldKind::decimal:
      return "decimal";
    case FieldKind::floating:
      return "float";
    case FieldKind::integer:
      return "integer";
    case FieldKind::boolean:
      return "bool";
    case FieldKind::list:
      return "list";
    case FieldKind::map:
      return "map";
    case FieldKind::pointer:
      return "pointer";
    case FieldKind::object:
      return "object";
    case FieldKind::bytestream:
      return "bytestream";
  }
  return "unknown";
}

const FieldSpec* TypeSpec::find(std::string_view field) const {
  for (const FieldSpec& f : fields)
    if (f.name == field) return &f;
  return nullptr;
}

const FieldSpec& TypeSpec::at(std::string_view field) const {
  if (const FieldSpec* f = find(field)) return *f;
  throw InvalidArgument(name + " has no field \"" + std::string(field) + "\"");
}

std::string TypeSpec::index_type(const FieldSpec& field) const {
  return "cairn.index:" + name + "#" + std::to_string(generation) + ":" + field.name;
}

void TypeSpec::check_index_types() const {
  for (const FieldSpec& f : fields) {
    if (!f.indexed) continue;
    std::string type = index_type(f);
    if (type.size() > max_type_length) {
      throw InvalidArgument(fmt::format(
          "{}.{}: its index entries would have the store type \"{}\", of {} bytes, past the {} "
          "a type may have: shorten the type name (or the field's), or drop the index",
          name, f.name, type, type.size(), max_type_length));
    }
  }
}

void TypeSpec::validate(const FieldSpec& field, const Value& value) const {
  auto fail = [&](const std::string& problem) {
    throw InvalidArgument(name + "." + field.name + ": " + problem);
  };
  if (value.is_null()) {
    if (field.required) fail("is required");
    if (!field.nullable) fail("must not be null");
  } else if (field.kind != FieldKind::json && value.kind() != value_kind(field.kind)) {
    fail("expected " + std::string(to_string(field.kind)) + ", got " +
         std::string(to_string(value.kind())));
  }
  if (field.required && is_empty(value)) fail("must not be empty");
  if (value.is_string() && !valid_utf8(value.as_string())) fail("is not valid UTF-8");
  if (value.is_ref() && !field.target.empty() && !value.as_ref().type.empty() &&
      value.as_ref().type != field.target) {
    fail("points to a " + value.as_ref().type + ", the field points to a " + field.target);
  }
  if (value.is_null()) return;
  for (const FieldCheck& check : field.checks) {
    if (!check.ok(value)) fail(check.message);
  }
}

void TypeSpec::check_matchable(const FieldSpec& field, const Value& value) const {
  // Others may compare with such a value: name < "abc\xff", name != "\xff".
  auto fail = [&](const std::string& problem) {
    throw InvalidArgument(name + "." + field.name + ": " + problem + ", so it matches nothing");
  };
  if (value.is_string() && !valid_utf8(value.as_string())) fail("is not valid UTF-8");
  if (value.is_ref() && !field.target.empty() && value.as_ref().type != field.target) {
    fail("points to a " + value.as_ref().type + ", the field points to a " + field.target);
  }
}

Value TypeSpec::coerce(const FieldSpec& field, Value value) const {
  auto fail = [&](const std::string& problem) {
    throw InvalidArgument(name + "." + field.name + ": " + problem);
  };
  // A parse error ("invalid timestamp ...") says what is wrong, not where: add the field.
  auto parsed = [&](auto parse) -> Value {
    try {
      return Value(parse());
    } catch (const InvalidArgument& e) {
      fail(e.what());
    }
    return Value();
  };
  if (value.is_null() || field.kind == FieldKind::json) return value;
  switch (field.kind) {
    case FieldKind::floating:
      if (value.is_int()) {
        // Only where a double holds the integer exactly: 2^53 + 1 would become 2^53 and match it.
        if (std::optional<double> d = detail::exact_double(value.as_int())) return Value(*d);
        fail("the integer " + std::to_string(value.as_int()) + " has no exact float value");
      }
      break;
    case FieldKind::decimal:
      if (value.is_int()) return Value(Decimal(std::to_string(value.as_int())));
      if (value.is_string()) return parsed([&] { return Decimal(value.as_string()); });
      break;
    case FieldKind::uuid:
      if (value.is_string()) return parsed([&] { return Uuid::parse(value.as_string()); });
      break;
    case FieldKind::timestamp:
      if (value.is_string()) return parsed([&] { return Timestamp::parse(value.as_string()); });
      break;
    case FieldKind::bytes:
      if (value.is_string()) return Value(Bytes{value.as_string()});
      break;
    case FieldKind::pointer:
      if (value.is_int() && value.as_int() >= 0) {
        return Value(Ref{Oid(static_cast<std::uint64_t>(value.as_int())), field.target});
      }
      if (value.is_ref() && value.as_ref().type.empty()) {
        return Value(Ref{value.as_ref().oid, field.target});
      }
      break;
    default:
      break;
  }
  auto a = [](std::string_view kind) {
    return (std::string_view("aeiou").find(kind.front()) != std::string_view::npos ? "an " : "a ") +
           std::string(kind);
  };
  if (value.kind() != value_kind(field.kind)) {
    fail("cannot compare " + a(to_string(value.kind())) + " with " + a(to_string(field.kind)) +
         " field");
  }
  return value;
}

namespace detail {

void validate_state(const TypeSpec& spec, const Value::Map& state) {
  static const Value null;
  for (const FieldSpec& f : spec.fields) {
    auto it = state.find(f.name);
    spec.validate(f, it != state.end() ? it->second : null);
  }
}

void collect_dropped_keys(const Value& stored, const Value& kept, std::vector<std::string>& path,
                          std::vector<NestedKey>& out) {
  if (!stored.is_map() || !kept.is_map()) return;
  const Value::Map& kept_map = kept.as_map();
  for (const auto& [key, value] : stored.as_map()) {
    path.push_back(key);
    auto it = kept_map.find(key);
    if (it == kept_map.end()) {
      out.push_back(NestedKey{path, value});
    } else {
      collect_dropped_keys(value, it->second, path, out);
    }
    path.pop_back();
  }
}

void restore_dropped_keys(Value::Map& state, const std::vector<NestedKey>& keys) {
  for (const NestedKey& k : keys) {
    Value::Map* map = &state;
    for (std::size_t i = 0; map != nullptr && i + 1 < k.path.size(); ++i) {
      auto it = map->find(k.path[i]);
      map = it != map->end() && it->second.is_map() ? &it->second.as_map() : nullptr;
    }
    if (map != nullptr) map->try_emplace(k.path.back(), k.value);
  }
}

std::optional<double> exact_double(std::int64_t i) {
  const double d = static_cast<double>(i);
  // 2^63, the double nearest INT64_MAX, is past every int64 (and would not convert back).
  if (d < 9223372036854775808.0 && static_cast<std::int64_t>(d) == i) return d;
  return std::nullopt;
}

}  // namespace detail

}  // namespace cairn
