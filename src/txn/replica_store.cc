// ReplicaStore (replica_store.h).
#include "txn/replica_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "cairn/error.h"

namespace cairn::detail {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How many oids one refresher load asks for, and how many entries one scan page holds.
constexpr std::size_t batch_limit = 1024;
constexpr std::size_t scan_page = 1024;
// How long a load newer than the replica waits for the pushes that bring the replica there.
constexpr auto push_wait = 2s;
// How long subscribe_* may take to load a scope's initial contents.
constexpr auto initial_load_limit = 60s;

}  // namespace

struct ReplicaStore::ScopeSpec {
  enum class Kind { type, keys, objects };
  Kind kind = Kind::type;
  std::string type;
  std::string prefix;
  std::vector<Oid> oids;
};

class ReplicaStore::State {
 public:
  using Kind = ScopeSpec::Kind;

  struct Scope {
    ScopeSpec spec;
    std::unordered_set<Oid> waiting;  // initial oids not loaded yet
    bool ready = false;               // its initial contents are in the replica
  };

  std::mutex mu;
  std::condition_variable cv;  // the replica's CSN moved, states arrived, work came, or stop
  bool stop = false;
  std::uint64_t csn = 0;
  std::map<Oid, StoredObject> objects;  // states at csn, of tracked oids
  // type -> key -> oid, for the existing objects above that have a key.
  std::map<std::string, std::map<std::string, Oid, std::less<>>, std::less<>> by_key;
  // Tracked or possibly entering oids whose state at csn is unknown, each with the CSN from
  // which a load of it is valid (the last commit known to have changed it).
  std::unordered_map<Oid, std::uint64_t> pending;
  std::map<std::uint64_t, Scope> scopes;
  std::uint64_t next_scope = 1;
  std::unordered_map<Oid, std::size_t> explicit_refs;  // oids object scopes name, counted
  std::size_t content_scopes = 0;                      // type and key scopes
  // Bumped when the type and key scopes must be scanned again (forget_all); the refresher
  // catches rescans_done up once a scan that started after the bump has enlisted what it found.
  std::uint64_t rescans_wanted = 0;
  std::uint64_t rescans_done = 0;
  std::uint64_t local_loads = 0;
  std::uint64_t local_scans = 0;

  bool matches(const StoredObject& obj) const {
    if (!obj.exists() || content_scopes == 0) return false;
    for (const auto& [id, scope] : scopes) {
      const ScopeSpec& s = scope.spec;
      if (s.kind == Kind::objects || s.type != obj.type) continue;
      if (s.kind == Kind::type) return true;
      if (!obj.key.empty() && obj.key.starts_with(s.prefix)) return true;
    }
    return false;
  }

  bool tracked(const StoredObject& obj) const {
    return explicit_refs.contains(obj.oid) || matches(obj);
  }

  void put(StoredObject obj) {
    drop(obj.oid);
    if (obj.exists() && !obj.key.empty()) by_key[obj.type][obj.key] = obj.oid;
    Oid oid = obj.oid;
    objects.emplace(oid, std::move(obj));
  }

  void drop(Oid oid) {
    auto it = objects.find(oid);
    if (it == objects.end()) return;
    const StoredObject& old = it->second;
    if (old.exists() && !old.key.empty()) {
      auto t = by_key.find(old.type);
      if (t != by_key.end()) {
        t->second.erase(old.key);
        if (t->second.empty()) by_key.erase(t);
      }
    }
    objects.erase(it);
  }

  // Marks `oid` for (re)loading, valid from commit `from` on.
  void want(Oid oid, std::uint64_t from) {
    auto [it, inserted] = pending.try_emplace(oid, from);
    if (!inserted) it->second = std::max(it->second, from);
  }

