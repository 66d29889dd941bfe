// Integer arithmetic that says when a result does not fit.
#pragma once

#include <cstdint>
#include <optional>

namespace cairn::detail {

// units * unit + rest as an int64, or nullopt if it does not fit; exact also where units * unit
// alone would not fit but the sum does (negative units, positive rest: the earliest timestamps).
inline std::optional<std::int64_t> combine_units(std::int64_t units, std::int64_t unit,
                                                 std::int64_t rest) {
  if (units < 0 && rest > 0) {
    units += 1;
    rest -= unit;
  }
  std::int64_t out = 0;
  if (__builtin_mul_overflow(units, unit, &out) || __builtin_add_overflow(out, rest, &out)) {
    return std::nullopt;
  }
  return out;
}

}  // namespace cairn::detail
