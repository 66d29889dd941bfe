// OidMap: a hash map from Oid to a nullable value (a smart pointer), for the connection cache's
// identity map, which every object access goes through.
//
// Open addressing with linear probing over a power-of-two table: the home slot of an oid is the
// top bits of oid * 2^64/phi (Fibonacci hashing), so a lookup costs a multiply and a shift where
// std::unordered_map divides by a prime. The table is at most half full. A slot is empty when its
// value is null, so null values cannot be stored. Erasing shifts the following entries of the
// probe run back (no tombstones), which keeps every entry reachable from its home slot.
//
// Pointers to values stay valid until the next insertion or erasure.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "cairn/oid.h"

namespace cairn::detail {

template <typename V>
class OidMap {
 public:
  OidMap() : slots_(min_capacity), shift_(64 - std::countr_zero(min_capacity)) {}

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // The value stored for `oid`, or null.
  V* find(Oid oid) {
    for (std::size_t i = home(oid);; i = next(i)) {
      Slot& s = slots_[i];
      if (!s.value) return nullptr;
      if (s.oid == oid) return &s.value;
    }
  }

  // Adds an entry for an oid that has none (find returned null); `value` must not be null.
  // Returns the stored value.
  V& insert(Oid oid, V value) {
    if (2 * (size_ + 1) > slots_.size()) rehash(2 * slots_.size());
    return place(oid, std::move(value));
  }

  // Calls fn(oid, value) for every entry, in no particular order. fn must not insert or erase.
  template <typename Fn>
  void for_each(Fn&& fn) {
    for (Slot& s : slots_) {
      if (s.value) fn(s.oid, s.value);
    }
  }

  // Calls pred(oid, value) once for every entry, in no particular order, and erases those it
  // returns true for; returns how many. pred must not touch the map.
  template <typename Pred>
  std::size_t erase_if(Pred&& pred) {
    std::vector<Slot> old(slots_.size());
    old.swap(slots_);
    std::size_t before = size_;
    size_ = 0;
    for (Slot& s : old) {
      if (!s.value || pred(s.oid, s.value)) continue;
      place(s.oid, std::move(s.value));
    }
    // Shrink a table that has become mostly empty.
    std::size_t wanted = std::bit_ceil(std::max(min_capacity, 4 * size_));
    if (wanted < slots_.size()) rehash(wanted);
    return before - size_;
  }

  // Removes the entry for `oid`; returns whether there was one.
  bool erase(Oid oid) {
    std::size_t hole = home(oid);
    for (;; hole = next(hole)) {
      if (!slots_[hole].value) return false;
      if (slots_[hole].oid == oid) break;
    }
    // Backward shift: move each later entry of the run into the hole unless its home slot lies
    // cyclically in (hole, j], where it would no longer be found.
    for (std::size_t j = next(hole); slots_[j].value; j = next(j)) {
      std::size_t k = home(slots_[j].oid);
      bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
      if (stays) continue;
      slots_[hole] = std::move(slots_[j]);
      hole = j;
    }
    slots_[hole] = Slot{};
    --size_;
    return true;
  }

 private:
  struct Slot {
    Oid oid;
    V value;
  };
  static constexpr std::size_t min_capacity = 16;

  std::size_t home(Oid oid) const {
    return static_cast<std::size_t>((oid.value() * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  std::size_t next(std::size_t i) const { return (i + 1) & (slots_.size() - 1); }

  // Inserts an oid known to be absent, with room known to be there.
  V& place(Oid oid, V value) {
    std::size_t i = home(oid);
    while (slots_[i].value)
      i = next(i);
    slots_[i] = Slot{oid, std::move(value)};
    ++size_;
    return slots_[i].value;
  }

  void rehash(std::size_t capacity) {
    std::vector<Slot> old(capacity);
    old.swap(slots_);
    shift_ = 64 - std::countr_zero(capacity);
    size_ = 0;
    for (Slot& s : old) {
      if (s.value) place(s.oid, std::move(s.value));
    }
  }

  std::vector<Slot> slots_;
  int shift_;
  std::size_t size_ = 0;
};

}  // namespace cairn::detail