  // A commit, in CSN order, in two steps around telling our listeners of it. First the states
  // it changed leave the replica: what stays is current both before and after the commit, so
  // a connection that has already heard of the commit may read it. Returns false if the replica
  // had already passed the commit.
  bool begin_commit(std::uint64_t n, std::span<const Oid> oids) {
    std::lock_guard lock(mu);
    if (n <= csn) return false;
    if (oids.empty()) {
      forget_all(n);
      return true;
    }
    if (!scopes.empty()) {
      for (Oid oid : oids) {
        if (objects.contains(oid)) {
          drop(oid);
          want(oid, n);
        } else if (pending.contains(oid) || content_scopes > 0) {
          // Unknown to the replica: it may have just entered a type or key scope.
          want(oid, n);
        }
      }
    }
    return true;
  }
  // Commits up to `n` changed what the store cannot list (store.h, CommitListener): every held
  // state may be stale. Each is dropped, to be loaded again, and the type and key scopes are
  // scanned again (by the refresher) for objects that entered them.
  void forget_all(std::uint64_t n) {
    for (const auto& entry : objects)
      want(entry.first, n);
    for (auto& entry : pending)
      entry.second = std::max(entry.second, n);
    objects.clear();
    by_key.clear();
    if (content_scopes > 0) ++rescans_wanted;
    cv.notify_all();
  }

  // Then, once the listeners (the connections' ChangeFeed) know of it, the replica's CSN moves
  // there, so that no reader is handed a CSN its connection has not heard of yet.
  void end_commit(std::uint64_t n) {
    std::lock_guard lock(mu);
    csn = std::max(csn, n);
    cv.notify_all();
  }

  // Installs the states `result` holds for `batch` that are still valid, once the replica has
  // reached the load's CSN. Returns false if it did not get there in time (or stopped).
  bool apply(std::unique_lock<std::mutex>& lock, std::span<const Oid> batch, LoadResult& result) {
    std::uint64_t l = result.csn;
    if (!cv.wait_for(lock, push_wait, [&] { return stop || csn >= l; }) || stop) return false;
    for (std::size_t i = 0; i < batch.size() && i < result.objects.size(); ++i) {
      auto it = pending.find(batch[i]);
      // Gone (unsubscribed, or installed by another loader), or changed after this load.
      if (it == pending.end() || l < it->second) continue;
      pending.erase(it);
      for (auto& [id, scope] : scopes)
        scope.waiting.erase(batch[i]);
      StoredObject& obj = result.objects[i];
      obj.oid = batch[i];
      if (tracked(obj)) put(std::move(obj));
    }
    cv.notify_all();
    return true;
  }

  // Pending oids for the refresher, but not those a subscribe call is loading itself (it loads
  // them again if they change meanwhile): a second load of the same objects would be wasted.
  std::vector<Oid> take_batch() const {
    std::vector<Oid> batch;
    for (const auto& entry : pending) {
      Oid oid = entry.first;
      if (std::any_of(scopes.begin(), scopes.end(), [&](const auto& scope) {
            return !scope.second.ready && scope.second.waiting.contains(oid);
          })) {
        continue;
      }
      batch.push_back(oid);
      if (batch.size() == batch_limit) break;
    }
    return batch;
  }

  void remove_scope(std::uint64_t id) {
    std::lock_guard lock(mu);
    auto it = scopes.find(id);
    if (it == scopes.end()) return;
    cv.notify_all();  // what it was loading itself is the refresher's now
    const ScopeSpec& spec = it->second.spec;
    if (spec.kind == Kind::objects) {
      for (Oid oid : spec.oids) {
        auto ref = explicit_refs.find(oid);
        if (ref != explicit_refs.end() && --ref->second == 0) explicit_refs.erase(ref);
      }
    } else {
      --content_scopes;
    }
    scopes.erase(it);
    if (scopes.empty()) {
      // Free the memory, not just the entries.
      std::map<Oid, StoredObject>().swap(objects);
      by_key.clear();
      std::unordered_map<Oid, std::uint64_t>().swap(pending);
      std::unordered_map<Oid, std::size_t>().swap(explicit_refs);
      return;
    }
    for (auto o = objects.begin(); o != objects.end();) {
      Oid oid = o->first;
      ++o;
      if (!tracked(objects.at(oid))) drop(oid);
    }
    if (content_scopes == 0) {
      std::erase_if(pending, [&](const auto& p) { return !explicit_refs.contains(p.first); });
    }
  }

  // Whether a ready scope holds every object of `type` whose key starts with `prefix`, and
  // every such state is known at csn.
  bool covers(std::string_view type, std::string_view prefix) const {
    if (!pending.empty() || rescans_done != rescans_wanted) return false;
    for (const auto& [id, scope] : scopes) {
      const ScopeSpec& s = scope.spec;
      if (s.kind == Kind::objects || s.type != type || !scope.ready) continue;
      if (s.kind == Kind::type || prefix.starts_with(s.prefix)) return true;
    }
    return false;
  }

