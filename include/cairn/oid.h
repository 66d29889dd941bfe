// Oid: the 64-bit identity of a stored object. Oid 0 is the root map; ids are allocated by the
// store (Store::new_oids) and never reused while a reference to them can exist.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace cairn {

class Oid {
 public:
  constexpr Oid() = default;
  constexpr explicit Oid(std::uint64_t value) : value_(value) {}
  constexpr std::uint64_t value() const { return value_; }
  static constexpr Oid root() { return Oid(0); }
  constexpr bool is_root() const { return value_ == 0; }
  friend constexpr auto operator<=>(Oid, Oid) = default;
  std::string str() const { return std::to_string(value_); }

 private:
  std::uint64_t value_ = 0;
};

}  // namespace cairn

template <>
struct std::hash<cairn::Oid> {
  std::size_t operator()(cairn::Oid oid) const noexcept {
    return std::hash<std::uint64_t>{}(oid.value());
  }
};
