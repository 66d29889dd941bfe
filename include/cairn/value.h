// Value: the dynamically typed datum cairn stores — null, bool, int64, double, exact decimal,
// UTF-8 string, bytes, list, ordered map, reference, timestamp and uuid — with a total order
// so that values can be compared, sorted and indexed.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "cairn/oid.h"

namespace cairn {

// The kinds, in the order the total order ranks values of different kinds.
enum class Kind : std::uint8_t {
  null,
  boolean,
  integer,
  floating,
  decimal,
  string,
  bytes,
  list,
  map,
  ref,
  timestamp,
  uuid,
};

std::string_view to_string(Kind kind);

// An exact decimal number kept as its text: an optional '-', digits, optionally '.' and digits
// ("1.10" stays "1.10"). Ordering and equality are numeric ("1.10" == "1.1").
class Decimal {
 public:
  static constexpr std::size_t max_length = 256;
  Decimal() : text_("0") {}
  // Throws InvalidArgument unless `text` matches -?[0-9]+(\.[0-9]+)? and is at most max_length.
  explicit Decimal(std::string_view text);
  const std::string& str() const { return text_; }
  friend std::strong_ordering operator<=>(const Decimal& a, const Decimal& b);
  friend bool operator==(const Decimal& a, const Decimal& b) { return (a <=> b) == 0; }

 private:
  std::string text_;
};

// Raw bytes, distinct from text.
struct Bytes {
  std::string data;
  friend auto operator<=>(const Bytes&, const Bytes&) = default;
};

// A reference to a stored object, optionally naming the type it must have.
struct Ref {
  Oid oid;
  std::string type;
  friend auto operator<=>(const Ref&, const Ref&) = default;
};

// A UTC instant with microsecond precision.
struct Timestamp {
  std::int64_t micros = 0;  // since 1970-01-01T00:00:00Z
  friend auto operator<=>(const Timestamp&, const Timestamp&) = default;
  // RFC 3339 in UTC with microseconds, e.g. "2026-11-25T10:00:00.000001Z". A year outside
  // 0000-9999 is written as ISO 8601 expands it, a sign and then the year ("+10000-01-01T...",
  // "-0001-12-31T..."), so that every Timestamp has a text form that parse() reads back.
  std::string str() const;
  // Accepts RFC 3339 ("Z" or ±hh:mm offset; up to 6 fraction digits; 9 are read), and the
  // expanded years str() writes (a sign and 4 to 6 digits). Throws InvalidArgument, also for a
  // time past what `micros` holds (about 292,000 years either side of 1970).
  static Timestamp parse(std::string_view text);
  static Timestamp now();
};

struct Uuid {
  std::array<std::uint8_t, 16> bytes{};
  friend auto operator<=>(const Uuid&, const Uuid&) = default;
  std::string str() const;  // 8-4-4-4-12 lowercase hex
  // Accepts the 8-4-4-4-12 form (either case). Throws InvalidArgument.
  static Uuid parse(std::string_view text);
  static Uuid random();  // version 4
};

class Value {
 public:
  using List = std::vector<Value>;
  using Map = std::map<std::string, Value, std::less<>>;

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  template <typename T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>) Value(T n)
      : v_(checked_int(n)) {}
  Value(double d) : v_(d) {}
  Value(Decimal d) : v_(std::move(d)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(Bytes b) : v_(std::move(b)) {}
  Value(List l) : v_(std::move(l)) {}
  Value(Map m) : v_(std::move(m)) {}
  Value(Ref r) : v_(std::move(r)) {}
  Value(Oid oid) : v_(Ref{oid, {}}) {}
  Value(Timestamp t) : v_(t) {}
  Value(Uuid u) : v_(u) {}

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_null() const { return kind() == Kind::null; }
  bool is_bool() const { return kind() == Kind::boolean; }
  bool is_int() const { return kind() == Kind::integer; }
  bool is_double() const { return kind() == Kind::floating; }
  bool is_decimal() const { return kind() == Kind::decimal; }
  bool is_string() const { return kind() == Kind::string; }
  bool is_bytes() const { return kind() == Kind::bytes; }
  bool is_list() const { return kind() == Kind::list; }
  bool is_map() const { return kind() == Kind::map; }
  bool is_ref() const { return kind() == Kind::ref; }
  bool is_timestamp() const { return kind() == Kind::timestamp; }
  bool is_uuid() const { return kind() == Kind::uuid; }

  // Accessors throw InvalidArgument naming both kinds when the value is of another kind.
  bool as_bool() const { return get<bool>(); }
  std::int64_t as_int() const { return get<std::int64_t>(); }
  double as_double() const { return get<double>(); }
  const Decimal& as_decimal() const { return get<Decimal>(); }
  const std::string& as_string() const { return get<std::string>(); }
  const Bytes& as_bytes() const { return get<Bytes>(); }
  Bytes& as_bytes() { return get<Bytes>(); }
  const List& as_list() const { return get<List>(); }
  List& as_list() { return get<List>(); }
  const Map& as_map() const { return get<Map>(); }
  Map& as_map() { return get<Map>(); }
  const Ref& as_ref() const { return get<Ref>(); }
  Timestamp as_timestamp() const { return get<Timestamp>(); }
  Uuid as_uuid() const { return get<Uuid>(); }

  // Map lookup: nullptr when this is not a map or the key is absent.
  const Value* find(std::string_view key) const;

  // Total order: values of different kinds order by Kind; doubles order numerically with every
  // NaN equal to every other NaN and below all numbers, and -0.0 == 0.0.
  friend std::strong_ordering operator<=>(const Value& a, const Value& b);
  friend bool operator==(const Value& a, const Value& b) { return (a <=> b) == 0; }

 private:
  template <typename T>
  static std::int64_t checked_int(T n) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (n > static_cast<T>(INT64_MAX)) throw_int_range();
    }
    return static_cast<std::int64_t>(n);
  }
  [[noreturn]] static void throw_int_range();
  [[noreturn]] void throw_kind(Kind wanted) const;

  template <typename T>
  const T& get() const {
    if (const T* p = std::get_if<T>(&v_)) return *p;
    throw_kind(static_cast<Kind>(Variant(T{}).index()));
  }
  template <typename T>
  T& get() {
    if (T* p = std::get_if<T>(&v_)) return *p;
    throw_kind(static_cast<Kind>(Variant(T{}).index()));
  }

  using Variant = std::variant<std::monostate, bool, std::int64_t, double, Decimal, std::string,
                               Bytes, List, Map, Ref, Timestamp, Uuid>;
  Variant v_;
};

}  // namespace cairn