  // Hands the objects in a type or key scope to `page_fn`, a page at a time.
  template <typename PageFn>
  static void scan_scope(Store& store, const ScopeSpec& spec, PageFn&& page_fn) {
    if (spec.kind == Kind::type) {
      for (Oid after{};;) {
        std::vector<ScanEntry> page = store.scan_type(spec.type, after, scan_page);
        page_fn(page);
        if (page.size() < scan_page) break;
        after = page.back().oid;
      }
    } else if (spec.kind == Kind::keys) {
      for (std::string after;;) {
        std::vector<ScanEntry> page = store.scan_keys(spec.type, spec.prefix, after, scan_page);
        page_fn(page);
        if (page.size() < scan_page) break;
        after = page.back().key;
      }
    }
  }

  // After `failures` failed calls to the store in a row (the connection is down): waits a
  // little longer each time, up to a second, or until stopped.
  void pause(std::unique_lock<std::mutex>& lock, int failures) {
    auto wait = std::min<std::chrono::milliseconds>(1s, 10ms * (1 << std::min(failures, 7)));
    cv.wait_for(lock, wait, [&] { return stop; });
  }

  // Scans the type and key scopes again and makes the objects found pending, unless held.
  // Returns false if the store failed.
  bool rescan(std::unique_lock<std::mutex>& lock, Store& inner) {
    std::uint64_t wanted = rescans_wanted;
    std::vector<ScopeSpec> specs;
    for (const auto& entry : scopes) {
      if (entry.second.spec.kind != Kind::objects) specs.push_back(entry.second.spec);
    }
    lock.unlock();
    std::vector<Oid> found;
    try {
      for (const ScopeSpec& spec : specs)
        scan_scope(inner, spec, [&](const std::vector<ScanEntry>& page) {
          for (const ScanEntry& e : page)
            found.push_back(e.oid);
        });
    } catch (const std::exception&) {
      lock.lock();
      return false;
    }
    lock.lock();
    // Valid from the replica's CSN on: the scan came after the commits that made it necessary,
    // and any later change to these objects makes them pending again from its own CSN.
    for (Oid oid : found) {
      if (!objects.contains(oid)) want(oid, csn);
    }
    rescans_done = wanted;
    cv.notify_all();
    return true;
  }

  // The refresher thread: reloads pending oids until stopped.
  void refresh(Store& inner) {
    std::unique_lock lock(mu);
    int failures = 0;
    while (!stop) {
      if (rescans_done != rescans_wanted) {
        if (rescan(lock, inner)) {
          failures = 0;
        } else {
          ++failures;
          pause(lock, failures);
        }
        continue;
      }
      if (pending.empty()) {
        cv.wait(lock, [&] { return stop || !pending.empty() || rescans_done != rescans_wanted; });
        continue;
      }
      std::vector<Oid> batch = take_batch();
      if (batch.empty()) {
        // All of it is a subscribe call's. Woken when a load lands, a commit arrives or a scope
        // goes (one that failed to load leaves its oids to us).
        cv.wait(lock);
        continue;
      }
      lock.unlock();
      std::optional<LoadResult> result;
      try {
        result = inner.load(batch);
        failures = 0;
      } catch (const std::exception&) {
        ++failures;  // the connection is down; try again after a pause
      }
      lock.lock();
      if (!result) {
        pause(lock, failures);
        continue;
      }
      apply(lock, batch, *result);
    }
  }
};

ReplicaStore::ReplicaStore(std::unique_ptr<Store> inner)
    : inner_(std::move(inner)), state_(std::make_shared<State>()) {
  // Subscribe first, then read the CSN: every commit after it reaches begin_commit.
  std::weak_ptr<State> weak = state_;
  inner_subscription_ =
      inner_->subscribe([this, weak](std::uint64_t csn, std::span<const Oid> oids) {
        auto state = weak.lock();
        if (!state || !state->begin_commit(csn, oids)) return;
        // Our listeners hear of the commit only once the replica no longer holds what it
        // changed. Commits may come with gaps (a reconnecting store sums up what it missed).
        listeners_.start_after(csn - 1);
        listeners_.notify(csn, oids);
        state->end_commit(csn);
      });
  std::uint64_t now = inner_->load({}).csn;
  {
    std::lock_guard lock(state_->mu);
    state_->csn = std::max(state_->csn, now);
  }
  reported_ = now;
  refresher_ = std::thread([state = state_, this] { state->refresh(*inner_); });
}

