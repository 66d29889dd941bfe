// MemoryStore: the store contract held in process memory. Thread-safe: one shared_mutex guards
// the objects and indexes (loads and scans share it, commits take it alone); locks live in a
// LockTable of their own so that waiting for a lock never blocks commits.
#include <fmt/format.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/store.h"
#include "store/history.h"
#include "store/listeners.h"
#include "store/lock_table.h"
#include "store/store_util.h"

namespace cairn {

namespace {

class MemoryStore final : public Store {
 public:
  LoadResult load(std::span<const Oid> oids) override;
  std::uint64_t commit(const CommitRequest& request) override;
  Changes changes_since(std::uint64_t csn) override;
  const std::atomic<std::uint64_t>* csn_watch() const override { return &csn_; }
  Subscription subscribe(CommitListener listener) override {
    return listeners_.add(std::move(listener));
  }
  Oid new_oids(std::uint32_t count) override;
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override;
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override;
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override;
  std::optional<std::uint64_t> lock(const LockRequest& request) override {
    return locks_.lock(request);
  }
  bool unlock(std::string_view name, std::string_view owner) override {
    return locks_.unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return locks_.renew(name, owner, ttl);
  }
  PackStats pack() override;

 private:
  struct Object {
    std::uint64_t version = 0;
    std::string type;
    std::string key;
    std::string data;
  };
  using KeyIndex = std::map<std::string, Oid, std::less<>>;

  void unindex(Oid oid, const Object& obj);
  void index(Oid oid, const Object& obj);
  std::optional<Oid> key_holder(std::string_view type, std::string_view key) const;  // mu_ held

  mutable std::shared_mutex mu_;
  std::unordered_map<Oid, Object> objects_;
  std::map<std::string, std::set<Oid>, std::less<>> by_type_;
  std::map<std::string, KeyIndex, std::less<>> by_key_;
  // Written under mu_ once a commit is applied; read without it by changes_since's fast path.
  std::atomic<std::uint64_t> csn_{0};
  CommitHistory history_;
  std::atomic<std::uint64_t> next_oid_{1};

  ListenerRegistry listeners_;

