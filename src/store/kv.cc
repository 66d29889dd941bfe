// The key-value view over any store (include/cairn/kv.h).
#include "cairn/kv.h"

#include <fmt/format.h>

#include "cairn/codec.h"
#include "cairn/error.h"

namespace cairn {

namespace {

// Concurrent writers to one key can make a commit conflict; each retry sees their result, so
// only a storm of writers to the same key could exhaust this.
constexpr int max_attempts = 100;

void check_key(std::string_view key) {
  if (key.empty()) throw InvalidArgument("key must not be empty");
  if (key.size() > max_key_length) {
    throw InvalidArgument(
        fmt::format("key of {} bytes is longer than the limit of {}", key.size(), max_key_length));
  }
}

[[noreturn]] void too_many_conflicts(std::string_view op, std::string_view key, Oid oid) {
  throw ConflictError(
      fmt::format("{} \"{}\": gave up after {} conflicting attempts", op, key, max_attempts),
      {oid});
}

}  // namespace

KvView::KvView(Store& store, std::string ns) : store_(&store), ns_(std::move(ns)) {
  if (ns_.empty()) throw InvalidArgument("key-value namespace must not be empty");
}

void KvView::upsert(std::string_view key, const Value& value) {
  check_key(key);
  WriteOp write{Oid(), ns_, std::string(key), encode(value)};
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    auto existing = store_->find_key(ns_, key);
    write.oid = existing ? *existing : store_->new_oids(1);
    CommitRequest request;
    request.writes.push_back(write);
    // A new oid must still be free when the commit applies: a server started again without its
    // data hands out the same oids again. If not, this conflicts and goes round again.
    if (!existing) request.reads.push_back(ReadCheck{write.oid, 0});
    try {
      store_->commit(request);
      return;
    } catch (const ConflictError&) {
      // Another writer created the key between find_key and commit: write to theirs (or the
      // new oid was taken, see above: take another).
    }
  }
  too_many_conflicts("upsert", key, write.oid);
}

std::optional<Value> KvView::fetch(std::string_view key) {
  check_key(key);
  auto oid = store_->find_key(ns_, key);
  if (!oid) return std::nullopt;
  Oid one[] = {*oid};
  LoadResult loaded = store_->load(one);
  const StoredObject& obj = loaded.objects.front();
  if (!obj.exists() || obj.type != ns_ || obj.key != key) return std::nullopt;
  return decode(obj.data);
}

Value KvView::fetch_one(std::string_view key) {
  auto value = fetch(key);
  if (!value) throw NotFound(fmt::format("key \"{}\" not found", key));
  return std::move(*value);
}

bool KvView::remove(std::string_view key) {
  check_key(key);
  Oid oid;
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    auto found = store_->find_key(ns_, key);
    if (!found) return false;
    oid = *found;
    Oid one[] = {oid};
    LoadResult loaded = store_->load(one);
    const StoredObject& obj = loaded.objects.front();
    if (!obj.exists() || obj.key != key || obj.type != ns_) continue;  // moved on; look again
    CommitRequest request;
    request.reads.push_back(ReadCheck{oid, obj.version});
    request.deletes.push_back(oid);
    try {
      store_->commit(request);
      return true;
    } catch (const ConflictError&) {
      // Changed or removed meanwhile: look again, so that exactly one remover reports true.
    }
  }
  too_many_conflicts("remove", key, oid);
}

std::vector<std::pair<std::string, Value>> KvView::fetch_by_prefix(std::string_view prefix) {
  std::vector<std::pair<std::string, Value>> out;
  KvCursor cursor = scan_prefix(prefix);
  while (auto entry = cursor.next())
    out.push_back(std::move(*entry));
  return out;
}

KvCursor KvView::scan_prefix(std::string_view prefix, std::size_t page_size) {
  if (prefix.size() > max_key_length) {
    throw InvalidArgument(fmt::format("prefix of {} bytes is longer than the key limit of {}",
                                      prefix.size(), max_key_length));
  }
  if (page_size == 0) throw InvalidArgument("page size must be at least 1");
  return KvCursor(*this, std::string(prefix), page_size);
}

KvCursor::KvCursor(KvView& view, std::string prefix, std::size_t page_size)
    : view_(&view), page_size_(page_size) {
  if (prefix.empty() || prefix.back() == KvView::separator) {
    scan_prefix_ = std::move(prefix);
    exact_pending_ = false;
  } else {
    exact_ = prefix;
    scan_prefix_ = std::move(prefix) + KvView::separator;
    exact_pending_ = true;
  }
}

void KvCursor::fill() {
  page_.clear();
  pos_ = 0;
  if (exact_pending_) {
    exact_pending_ = false;
    if (auto v = view_->fetch(exact_)) page_.emplace_back(exact_, std::move(*v));
  }
  Store& store = view_->store();
  std::vector<ScanEntry> entries = store.scan_keys(view_->ns_, scan_prefix_, after_, page_size_);
  if (entries.size() < page_size_) done_ = true;
  if (entries.empty()) return;
  after_ = entries.back().key;
  std::vector<Oid> oids;
  oids.reserve(entries.size());
  for (const ScanEntry& e : entries)
    oids.push_back(e.oid);
  LoadResult loaded = store.load(oids);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const StoredObject& obj = loaded.objects[i];
    // Skip entries removed (or re-keyed) between the scan and the load.
    if (!obj.exists() || obj.type != view_->ns_ || obj.key != entries[i].key) continue;
    page_.emplace_back(entries[i].key, decode(obj.data));
  }
}

std::optional<std::pair<std::string, Value>> KvCursor::next() {
  while (pos_ >= page_.size()) {
    if (done_ && !exact_pending_) return std::nullopt;
    fill();
  }
  return std::move(page_[pos_++]);
}

}  // namespace cairn