ReplicaStore::~ReplicaStore() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  if (refresher_.joinable()) refresher_.join();
  inner_subscription_.reset();
}

void ReplicaStore::reported(std::uint64_t csn) {
  std::uint64_t seen = reported_.load();
  while (seen < csn && !reported_.compare_exchange_weak(seen, csn)) {
  }
}

Subscription ReplicaStore::subscribe_type(std::string type) {
  ScopeSpec spec;
  spec.kind = ScopeSpec::Kind::type;
  spec.type = std::move(type);
  return add_scope(std::move(spec));
}

Subscription ReplicaStore::subscribe_keys(std::string type, std::string prefix) {
  ScopeSpec spec;
  spec.kind = ScopeSpec::Kind::keys;
  spec.type = std::move(type);
  spec.prefix = std::move(prefix);
  return add_scope(std::move(spec));
}

Subscription ReplicaStore::subscribe_objects(std::vector<Oid> oids) {
  std::sort(oids.begin(), oids.end());
  oids.erase(std::unique(oids.begin(), oids.end()), oids.end());
  ScopeSpec spec;
  spec.kind = ScopeSpec::Kind::objects;
  spec.oids = std::move(oids);
  return add_scope(std::move(spec));
}

Subscription ReplicaStore::add_scope(ScopeSpec spec) {
  using Kind = ScopeSpec::Kind;
  if (spec.kind != Kind::objects) {
    if (spec.type.empty()) throw InvalidArgument("a subscription needs a type");
    if (spec.type.size() > max_type_length) {
      throw InvalidArgument(
          fmt::format("type is {} bytes; the limit is {}", spec.type.size(), max_type_length));
    }
    if (spec.prefix.size() > max_key_length) {
      throw InvalidArgument(fmt::format("key prefix is {} bytes; the limit is {}",
                                        spec.prefix.size(), max_key_length));
    }
  }
  State& s = *state_;
  std::uint64_t id = 0;
  {
    // Registered before the scan below: from here on every commit that touches an object of
    // the scope, or may bring one into it, makes it pending.
    std::lock_guard lock(s.mu);
    id = s.next_scope++;
    State::Scope& scope = s.scopes[id];
    if (spec.kind == Kind::objects) {
      for (Oid oid : spec.oids) {
        ++s.explicit_refs[oid];
        if (s.objects.contains(oid)) continue;
        s.want(oid, s.csn);
        scope.waiting.insert(oid);
      }
    } else {
      ++s.content_scopes;
    }
    scope.spec = spec;
  }
  std::weak_ptr<State> weak = state_;
  Subscription subscription([weak, id] {
    if (auto state = weak.lock()) state->remove_scope(id);
  });

  // The objects already in the scope.
  auto enlist = [&](const std::vector<ScanEntry>& entries) {
    std::lock_guard lock(s.mu);
    State::Scope& scope = s.scopes.at(id);
    for (const ScanEntry& e : entries) {
      // Pending ones too: a push may have made them pending already, and this call must not
      // return before they are loaded.
      if (s.objects.contains(e.oid)) continue;
      s.want(e.oid, s.csn);
      scope.waiting.insert(e.oid);
    }
  };
  State::scan_scope(*inner_, spec, enlist);
  s.cv.notify_all();

  // Load them here rather than wait for the refresher, so that errors reach the caller.
  auto deadline = Clock::now() + initial_load_limit;
  for (;;) {
    std::vector<Oid> batch;
    {
      std::lock_guard lock(s.mu);
      State::Scope& scope = s.scopes.at(id);
      std::erase_if(scope.waiting, [&](Oid oid) { return !s.pending.contains(oid); });
      for (Oid oid : scope.waiting) {
        if (batch.size() == batch_limit) break;
        batch.push_back(oid);
      }
      if (batch.empty()) {
        scope.ready = true;
        break;
      }
    }
    if (Clock::now() > deadline) {
      throw IoError(fmt::format("the replica could not load the subscription's {} objects in {} s",
                                batch.size(), initial_load_limit.count()));
    }
    LoadResult result = inner_->load(batch);
    std::unique_lock lock(s.mu);
    s.apply(lock, batch, result);
  }
  return subscription;
}

