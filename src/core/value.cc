// Value and its scalar kinds: validation, text forms and the total order.
#include "cairn/value.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <random>

#include "cairn/error.h"
#include "core/checked_math.h"

namespace cairn {

std::string_view to_string(Kind kind) {
  switch (kind) {
    case Kind::null:
      return "null";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
      return "int";
    case Kind::floating:
      return "double";
    case Kind::decimal:
      return "decimal";
    case Kind::string:
      return "string";
    case Kind::bytes:
      return "bytes";
    case Kind::list:
      return "list";
    case Kind::map:
      return "map";
    case Kind::ref:
      return "ref";
    case Kind::timestamp:
      return "timestamp";
    case Kind::uuid:
      return "uuid";
  }
  return "unknown";
}

// ---- Decimal ----

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

struct DecimalParts {
  bool negative;
  std::string_view integer;   // without leading zeros ("" for zero)
  std::string_view fraction;  // without trailing zeros
};

DecimalParts split_decimal(std::string_view text) {
  DecimalParts p{};
  if (!text.empty() && text[0] == '-') {
    p.negative = true;
    text.remove_prefix(1);
  }
  auto dot = text.find('.');
  p.integer = text.substr(0, dot);
  p.fraction = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  while (!p.integer.empty() && p.integer.front() == '0')
    p.integer.remove_prefix(1);
  while (!p.fraction.empty() && p.fraction.back() == '0')
    p.fraction.remove_suffix(1);
  if (p.integer.empty() && p.fraction.empty()) p.negative = false;  // -0 == 0
  return p;
}

std::strong_ordering compare_magnitude(const DecimalParts& a, const DecimalParts& b) {
  if (auto c = a.integer.size() <=> b.integer.size(); c != 0) return c;
  if (auto c = a.integer.compare(b.integer); c != 0) return c <=> 0;
  return a.fraction.compare(b.fraction) <=> 0;
}

}  // namespace

Decimal::Decimal(std::string_view text) {
  auto fail = [&](std::string_view why) {
    throw InvalidArgument(fmt::format("invalid decimal \"{}\": {}", text.substr(0, 64), why));
  };
  if (text.size() > max_length) fail(fmt::format("longer than {} characters", max_length));
  std::size_t i = 0;
  if (i < text.size() && text[i] == '-') ++i;
  std::size_t digits = 0;
  while (i < text.size() && is_digit(text[i]))
    ++i, ++digits;
  if (digits == 0) fail("expected digits");
  if (i < text.size() && text[i] == '.') {
    ++i;
    std::size_t frac = 0;
    while (i < text.size() && is_digit(text[i]))
      ++i, ++frac;
    if (frac == 0) fail("expected digits after '.'");
  }
  if (i != text.size()) fail("expected -?digits[.digits]");
  text_ = std::string(text);
}

std::strong_ordering operator<=>(const Decimal& a, const Decimal& b) {
  DecimalParts pa = split_decimal(a.text_), pb = split_decimal(b.text_);
  if (pa.negative != pb.negative) {
    return pa.negative ? std::strong_ordering::less : std::strong_ordering::greater;
  }
  auto c = compare_magnitude(pa, pb);
  return pa.negative ? 0 <=> c : c;
}

// ---- Timestamp ----

