// KvView: a key-value view over any Store (the eric-sse KvStorage contract), with keys whose
// segments are separated by ':'. Each entry is one stored object of the view's namespace type,
// keyed by its key, whose data is the codec-encoded value.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/store.h"
#include "cairn/value.h"

namespace cairn {

class KvCursor;

class KvView {
 public:
  static constexpr char separator = ':';
  static constexpr std::string_view default_namespace = "cairn.kv";

  // REQUIRES: `store` outlives the view. Views with different namespaces never see each
  // other's keys.
  explicit KvView(Store& store, std::string ns = std::string(default_namespace));

  // Inserts or replaces. Throws InvalidArgument for an empty key or one over max_key_length.
  void upsert(std::string_view key, const Value& value);

  // Throws NotFound if the key is absent.
  Value fetch_one(std::string_view key);
  std::optional<Value> fetch(std::string_view key);

  // Entries whose key is `prefix` or begins with `prefix` + ':' (so prefix "a" matches "a" and
  // "a:x" but never "a1:x"), in ascending key order. A prefix ending in ':' matches the keys
  // below it; the empty prefix matches every key.
  std::vector<std::pair<std::string, Value>> fetch_by_prefix(std::string_view prefix);

  // The same entries, read in pages as the cursor advances: removing or adding keys during the
  // iteration never makes it skip or repeat a key that stays. A key removed ahead of the cursor
  // is still returned if its page had already been read.
  KvCursor scan_prefix(std::string_view prefix, std::size_t page_size = 256);

  // Removes the key; returns whether it existed. Removing an absent key is not an error.
  bool remove(std::string_view key);

  Store& store() const { return *store_; }
  const std::string& name_space() const { return ns_; }

 private:
  friend class KvCursor;
  Store* store_;
  std::string ns_;
};

class KvCursor {
 public:
  // The next entry, or nullopt at the end.
  std::optional<std::pair<std::string, Value>> next();

 private:
  friend class KvView;
  KvCursor(KvView& view, std::string prefix, std::size_t page_size);
  void fill();

  KvView* view_;
  std::string exact_;        // the prefix itself as a key, when it is one ("" = none)
  std::string scan_prefix_;  // the raw prefix scanned after the exact key
  std::string after_;        // last key fetched
  std::size_t page_size_;
  bool exact_pending_;
  bool done_ = false;
  std::vector<std::pair<std::string, Value>> page_;
  std::size_t pos_ = 0;
};

}  // namespace cairn