ReplicaStats ReplicaStore::stats() const {
  std::lock_guard lock(state_->mu);
  ReplicaStats out;
  out.scopes = state_->scopes.size();
  out.objects = state_->objects.size();
  out.pending = state_->pending.size();
  out.csn = state_->csn;
  out.local_loads = state_->local_loads;
  out.local_scans = state_->local_scans;
  return out;
}

bool ReplicaStore::current(const State& s) const {
  // Not behind anything a caller was told, and hearing of commits now: cut off from them (the
  // server down or unreachable), the replica may be stale, and the store answers instead, or
  // fails with IoError (docs/architecture.md).
  return s.csn >= reported_.load() && inner_->hears_commits();
}

LoadResult ReplicaStore::load(std::span<const Oid> oids) {
  {
    State& s = *state_;
    std::lock_guard lock(s.mu);
    if (!s.scopes.empty() && current(s)) {
      LoadResult result;
      result.csn = s.csn;
      result.objects.reserve(oids.size());
      bool all = true;
      for (Oid oid : oids) {
        auto it = s.objects.find(oid);
        if (it == s.objects.end()) {
          all = false;
          break;
        }
        result.objects.push_back(it->second);
      }
      if (all) {
        ++s.local_loads;
        return result;
      }
    }
  }
  LoadResult result = inner_->load(oids);
  reported(result.csn);
  return result;
}

std::uint64_t ReplicaStore::commit(const CommitRequest& request) {
  std::uint64_t csn = inner_->commit(request);
  reported(csn);
  return csn;
}

Changes ReplicaStore::changes_since(std::uint64_t csn) {
  Changes changes = inner_->changes_since(csn);
  reported(changes.csn);
  return changes;
}

Subscription ReplicaStore::subscribe(CommitListener listener) {
  return listeners_.add(std::move(listener));
}

std::vector<ScanEntry> ReplicaStore::scan_type(std::string_view type, Oid after,
                                               std::size_t limit) {
  {
    State& s = *state_;
    std::lock_guard lock(s.mu);
    if (current(s) && s.covers(type, {})) {
      std::vector<ScanEntry> out;
      for (auto it = s.objects.upper_bound(after); it != s.objects.end() && out.size() < limit;
           ++it) {
        if (it->second.exists() && it->second.type == type) {
          out.push_back(ScanEntry{it->first, it->second.key});
        }
      }
      ++s.local_scans;
      return out;
    }
  }
  return inner_->scan_type(type, after, limit);
}

std::vector<ScanEntry> ReplicaStore::scan_keys(std::string_view type, std::string_view prefix,
                                               std::string_view after, std::size_t limit) {
  {
    State& s = *state_;
    std::lock_guard lock(s.mu);
    if (current(s) && s.covers(type, prefix)) {
      std::vector<ScanEntry> out;
      auto t = s.by_key.find(type);
      if (t != s.by_key.end()) {
        const auto& keys = t->second;
        // The first key past `after` and at or past `prefix`: past the last key, none (it used
        // to start again from the prefix's first key, and paging never ended).
        auto it = keys.upper_bound(after);
        if (it != keys.end() && it->first < prefix) it = keys.lower_bound(prefix);
        for (; it != keys.end() && out.size() < limit && it->first.starts_with(prefix); ++it)
          out.push_back(ScanEntry{it->second, it->first});
      }
      ++s.local_scans;
      return out;
    }
  }
  return inner_->scan_keys(type, prefix, after, limit);
}

std::optional<Oid> ReplicaStore::find_key(std::string_view type, std::string_view key) {
  {
    State& s = *state_;
    std::lock_guard lock(s.mu);
    if (current(s) && s.covers(type, key)) {
      ++s.local_scans;
      auto t = s.by_key.find(type);
      if (t == s.by_key.end()) return std::nullopt;
      auto it = t->second.find(key);
      if (it == t->second.end()) return std::nullopt;
      return it->second;
    }
  }
  return inner_->find_key(type, key);
}

}  // namespace cairn::detail
