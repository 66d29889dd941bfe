// Value <-> JSON (include/cairn/json.h), on top of nlohmann-json.
#include "cairn/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "core/base64.h"
#include "core/json_scan.h"

namespace cairn {

namespace {

using Json = nlohmann::json;

// "$bytes": base64 as base64_encode writes it, nothing else.
std::string bytes_from_base64(std::string_view text) {
  std::optional<std::string> bytes = detail::base64_decode(text);
  if (!bytes) throw InvalidArgument("invalid base64 in {\"$bytes\": ...}");
  return std::move(*bytes);
}

Json to_json_value(const Value& v) {
  switch (v.kind()) {
    case Kind::null:
      return nullptr;
    case Kind::boolean:
      return v.as_bool();
    case Kind::integer:
      return v.as_int();
    case Kind::floating: {
      double d = v.as_double();
      if (std::isnan(d)) return Json{{"$double", "nan"}};
      if (std::isinf(d)) return Json{{"$double", d > 0 ? "inf" : "-inf"}};
      return d;
    }
    case Kind::decimal:
      return Json{{"$decimal", v.as_decimal().str()}};
    case Kind::string:
      return v.as_string();
    case Kind::bytes:
      return Json{{"$bytes", detail::base64_encode(v.as_bytes().data)}};
    case Kind::list: {
      Json out = Json::array();
      for (const Value& item : v.as_list())
        out.push_back(to_json_value(item));
      return out;
    }
    case Kind::map: {
      Json out = Json::object();
      bool tagged_key = false;
      for (const auto& [key, item] : v.as_map()) {
        tagged_key = tagged_key || key.starts_with('$');
        out[key] = to_json_value(item);
      }
      if (tagged_key) return Json{{"$map", std::move(out)}};
      return out;
    }
    case Kind::ref: {
      const Ref& r = v.as_ref();
      Json out{{"$ref", r.oid.value()}};
      if (!r.type.empty()) out["$type"] = r.type;
      return out;
    }
    case Kind::timestamp:
      return Json{{"$time", v.as_timestamp().str()}};
    case Kind::uuid:
      return Json{{"$uuid", v.as_uuid().str()}};
  }
  return nullptr;
}

bool is_tagged(const Json& j) {
  return !j.empty() && j.begin().key().starts_with('$');
}

const std::string& tag_string(const Json& j, std::string_view tag) {
  if (!j.is_string()) throw InvalidArgument(fmt::format("{{\"{}\": ...}} needs a string", tag));
  return j.get_ref<const std::string&>();
}

Value from_json_value(const Json& j, std::size_t depth);

Value from_tagged(const Json& j, std::size_t depth) {
  auto first = j.begin();
  const std::string& tag = first.key();
  if (j.contains("$ref")) {
    const Json& oid = j.at("$ref");
    if (!oid.is_number_unsigned() && !(oid.is_number_integer() && oid.get<std::int64_t>() >= 0)) {
      throw InvalidArgument("{\"$ref\": N} needs a non-negative integer oid");
    }
    if (j.size() > 2 || (j.size() == 2 && !j.contains("$type"))) {
      throw InvalidArgument("{\"$ref\": N} takes only \"$type\" beside it");
    }
    std::string type;
    if (j.size() == 2) type = tag_string(j.at("$type"), "$type");
    return Ref{Oid(oid.get<std::uint64_t>()), std::move(type)};
  }
  if (j.size() != 1) {
    throw InvalidArgument(fmt::format("object with \"{}\" must have no other keys", tag));
  }
  const Json& body = first.value();
  if (tag == "$bytes") return Bytes{bytes_from_base64(tag_string(body, tag))};
  if (tag == "$time") return Timestamp::parse(tag_string(body, tag));
  if (tag == "$uuid") return Uuid::parse(tag_string(body, tag));
  if (tag == "$decimal") return Decimal(tag_string(body, tag));
  if (tag == "$double") {
    const std::string& s = tag_string(body, tag);
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    throw InvalidArgument("{\"$double\": ...} must be \"nan\", \"inf\" or \"-inf\"");
  }
  if (tag == "$map") {
    if (!body.is_object()) throw InvalidArgument("{\"$map\": ...} needs an object");
    if (depth >= max_value_depth) {
      throw InvalidArgument(
          fmt::format("value nests deeper than the limit of {}", max_value_depth));
    }
    Value::Map map;
    for (const auto& [key, item] : body.items())
      map.emplace(key, from_json_value(item, depth + 1));
    return map;
  }
  throw InvalidArgument(fmt::format(
      "unknown tag \"{}\" (known: $ref, $bytes, $time, $uuid, $decimal, $double, $map)", tag));
}

Value from_json_value(const Json& j, std::size_t depth) {
  if ((j.is_array() || (j.is_object() && !is_tagged(j))) && depth >= max_value_depth) {
    throw InvalidArgument(fmt::format("value nests deeper than the limit of {}", max_value_depth));
  }
  switch (j.type()) {
    case Json::value_t::null:
      return Value();
    case Json::value_t::boolean:
      return j.get<bool>();
    case Json::value_t::number_integer:
      return j.get<std::int64_t>();
    case Json::value_t::number_unsigned:
      return Value(j.get<std::uint64_t>());
    case Json::value_t::number_float:
      return j.get<double>();
    case Json::value_t::string:
      return j.get<std::string>();
    case Json::value_t::array: {
      Value::List list;
      list.reserve(j.size());
      for (const Json& item : j)
        list.push_back(from_json_value(item, depth + 1));
      return list;
    }
    case Json::value_t::object: {
      if (is_tagged(j)) return from_tagged(j, depth);
      Value::Map map;
      for (const auto& [key, item] : j.items()) {
        if (key.starts_with('$')) {
          throw InvalidArgument(fmt::format(
              "key \"{}\" starts with '$': write the map as {{\"$map\": {{...}}}}", key));
        }
        map.emplace(key, from_json_value(item, depth + 1));
      }
      return map;
    }
    default:
      throw InvalidArgument("unsupported JSON value");
  }
}

}  // namespace

std::string to_json(const Value& value) {
  return to_json_value(value).dump(-1, ' ', false, Json::error_handler_t::replace);
}

void check_json_text(std::string_view text) {
  if (std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    // Counted from 1, as the parser counts the bytes of its errors.
    throw InvalidArgument(fmt::format("invalid JSON at byte {}: a NUL byte", nul + 1));
  }
  constexpr std::size_t none = std::string_view::npos;
  std::size_t start = none;
  bool integral = true;
  auto end = [&](std::size_t at) {
    if (start == none) return;
    std::string_view literal = text.substr(start, at - start);
    start = none;
    if (!integral) return;
    // Unsigned literals up to 2^64 - 1 parse exactly: a $ref takes them (from_json refuses them
    // as plain integers with its own message).
    std::int64_t value = 0;
    std::uint64_t unsigned_value = 0;
    const char* first = literal.data();
    const char* last = literal.data() + literal.size();
    if (std::from_chars(first, last, value).ec == std::errc::result_out_of_range &&
        (literal.starts_with('-') ||
         std::from_chars(first, last, unsigned_value).ec == std::errc::result_out_of_range)) {
      throw InvalidArgument(fmt::format(
          "integer {} does not fit in int64 (cairn integers are 64-bit; write {}.0 for a double, "
          "or a {{\"$decimal\": ...}})",
          literal.substr(0, 64), literal.substr(0, 64)));
    }
  };
  scan_json_structure(text, [&](std::size_t i, char c, std::size_t) {
    bool digit = c >= '0' && c <= '9';
    if (start == none) {
      if (digit || c == '-') start = i, integral = true;
    } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || (c == '-' && !integral)) {
      integral = false;
    } else if (!digit) {
      end(i);
    }
  });
  end(text.size());
}

Value from_json(std::string_view text) {
  // Refuse over-deep input before parsing (nlohmann's recursion, then ours). A scan rather than
  // a parser callback: with a callback, nlohmann re-walks a container per element it closes,
  // which made long lists quadratic.
  std::size_t separators = 0;  // for check_unique_members
  if (scan_json_nesting(text, separators) > max_value_depth * 2) {
    throw InvalidArgument(fmt::format("JSON nests deeper than the limit of {}", max_value_depth));
  }
  check_json_text(text);
  Json j;
  try {
    j = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw InvalidArgument(fmt::format("invalid JSON: {}", e.what()));
  }
  check_unique_members(separators, j);
  return from_json_value(j, 0);
}

}  // namespace cairn
