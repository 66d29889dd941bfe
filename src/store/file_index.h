// The FileStore's in-memory index: where the newest record of each live object is, which
// objects each type lists, and who holds each key. Built by replaying the log at open and kept
// up to date by commits. Not thread-safe: the store guards it.
//
// Memory: an object costs one 24-byte Entry in a page of 1024 (oids are handed out densely),
// plus about one bit in its type's bitmap; keyed objects also cost their key twice.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cairn/oid.h"

namespace cairn {

// Oids past this are refused (the index is a vector of pages indexed by oid).
inline constexpr std::uint64_t file_store_max_oid = std::uint64_t{1} << 40;

struct IndexEntry {
  std::uint64_t offset = 0;   // file offset of the object's newest record
  std::uint64_t version = 0;  // 0 = absent
  std::uint32_t length = 0;   // bytes of that record
  std::uint32_t type = 0;     // interned type id; 0 = ""
};

// oid -> IndexEntry as a two-level radix table: directories of 1024 pages of 1024 entries,
// allocated where oids are in use, so that lookups are two array steps and a stray large oid
// costs one page, not a table up to it.
class OidIndex {
 public:
  const IndexEntry* find(Oid oid) const {
    std::uint64_t d = oid.value() >> dir_shift;
    if (d >= dirs_.size() || !dirs_[d]) return nullptr;
    const auto& page = (*dirs_[d])[(oid.value() >> page_shift) & (pages_per_dir - 1)];
    if (!page) return nullptr;
    const IndexEntry& e = (*page)[oid.value() & (page_size - 1)];
    return e.version != 0 ? &e : nullptr;
  }
  IndexEntry& slot(Oid oid) {
    std::uint64_t d = oid.value() >> dir_shift;
    if (d >= dirs_.size()) dirs_.resize(d + 1);
    if (!dirs_[d]) dirs_[d] = std::make_unique<Dir>();
    auto& page = (*dirs_[d])[(oid.value() >> page_shift) & (pages_per_dir - 1)];
    if (!page) {
      page = std::make_unique<Page>();
      ++pages_;
    }
    return (*page)[oid.value() & (page_size - 1)];
  }
  void erase(Oid oid) {
    if (find(oid) != nullptr) slot(oid) = IndexEntry{};
  }
  // Calls fn(oid, entry) for every live object in ascending oid order.
  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t d = 0; d < dirs_.size(); ++d) {
      if (!dirs_[d]) continue;
      for (std::size_t p = 0; p < pages_per_dir; ++p) {
        const auto& page = (*dirs_[d])[p];
        if (!page) continue;
        std::uint64_t base = (std::uint64_t{d} << dir_shift) | (std::uint64_t{p} << page_shift);
        for (std::size_t i = 0; i < page_size; ++i) {
          if ((*page)[i].version != 0) fn(Oid(base | i), (*page)[i]);
        }
      }
    }
  }
  // Calls fn(oid) for live objects at or after `from` in ascending oid order while it returns
  // true. Skips absent directories and pages whole: the cost follows the objects, not the oids.
  template <class Fn>
  void scan_from(Oid from, Fn&& fn) const {
    std::uint64_t start = from.value();
    for (std::size_t d = start >> dir_shift; d < dirs_.size(); ++d) {
      if (!dirs_[d]) continue;
      std::uint64_t dir_base = std::uint64_t{d} << dir_shift;
      std::size_t first_page = start > dir_base ? (start - dir_base) >> page_shift : 0;
      for (std::size_t p = first_page; p < pages_per_dir; ++p) {
        const auto& page = (*dirs_[d])[p];
        if (!page) continue;
        std::uint64_t base = dir_base | (std::uint64_t{p} << page_shift);
        std::size_t first = start > base ? static_cast<std::size_t>(start - base) : 0;
        for (std::size_t i = first; i < page_size; ++i) {
          if ((*page)[i].version != 0 && !fn(Oid(base | i))) return;
        }
      }
    }
  }
  std::size_t memory_bytes() const {
    std::size_t n = dirs_.capacity() * sizeof(dirs_[0]) + pages_ * sizeof(Page);
    for (const auto& dir : dirs_)
      if (dir) n += sizeof(Dir);
    return n;
  }

 private:
  static constexpr unsigned page_shift = 10;
  static constexpr std::size_t page_size = std::size_t{1} << page_shift;
  static constexpr unsigned dir_shift = 20;
  static constexpr std::size_t pages_per_dir = std::size_t{1} << (dir_shift - page_shift);
  using Page = std::array<IndexEntry, page_size>;
  using Dir = std::array<std::unique_ptr<Page>, pages_per_dir>;
  std::vector<std::unique_ptr<Dir>> dirs_;
  std::size_t pages_ = 0;
};