namespace {

constexpr std::int64_t micros_per_day = 86'400'000'000;

// Days since 1970-01-01 <-> proleptic Gregorian (year, month, day), for any year a Timestamp
// reaches (chrono's year stops at ±32767). The algorithms of H. Hinnant's "chrono-Compatible
// Low-Level Date Algorithms": eras of 400 years, March-based years.
struct Civil {
  std::int64_t year;
  unsigned month;  // 1..12
  unsigned day;    // 1..31
};

Civil civil_from_days(std::int64_t z) {
  z += 719'468;
  std::int64_t era = (z >= 0 ? z : z - 146'096) / 146'097;
  auto doe = static_cast<unsigned>(z - era * 146'097);                     // [0, 146096]
  unsigned yoe = (doe - doe / 1460 + doe / 36'524 - doe / 146'096) / 365;  // [0, 399]
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                  // [0, 365]
  unsigned mp = (5 * doy + 2) / 153;                                       // [0, 11]
  unsigned day = doy - (153 * mp + 2) / 5 + 1;
  unsigned month = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  auto yoe = static_cast<unsigned>(year - era * 400);                            // [0, 399]
  unsigned doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;  // [0, 365]
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                          // [0, 146096]
  return era * 146'097 + static_cast<std::int64_t>(doe) - 719'468;
}

bool is_leap(std::int64_t year) {
  return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
}

unsigned days_in_month(std::int64_t year, unsigned month) {
  static constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap(year) ? 29 : days[month - 1];
}

}  // namespace

std::string Timestamp::str() const {
  std::int64_t day = micros / micros_per_day;
  std::int64_t rest = micros % micros_per_day;
  if (rest < 0) rest += micros_per_day, --day;
  Civil c = civil_from_days(day);
  // RFC 3339 has four-digit years; past them, ISO 8601's expanded form: a sign, then the year.
  std::string year = c.year >= 0 && c.year <= 9999 ? fmt::format("{:04}", c.year)
                     : c.year > 9999               ? fmt::format("+{}", c.year)
                                                   : fmt::format("-{:04}", -c.year);
  std::int64_t seconds = rest / 1'000'000;
  return fmt::format("{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", year, c.month, c.day,
                     seconds / 3600, seconds / 60 % 60, seconds % 60, rest % 1'000'000);
}

Timestamp Timestamp::parse(std::string_view text) {
  auto fail = [&]() -> Timestamp {
    throw InvalidArgument(
        fmt::format("invalid timestamp \"{}\": expected RFC 3339, e.g. 2026-11-25T10:00:00Z",
                    text.substr(0, 64)));
  };
  std::size_t pos = 0;
  auto number = [&](std::size_t width) -> int {
    if (pos + width > text.size()) fail();
    int n = 0;
    for (std::size_t k = 0; k < width; ++k) {
      char c = text[pos + k];
      if (!is_digit(c)) fail();
      n = n * 10 + (c - '0');
    }
    pos += width;
    return n;
  };
  auto expect = [&](std::string_view chars) {
    if (pos >= text.size() || chars.find(text[pos]) == std::string_view::npos) fail();
    ++pos;
  };
  // Four digits, or (as str() writes years outside 0000-9999) a sign and four to six.
  std::int64_t year = 0;
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
    std::int64_t sign = text[0] == '-' ? -1 : 1;
    ++pos;
    std::size_t digits = 0;
    while (pos + digits < text.size() && is_digit(text[pos + digits]))
      ++digits;
    if (digits < 4 || digits > 6) fail();
    year = sign * number(digits);
  } else {
    year = number(4);
  }
  expect("-");
  int month = number(2);
  expect("-");
  int mday = number(2);
  expect("Tt ");
  int hour = number(2);
  expect(":");
  int minute = number(2);
  expect(":");
  int second = number(2);
  std::int64_t micros = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int ndigits = 0;
    while (pos < text.size() && is_digit(text[pos])) {
      if (ndigits < 6) micros = micros * 10 + (text[pos] - '0');
      ++ndigits, ++pos;
    }
    if (ndigits == 0 || ndigits > 9) fail();
    for (int k = ndigits; k < 6; ++k)
      micros *= 10;
  }
  int offset_minutes = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int oh = number(2);
    expect(":");
    int om = number(2);
    if (oh > 23 || om > 59) fail();
    offset_minutes = sign * (oh * 60 + om);
  } else {
    fail();
  }
  if (pos != text.size()) fail();
  if (month < 1 || month > 12 || mday < 1 ||
      static_cast<unsigned>(mday) > days_in_month(year, static_cast<unsigned>(month)) ||
      hour > 23 || minute > 59 || second > 60) {
    fail();
  }
  if (second == 60) {
    // A timestamp counts POSIX seconds, which have no leap second: 23:59:60 would be read as
    // the next day's 00:00:00, a date the text does not say.
    throw InvalidArgument(fmt::format(
        "invalid timestamp \"{}\": a leap second (:60) cannot be held; timestamps count POSIX "
        "seconds, which skip it",
        text.substr(0, 64)));
  }
  // Six-digit years stay far inside int64 days; the microseconds may not.
  std::int64_t day =
      days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(mday));
  std::int64_t in_day =
      ((hour * 60 + minute - offset_minutes) * std::int64_t{60} + second) * 1'000'000 + micros;
  std::optional<std::int64_t> total = detail::combine_units(day, micros_per_day, in_day);
  if (!total) {
    throw InvalidArgument(fmt::format(
        "invalid timestamp \"{}\": outside the range a timestamp holds (about 292,000 years "
        "either side of 1970)",
        text.substr(0, 64)));
  }
  return Timestamp{*total};
}