  // Its tokens die with it, so a new MemoryStore starts every name's tokens past any an earlier
  // one can have handed out: at 1024 times the microseconds since the epoch (the earlier one
  // would have had to take more than 1024 locks of one name a microsecond). A client still
  // holding a token from before `cairn serve --memory` restarted cannot then commit under the
  // lock of whoever takes it after the restart (Store::commit's lock checks).
  LockTable locks_{first_memory_token()};
  static std::uint64_t first_memory_token() {
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    return static_cast<std::uint64_t>(std::max<std::int64_t>(micros, 1)) * 1024;
  }
};

LoadResult MemoryStore::load(std::span<const Oid> oids) {
  LoadResult result;
  result.objects.reserve(oids.size());
  std::shared_lock lk(mu_);
  result.csn = csn_.load(std::memory_order_relaxed);
  for (Oid oid : oids) {
    StoredObject& out = result.objects.emplace_back();
    out.oid = oid;
    auto it = objects_.find(oid);
    if (it == objects_.end()) continue;
    out.version = it->second.version;
    out.type = it->second.type;
    out.key = it->second.key;
    out.data = it->second.data;
  }
  return result;
}

void MemoryStore::unindex(Oid oid, const Object& obj) {
  if (!obj.type.empty()) {
    auto t = by_type_.find(obj.type);
    t->second.erase(oid);
    if (t->second.empty()) by_type_.erase(t);
  }
  if (!obj.key.empty()) {
    auto t = by_key_.find(obj.type);
    t->second.erase(obj.key);
    if (t->second.empty()) by_key_.erase(t);
  }
}

void MemoryStore::index(Oid oid, const Object& obj) {
  if (!obj.type.empty()) by_type_[obj.type].insert(oid);
  if (!obj.key.empty()) by_key_[obj.type][obj.key] = oid;
}

std::uint64_t MemoryStore::commit(const CommitRequest& request) {
  validate_commit_shape(request, next_oid_.load());
  std::unique_lock lk(mu_);
  // Under mu_, with the apply: the lock is held at the moment the commit takes effect.
  locks_.check_held(request.locks);
  std::vector<Oid> conflicts;
  for (const ReadCheck& r : request.reads) {
    auto it = objects_.find(r.oid);
    std::uint64_t current = it == objects_.end() ? 0 : it->second.version;
    if (current != r.version) conflicts.push_back(r.oid);
  }
  check_key_conflicts(
      request, [this](auto type, auto key) { return key_holder(type, key); }, conflicts);
  throw_if_conflicts(std::move(conflicts));
  for (const AppendOp& a : request.appends) {
    auto it = objects_.find(a.oid);
    check_append(a.oid, it == objects_.end() ? nullptr : &it->second.data, a.data.size());
  }
  if (request.changes_nothing()) return csn_.load(std::memory_order_relaxed);

  std::uint64_t csn = csn_.load(std::memory_order_relaxed) + 1;
  std::vector<Oid> changed;
  changed.reserve(request.writes.size() + request.deletes.size() + request.appends.size());
  for (Oid oid : request.deletes) {
    // Reported even if it was absent: every commit with a CSN names what it touched (store.h).
    changed.push_back(oid);
    auto it = objects_.find(oid);
    if (it == objects_.end()) continue;
    unindex(oid, it->second);
    objects_.erase(it);
  }
  // Unindex every rewritten object first, so that keys can move between objects in one commit.
  for (const WriteOp& w : request.writes) {
    if (auto it = objects_.find(w.oid); it != objects_.end()) unindex(w.oid, it->second);
  }
  for (const WriteOp& w : request.writes) {
    Object& obj = objects_[w.oid];
    obj = Object{csn, w.type, w.key, w.data};
    index(w.oid, obj);
    changed.push_back(w.oid);
  }
  for (const AppendOp& a : request.appends) {
    Object& obj = objects_.at(a.oid);  // checked above; no write or delete names it
    obj.data += a.data;
    obj.version = csn;
    changed.push_back(a.oid);
  }
  history_.remember(csn, changed);
  csn_.store(csn, std::memory_order_release);
  lk.unlock();
  listeners_.notify(csn, changed);
  return csn;
}

Changes MemoryStore::changes_since(std::uint64_t csn) {
  // Every transaction start asks this, and mostly nothing has changed: answer that without the
  // lock. A commit being applied has not stored its CSN yet, so "nothing since csn" is true of
  // the state before it, which loads still return until it is done.
  Changes none;
  none.csn = csn;
  if (csn == csn_.load(std::memory_order_acquire)) return none;
  std::shared_lock lk(mu_);
  return history_.since(csn, csn_.load(std::memory_order_relaxed));
}

Oid MemoryStore::new_oids(std::uint32_t count) {
  if (count == 0) throw InvalidArgument("new_oids: count must be at least 1");
  return Oid(next_oid_.fetch_add(count));
}

std::vector<ScanEntry> MemoryStore::scan_type(std::string_view type, Oid after, std::size_t limit) {
  std::vector<ScanEntry> out;
  std::shared_lock lk(mu_);
  auto t = by_type_.find(type);
  if (t == by_type_.end()) return out;
  for (auto it = t->second.upper_bound(after); it != t->second.end() && out.size() < limit; ++it) {
    out.push_back(ScanEntry{*it, objects_.at(*it).key});
  }
  return out;
}

std::vector<ScanEntry> MemoryStore::scan_keys(std::string_view type, std::string_view prefix,
                                              std::string_view after, std::size_t limit) {
  std::vector<ScanEntry> out;
  std::shared_lock lk(mu_);
  auto t = by_key_.find(type);
  if (t == by_key_.end()) return out;
  const KeyIndex& keys = t->second;
  // Keys at or past the prefix and past `after`: below the prefix, `after` bounds nothing.
  auto it = after < prefix ? keys.lower_bound(prefix) : keys.upper_bound(after);
  for (; it != keys.end() && out.size() < limit && it->first.starts_with(prefix); ++it) {
    out.push_back(ScanEntry{it->second, it->first});
  }
  return out;
}

std::optional<Oid> MemoryStore::find_key(std::string_view type, std::string_view key) {
  std::shared_lock lk(mu_);
  return key_holder(type, key);
}

std::optional<Oid> MemoryStore::key_holder(std::string_view type, std::string_view key) const {
  auto t = by_key_.find(type);
  if (t == by_key_.end()) return std::nullopt;
  auto k = t->second.find(key);
  if (k == t->second.end()) return std::nullopt;
  return k->second;
}

PackStats MemoryStore::pack() {
  std::unique_lock lk(mu_);
  PackStats stats;
  stats.objects_before = objects_.size();
  for (const auto& [oid, obj] : objects_) {
    stats.bytes_before += obj.data.size() + obj.type.size() + obj.key.size();
  }
  std::unordered_set<Oid> live = reachable_from_roots(objects_);
  std::erase_if(objects_, [&](const auto& entry) { return !live.contains(entry.first); });
  stats.objects_after = objects_.size();
  for (const auto& [oid, obj] : objects_) {
    stats.bytes_after += obj.data.size() + obj.type.size() + obj.key.size();
  }
  return stats;
}

}  // namespace

std::unique_ptr<Store> make_memory_store() {
  return std::make_unique<MemoryStore>();
}

}  // namespace cairn
