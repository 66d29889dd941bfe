// Order-preserving encoding of Values for index keys (index_key.h).
#include "records/index_key.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace cairn::detail {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

void put_hex64(std::uint64_t n, std::string& out) {
  for (int shift = 60; shift >= 0; shift -= 4)
    out += hex_digits[(n >> shift) & 15];
}

void put_hex_bytes(std::string_view bytes, std::string& out) {
  for (char c : bytes) {
    auto b = static_cast<unsigned char>(c);
    out += hex_digits[b >> 4];
    out += hex_digits[b & 15];
  }
}

// Bytes 0 and 1 become 1 1 and 1 2, so that no encoded string holds the '\0' that ends it and
// the order of strings is kept.
void put_escaped(std::string_view s, std::string& out) {
  for (char c : s) {
    if (c == '\0' || c == '\1') {
      out += '\1';
      out += static_cast<char>(c + 1);
    } else {
      out += c;
    }
  }
}

std::uint64_t signed_order(std::int64_t n) {
  return static_cast<std::uint64_t>(n) ^ (std::uint64_t{1} << 63);
}

// Doubles in Value's order: every NaN first, -0.0 as 0.0, then by numeric value.
std::uint64_t double_order(double d) {
  if (std::isnan(d)) return 0;
  if (d == 0) d = 0.0;
  auto bits = std::bit_cast<std::uint64_t>(d);
  return (bits & (std::uint64_t{1} << 63)) ? ~bits : bits | (std::uint64_t{1} << 63);
}

// Decimals by numeric value: a sign class ('0' negative, '1' zero, '2' positive), then for
// non-zero values the decimal exponent (3 digits, inverted for negatives) and the significant
// digits (complemented for negatives) with a terminator that sorts a shorter digit string
// before a longer one it prefixes (after it, for negatives).
void put_decimal(const Decimal& d, std::string& out) {
  std::string_view text = d.str();
  bool negative = !text.empty() && text.front() == '-';
  if (negative) text.remove_prefix(1);
  std::string_view int_part = text.substr(0, text.find('.'));
  std::string_view frac_part = text.find('.') == std::string_view::npos
                                   ? std::string_view()
                                   : text.substr(text.find('.') + 1);
  while (!int_part.empty() && int_part.front() == '0')
    int_part.remove_prefix(1);
  while (!frac_part.empty() && frac_part.back() == '0')
    frac_part.remove_suffix(1);
  std::string digits = std::string(int_part) + std::string(frac_part);
  int exponent = static_cast<int>(int_part.size());
  if (int_part.empty()) {
    std::size_t zeros = 0;
    while (zeros < digits.size() && digits[zeros] == '0')
      ++zeros;
    digits.erase(0, zeros);
    exponent = -static_cast<int>(zeros);
  }
  while (!digits.empty() && digits.back() == '0')
    digits.pop_back();
  if (digits.empty()) {
    out += '1';
    return;
  }
  int biased = exponent + 500;  // |exponent| <= Decimal::max_length
  if (negative) biased = 999 - biased;
  out += negative ? '0' : '2';
  out += static_cast<char>('0' + biased / 100);
  out += static_cast<char>('0' + biased / 10 % 10);
  out += static_cast<char>('0' + biased % 10);
  for (char c : digits)
    out += negative ? static_cast<char>('9' - (c - '0')) : c;
  out += negative ? '~' : '!';
}

}  // namespace

char index_kind_prefix(Kind kind) {
  return static_cast<char>('A' + static_cast<int>(kind));
}

bool indexable(const Value& value) {
  return !value.is_list() && !value.is_map();
}

std::string index_value(const Value& value) {
  std::string out;
  out += index_kind_prefix(value.kind());
  switch (value.kind()) {
    case Kind::null:
      break;
    case Kind::boolean:
      out += value.as_bool() ? '1' : '0';
      break;
    case Kind::integer:
      put_hex64(signed_order(value.as_int()), out);
      break;
    case Kind::floating:
      put_hex64(double_order(value.as_double()), out);
      break;
    case Kind::decimal:
      put_decimal(value.as_decimal(), out);
      break;
    case Kind::string:
      put_escaped(value.as_string(), out);
      break;
    case Kind::bytes:
      put_hex_bytes(value.as_bytes().data, out);
      break;
    case Kind::ref:
      put_hex64(value.as_ref().oid.value(), out);
      put_escaped(value.as_ref().type, out);
      break;
    case Kind::timestamp:
      put_hex64(signed_order(value.as_timestamp().micros), out);
      break;
    case Kind::uuid: {
      auto bytes = value.as_uuid().bytes;
      put_hex_bytes(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                    out);
      break;
    }
    case Kind::list:
    case Kind::map:
      break;
  }
  if (out.size() > max_index_value_bytes) out.resize(max_index_value_bytes);
  return out;
}

std::optional<std::string> index_key(const Value& value, Oid oid) {
  if (!indexable(value)) return std::nullopt;
  std::string key = index_value(value);
  key += '\0';
  put_hex64(oid.value(), key);
  return key;
}

std::optional<std::pair<std::string_view, Oid>> split_index_key(std::string_view key) {
  if (key.size() < 17 || key[key.size() - 17] != '\0') return std::nullopt;
  std::uint64_t oid = 0;
  for (char c : key.substr(key.size() - 16)) {
    const char* p = std::strchr(hex_digits, c);
    if (c == '\0' || p == nullptr) return std::nullopt;
    oid = oid << 4 | static_cast<std::uint64_t>(p - hex_digits);
  }
  return std::pair{key.substr(0, key.size() - 17), Oid(oid)};
}

}  // namespace cairn::detail