Timestamp Timestamp::now() {
  using namespace std::chrono;
  return Timestamp{duration_cast<microseconds>(system_clock::now().time_since_epoch()).count()};
}

// ---- Uuid ----

std::string Uuid::str() const {
  std::string out;
  out.reserve(36);
  static constexpr char hex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += hex[bytes[i] >> 4];
    out += hex[bytes[i] & 0xf];
  }
  return out;
}

Uuid Uuid::parse(std::string_view text) {
  auto fail = [&]() -> Uuid {
    throw InvalidArgument(
        fmt::format("invalid uuid \"{}\": expected 8-4-4-4-12 hex digits", text.substr(0, 64)));
  };
  if (text.size() != 36) fail();
  Uuid u;
  std::size_t byte = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') fail();
      ++i;
      continue;
    }
    auto nibble = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      fail();
      return 0;
    };
    u.bytes[byte++] = static_cast<std::uint8_t>(nibble(text[i]) << 4 | nibble(text[i + 1]));
    i += 2;
  }
  return u;
}

Uuid Uuid::random() {
  std::random_device rd;
  Uuid u;
  for (std::size_t i = 0; i < u.bytes.size(); i += 4) {
    auto r = rd();
    for (std::size_t k = 0; k < 4; ++k)
      u.bytes[i + k] = static_cast<std::uint8_t>(r >> (8 * k));
  }
  u.bytes[6] = static_cast<std::uint8_t>((u.bytes[6] & 0x0f) | 0x40);  // version 4
  u.bytes[8] = static_cast<std::uint8_t>((u.bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return u;
}

// ---- Value ----

void Value::throw_int_range() {
  throw InvalidArgument("integer does not fit in int64");
}

void Value::throw_kind(Kind wanted) const {
  throw InvalidArgument(
      fmt::format("expected a {} value, found {}", to_string(wanted), to_string(kind())));
}

const Value* Value::find(std::string_view key) const {
  const Map* m = std::get_if<Map>(&v_);
  if (!m) return nullptr;
  auto it = m->find(key);
  return it == m->end() ? nullptr : &it->second;
}

namespace {

std::strong_ordering compare_doubles(double a, double b) {
  bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return nb <=> na;  // NaN sorts first; NaN == NaN
  if (a < b) return std::strong_ordering::less;
  if (a > b) return std::strong_ordering::greater;
  return std::strong_ordering::equal;
}

}  // namespace

std::strong_ordering operator<=>(const Value& a, const Value& b) {
  if (a.v_.index() != b.v_.index()) return a.v_.index() <=> b.v_.index();
  return std::visit(
      [&](const auto& x) -> std::strong_ordering {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b.v_);
        if constexpr (std::is_same_v<T, std::monostate>) {
          return std::strong_ordering::equal;
        } else if constexpr (std::is_same_v<T, double>) {
          return compare_doubles(x, y);
        } else if constexpr (std::is_same_v<T, Value::List>) {
          return std::lexicographical_compare_three_way(x.begin(), x.end(), y.begin(), y.end());
        } else if constexpr (std::is_same_v<T, Value::Map>) {
          auto ix = x.begin(), iy = y.begin();
          for (; ix != x.end() && iy != y.end(); ++ix, ++iy) {
            if (auto c = ix->first <=> iy->first; c != 0) return c;
            if (auto c = ix->second <=> iy->second; c != 0) return c;
          }
          return (ix != x.end()) <=> (iy != y.end());
        } else {
          return x <=> y;
        }
      },
      a.v_);
}

}  // namespace cairn