// A set of oids as a bitmap in pages of 512 oids, kept only where it has members.
class OidSet {
 public:
  void insert(Oid oid) {
    Page& page = pages_[oid.value() / page_bits];
    std::uint64_t& word = page.words[(oid.value() % page_bits) / 64];
    std::uint64_t mask = std::uint64_t{1} << (oid.value() % 64);
    if ((word & mask) == 0) {
      word |= mask;
      ++page.count;
    }
  }
  void erase(Oid oid) {
    auto it = pages_.find(oid.value() / page_bits);
    if (it == pages_.end()) return;
    std::uint64_t& word = it->second.words[(oid.value() % page_bits) / 64];
    std::uint64_t mask = std::uint64_t{1} << (oid.value() % 64);
    if ((word & mask) == 0) return;
    word &= ~mask;
    if (--it->second.count == 0) pages_.erase(it);
  }
  bool empty() const { return pages_.empty(); }
  // Calls fn(oid) for members > after in ascending order while fn returns true.
  template <class Fn>
  void scan_after(Oid after, Fn&& fn) const {
    if (after.value() == UINT64_MAX) return;
    std::uint64_t start = after.value() + 1;
    for (auto it = pages_.lower_bound(start / page_bits); it != pages_.end(); ++it) {
      std::uint64_t base = it->first * page_bits;
      for (std::size_t w = 0; w < it->second.words.size(); ++w) {
        std::uint64_t word = it->second.words[w];
        std::uint64_t word_base = base + w * 64;
        if (word_base + 64 <= start) continue;
        if (word_base < start) word &= ~((std::uint64_t{1} << (start - word_base)) - 1);
        while (word != 0) {
          int bit = std::countr_zero(word);
          word &= word - 1;
          if (!fn(Oid(word_base + static_cast<std::uint64_t>(bit)))) return;
        }
      }
    }
  }
  std::size_t memory_bytes() const { return pages_.size() * (sizeof(Page) + 48); }

 private:
  static constexpr std::uint64_t page_bits = 512;
  struct Page {
    std::array<std::uint64_t, page_bits / 64> words{};
    std::uint32_t count = 0;
  };
  std::map<std::uint64_t, Page> pages_;
};

// Everything the log's replay builds.
class FileIndex {
 public:
  FileIndex() { intern(""); }

  const IndexEntry* find(Oid oid) const { return index_.find(oid); }
  std::string_view type_name(std::uint32_t id) const { return types_[id].name; }
  bool has_key(Oid oid) const { return key_of_.contains(oid); }
  std::string_view key_of(Oid oid) const {
    auto it = key_of_.find(oid);
    return it == key_of_.end() ? std::string_view{} : std::string_view(it->second);
  }
  std::optional<Oid> key_holder(std::string_view type, std::string_view key) const;

  // Makes `oid` live with its newest record at `offset`.
  void put(Oid oid, std::uint64_t offset, std::uint32_t length, std::uint64_t version,
           std::string_view type, std::string_view key);
  // Makes `oid` absent; returns whether it was live.
  bool remove(Oid oid);

  template <class Fn>
  void scan_type(std::string_view type, Oid after, Fn&& fn) const {
    auto it = type_ids_.find(type);
    if (it != type_ids_.end()) types_[it->second].members.scan_after(after, fn);
  }
  // Keyed objects of `type` with key >= `from`, ascending, while fn(key, oid) returns true.
  template <class Fn>
  void scan_keys(std::string_view type, std::string_view from, Fn&& fn) const {
    auto it = type_ids_.find(type);
    if (it == type_ids_.end()) return;
    const auto& keys = types_[it->second].keys;
    for (auto k = keys.lower_bound(from); k != keys.end(); ++k) {
      if (!fn(std::string_view(k->first), k->second)) return;
    }
  }
  template <class Fn>
  void scan_oids(Oid from, Fn&& fn) const {
    index_.scan_from(from, fn);
  }
  template <class Fn>
  void for_each(Fn&& fn) const {
    index_.for_each(fn);
  }

  // The body of a checkpoint frame (docs/file-format.md §2.8): every live object with where
  // its record is, its type and its key, after the oid mark and transaction count given. The
  // fence mark that ends the body in a file of version 2 is for the caller to append.
  void encode_checkpoint(std::string& out, std::uint64_t next_oid,
                         std::uint64_t transactions) const;
  struct CheckpointHead {
    std::uint64_t next_oid = 0;
    std::uint64_t transactions = 0;
    std::uint64_t fence_mark = 1;  // 1 if the body has none (written by version 1)
  };
  // Fills an empty index from a checkpoint body of `count` entries, with or without a fence
  // mark after them; nullopt if it is malformed.
  std::optional<CheckpointHead> decode_checkpoint(std::string_view body, std::uint32_t count);

  std::uint64_t objects() const { return objects_; }
  std::uint64_t live_bytes() const { return live_bytes_; }
  std::size_t memory_bytes() const;

 private:
  struct Type {
    std::string name;
    OidSet members;
    std::map<std::string, Oid, std::less<>> keys;
  };
  std::uint32_t intern(std::string_view type);
  void unlist(Oid oid, const IndexEntry& entry);

  OidIndex index_;
  std::vector<Type> types_;
  std::map<std::string, std::uint32_t, std::less<>> type_ids_;
  std::unordered_map<Oid, std::string> key_of_;
  std::uint64_t objects_ = 0;
  std::uint64_t live_bytes_ = 0;
};

}  // namespace cairn
