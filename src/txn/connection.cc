// The connection cache and its optimistic transactions (connection_impl.h), and Connection.
#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <type_traits>
#include <utility>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "store/store_util.h"
#include "txn/connection_impl.h"
#include "txn/database_core.h"

namespace cairn::detail {
namespace {

void check_type_and_key(const std::string& type, const std::string& key) {
  if (type.size() > max_type_length) {
    throw InvalidArgument(
        fmt::format("type is {} bytes; the limit is {}", type.size(), max_type_length));
  }
  if (key.size() > max_key_length) {
    throw InvalidArgument(
        fmt::format("key is {} bytes; the limit is {}", key.size(), max_key_length));
  }
  // Keys are unique per type, and find() looks them up by type: a key without one could be
  // taken but never found.
  if (type.empty() && !key.empty()) throw InvalidArgument("a key needs a type");
}

// The state of an object that does not exist: the root reads as an empty map.
Value absent_state(Oid oid) {
  return oid.is_root() ? Value(Value::Map{}) : Value();
}

// What find()'s index of changed nodes files a type and key under.
std::string index_key(std::string_view type, std::string_view key) {
  std::string out;
  out.reserve(type.size() + 1 + key.size());
  out.append(type).append(1, '\0').append(key);
  return out;
}

// Throws unless bytes may be appended to an object: NotFound if it does not exist,
// InvalidArgument if it is not a blob.
void check_appendable(Oid oid, bool present, bool blob) {
  if (!present) throw NotFound(fmt::format("object {} does not exist", oid.value()));
  if (!blob) {
    throw InvalidArgument(fmt::format("object {} is not a blob: cannot append to it", oid.value()));
  }
}

// Appends the data a node's state is stored as to `data`: a blob while it is one and its state
// is Bytes.
void append_stored_form(const Node& n, std::string& data) {
  if (n.blob && n.value.is_bytes()) {
    const std::string& bytes = n.value.as_bytes().data;
    data.reserve(data.size() + bytes.size() + 1);
    data += blob_marker;
    data += bytes;
    return;
  }
  encode(n.value, data);
}

// to = from, without the call for the usual empty type and key.
[[gnu::always_inline]] inline void copy_string(std::string& to, const std::string& from) {
  if (!to.empty() || !from.empty()) to = from;
}

}  // namespace

ConnectionImpl::ConnectionImpl(Store& store, ConnectionCounters& counters, std::size_t cache_size,
                               std::size_t cache_bytes, const ChangeFeed* feed)
    : store_(store),
      counters_(counters),
      feed_(feed),
      csn_watch_(store.csn_watch()),
      cache_size_(cache_size),
      cache_bytes_(cache_bytes),
      shrink_at_(cache_size),
      shrink_bytes_at_(cache_bytes) {
  snapshot_ = store_.load({}).csn;
  ++counters_.connections;
}

ConnectionImpl::~ConnectionImpl() {
  lease_cell_->closed.store(true, std::memory_order_release);
  cache_.for_each([](Oid, std::shared_ptr<Node>& node) { node->conn = nullptr; });
  counters_.cached_objects -= cache_.size();
  --counters_.connections;
}

std::shared_ptr<Node>& ConnectionImpl::add_node(Oid oid) {
  std::shared_ptr<Node>& n = cache_.insert(oid, std::make_shared<Node>(oid, this));
  ++counters_.cached_objects;
  return n;
}

Object ConnectionImpl::get(const Ref& ref) {
  std::shared_ptr<Node> n = node(ref.oid);  // a copy: a conflict while loading may shrink the cache
  if (!ref.type.empty() && exists(*n) && n->type != ref.type) {
    throw InvalidArgument(fmt::format("object {} has type \"{}\"; the reference expects \"{}\"",
                                      ref.oid.value(), n->type, ref.type));
  }
  return handle(n);
}

Object ConnectionImpl::create(Value state, std::string type, std::string key) {
  check_writable();
  check_type_and_key(type, key);
  std::shared_ptr<Node>& n = node(new_oid());
  n->loaded = true;
  n->present = true;
  n->created = true;
  n->version = 0;
  n->type = std::move(type);
  n->key = std::move(key);
  n->value = std::move(state);
  mark_dirty(*n);
  return handle(n);
}

Oid ConnectionImpl::new_oid() {
  if (reserved_left_ == 0) {
    std::uint32_t count = last_reserve_ == 0 ? 1 : std::min(last_reserve_ * 2, max_oid_reserve);
    reserved_ = store_.new_oids(count).value();
    reserved_left_ = count;
    last_reserve_ = count;
  }
  --reserved_left_;
  return Oid(reserved_++);
}

void ConnectionImpl::require_lock(std::string name, std::uint64_t token) {
  LockCheck check{std::move(name), token};
  // Refused now rather than at commit, where it would fail the whole transaction.
  validate_lock_check(check);
  required_locks_.push_back(std::move(check));
}

Object ConnectionImpl::create_blob(std::string bytes) {
  Object object = create(Value(Bytes{std::move(bytes)}), {}, {});
  object.node_->blob = true;
  return object;
}

void ConnectionImpl::load(Node& n) {
  Node* one[] = {&n};
  load(one);
}

void ConnectionImpl::load(std::span<Node* const> nodes) {
  if (nodes.size() > max_load_oids) [[unlikely]] {
    // In pieces a server answers (store.h). Each piece is a load like any other: one that
    // finds something read here changed conflicts, leaving the pieces before it loaded.
    for (std::size_t at = 0; at < nodes.size(); at += max_load_oids)
      load(nodes.subspan(at, std::min(max_load_oids, nodes.size() - at)));
    return;
  }
  std::vector<Oid> oids;
  oids.reserve(nodes.size());
  for (const Node* n : nodes)
    oids.push_back(n->oid);
  LoadResult result = store_.load(oids);
  if (result.objects.size() != nodes.size()) {
    throw Corruption(fmt::format("the store answered a load of {} objects with {}", nodes.size(),
                                 result.objects.size()));
  }
  // Everything is decoded and checked before any node changes: all of them load, or none.
  bool newer = false;
  struct Loaded {
    Value state;
    bool blob;
  };
  std::vector<Loaded> loaded;
  loaded.reserve(nodes.size());
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = *nodes[i];
    const StoredObject& stored = result.objects[i];
    // Absent now, but possibly deleted after the snapshot: only the history can tell.
    newer = newer || stored.version > snapshot_ || (stored.version == 0 && result.csn > snapshot_);
    bool blob = stored.exists() && is_blob(stored.data);
    // This transaction's appends need a blob: refused now if it is none, so that no write of the
    // whole state (mutate) can drop them; the store would refuse them at commit anyway.
    if (n.appending) check_appendable(n.oid, stored.exists(), blob);
    loaded.push_back(Loaded{!stored.exists() ? absent_state(n.oid)
                            : blob           ? Value(Bytes{stored.data.substr(1)})
                                             : decode(stored.data),
                            blob});
  }
  if (newer) catch_up(result.csn);
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    Node& n = *nodes[i];
    StoredObject& stored = result.objects[i];
    n.loaded = true;
    n.present = stored.exists();
    n.blob = loaded[i].blob;
    n.version = stored.version;
    set_stored_bytes(n, stored.data.size());
    n.type = std::move(stored.type);
    n.key = std::move(stored.key);
    n.value = std::move(loaded[i].state);
    // This transaction's appends come after the committed bytes.
    if (n.appending) n.value.as_bytes().data += n.appended;
    // A changed node (appended to unloaded) may have been indexed for find() without its key.
    refile_key(n);
  }
}

void ConnectionImpl::prefetch(std::span<const Oid> oids) {
  std::vector<Oid> wanted(oids.begin(), oids.end());
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  // Held here too: a conflict while loading may shrink the cache.
  std::vector<std::shared_ptr<Node>> held;
  std::vector<Node*> ghosts;
  for (Oid oid : wanted) {
    std::shared_ptr<Node> n = node(oid);
    if (n->loaded) continue;
    ghosts.push_back(n.get());
    held.push_back(std::move(n));
  }
  if (!ghosts.empty()) load(ghosts);
}

void ConnectionImpl::note_read(Node& n) {
  n.touched = true;
  // A changed object reads back this transaction's own state, except for a blob it appends to:
  // the bytes before the appends are the store's.
  if (n.read || (n.dirty && !n.appending)) return;
  n.read = true;
  read_set_.push_back(&n);
}

void ConnectionImpl::throw_read_only() {
  throw InvalidArgument("objects read through a view are read-only");
}

bool ConnectionImpl::exists(Node& n) {
  ensure_loaded(n);
  note_read(n);
  return n.present;
}

const std::string& ConnectionImpl::type(Node& n) {
  ensure_loaded(n);
  note_read(n);
  return n.type;
}

const std::string& ConnectionImpl::key(Node& n) {
  ensure_loaded(n);
  note_read(n);
  return n.key;
}

void ConnectionImpl::read_existing(Node& n) {
  ensure_loaded(n);
  note_read(n);
  if (!n.present && !n.oid.is_root()) {
    throw NotFound(fmt::format("object {} does not exist", n.oid.value()));
  }
}

const Value& ConnectionImpl::read(Node& n) {
  read_existing(n);
  flush_typed(n, false);
  return n.value;
}

Value& ConnectionImpl::write(Node& n) {
  check_writable();
  read(n);
  flush_typed(n, true);  // the caller may change the value in place: the typed form would go stale
  end_appending(n);      // the loaded value holds them: it is written whole
  n.present = true;      // only the root may be absent here: it becomes an empty map
  mark_dirty(n);
  return n.value;
}

void ConnectionImpl::set(Node& n, Value state, std::string type, std::string key) {
  check_writable();
  check_type_and_key(type, key);
  // Scans by type start after oid 0, so a typed root would never be listed.
  if (n.oid.is_root() && !type.empty()) throw InvalidArgument("the root (oid 0) takes no type");
  // Nothing of the old state is needed, so a ghost stays unread: its version matters only for
  // reads, and a changed node is never read from the store again in this transaction.
  n.loaded = true;
  flush_typed(n, true);
  end_appending(n);
  n.blob = false;  // not loaded, so not known to be one: always an ordinary object
  n.value = std::move(state);
  n.type = std::move(type);
  n.key = std::move(key);
  n.present = true;
  // Already indexed for find() under its old key, or never: index it under the new one too.
  refile_key(n);
  mark_dirty(n);
}

void ConnectionImpl::remove(Node& n) {
  check_writable();
  // Everything is reached from the root: without it, pack() would reclaim the whole database.
  if (n.oid.is_root()) throw InvalidArgument("the root (object 0) cannot be removed");
  ensure_loaded(n);  // keeps type and key, should the object be set again before commit
  flush_typed(n, true);
  end_appending(n);
  n.value = absent_state(n.oid);
  n.present = false;
  mark_dirty(n);
}

void ConnectionImpl::append(Node& n, std::string_view bytes) {
  check_writable();
  if (n.loaded) {
    // What is known here is checked here; an unloaded object is left unread, for the store.
    check_appendable(n.oid, n.present, n.blob && n.value.is_bytes());
    n.value.as_bytes().data += bytes;
  }
  if (n.dirty && !n.appending) {
    // Written whole in this transaction (created, set): the bytes are part of that write.
    return;
  }
  n.appending = true;
  n.appended += bytes;
  mark_dirty(n);
}

TypedState& ConnectionImpl::typed(
    Node& n, const void* tag, const std::function<std::unique_ptr<TypedState>(const Value&)>& make,
    bool for_write) {
  if (for_write) check_writable();
  read_existing(n);
  if (!n.typed || n.typed_tag != tag) {
    flush_typed(n, true);  // another type's form: written back, then its references end
    n.typed = make(n.value);
    n.typed_tag = tag;
  }
  if (for_write) {
    end_appending(n);  // the loaded state holds them: it is written whole, as in write()
    n.present = true;  // only the root may be absent here, as in write()
    mark_dirty(n);
    n.typed_newer = true;
  }
  return *n.typed;
}

void ConnectionImpl::flush_typed_form(Node& n, bool drop) {
  // The form stays the newer one until the transaction ends: a reference mutate() returned may
  // still change it after this write-back.
  if (n.typed_newer) n.typed->write_to(n.value);
  if (drop) {
    n.typed.reset();
    n.typed_tag = nullptr;
    n.typed_newer = false;
  }
}

std::optional<Object> ConnectionImpl::find(std::string_view type, std::string_view key) {
  if (type.empty() || key.empty()) throw InvalidArgument("find needs a type and a key");
  // This transaction's own changes first: the store knows nothing of them yet.
  if (Node* changed = find_changed(type, key)) return handle(*cache_.find(changed->oid));
  std::optional<Oid> oid = store_.find_key(type, key);
  if (!oid) return std::nullopt;
  std::shared_ptr<Node> n = node(*oid);  // a copy: a conflict while loading may shrink the cache
  // The store's answer is its newest state; the transaction's own view of the object decides
  // (exists() is a read, so a later change to it conflicts).
  if (!exists(*n) || n->type != type || n->key != key) return std::nullopt;
  return handle(n);
}

Node* ConnectionImpl::find_changed(std::string_view type, std::string_view key) {
  auto holds = [&](const Node& n) {
    // A blob being appended to has the store's type and key: find's store lookup checks it.
    return !n.appending && n.present && n.type == type && n.key == key;
  };
  // Up to this many changed nodes a scan is cheaper than keeping the index.
  constexpr std::size_t scan_limit = 16;
  if (dirty_.size() <= scan_limit) {
    for (Node* n : dirty_) {
      if (holds(*n)) return n;
    }
    return nullptr;
  }
  for (; dirty_indexed_ < dirty_.size(); ++dirty_indexed_)
    file_key(*dirty_[dirty_indexed_]);
  auto [first, last] = dirty_keys_.equal_range(index_key(type, key));
  for (auto it = first; it != last; ++it) {
    if (holds(*it->second)) return it->second;
  }
  return nullptr;
}

void ConnectionImpl::file_key(Node& n) {
  if (!n.key.empty()) dirty_keys_.emplace(index_key(n.type, n.key), &n);
}

void ConnectionImpl::refile_key(Node& n) {
  if (n.dirty && dirty_indexed_ > 0) file_key(n);
}

void ConnectionImpl::clear_dirty() {
  dirty_.clear();
  // The index holds something only once built (and clearing even an empty one costs a memset).
  if (dirty_indexed_ > 0) {
    dirty_keys_ = {};  // its buckets too: a large transaction built it
    dirty_indexed_ = 0;
  }
}

void ConnectionImpl::ghost(Node& n) {
  end_appending(n);
  unload(n);
}

void ConnectionImpl::unload(Node& n) {
  flush_typed(n, true);
  set_stored_bytes(n, 0);
  n.loaded = false;
  n.present = false;
  n.blob = false;
  n.version = 0;
  n.type.clear();
  n.key.clear();
  n.value = Value();
}

std::vector<Oid> ConnectionImpl::apply(const Changes& changes, bool keep_current) {
  std::vector<Oid> conflicts;
  if (!changes.complete) {
    // The history is gone: anything read may have changed, and any cached state may be stale.
    for (Node* n : read_set_)
      conflicts.push_back(n->oid);
    if (!conflicts.empty()) return conflicts;
    cache_.for_each([this](Oid, std::shared_ptr<Node>& n) {
      if (n->appending) {
        unload(*n);  // the appends stay; the bytes before them load again
      } else if (!n->dirty) {
        ghost(*n);
      }
    });
    return conflicts;
  }
  for (Oid oid : changes.oids) {
    std::shared_ptr<Node>* n = cache_.find(oid);
    if (n != nullptr && (*n)->read) conflicts.push_back(oid);
  }
  if (!conflicts.empty()) return conflicts;
  for (Oid oid : changes.oids) {
    std::shared_ptr<Node>* cached = cache_.find(oid);
    if (cached == nullptr) continue;
    Node& n = **cached;
    // Blind writes of this transaction stay; a state written by the newest commit is current.
    if ((n.dirty && !n.appending) || (keep_current && n.loaded && n.version == changes.csn)) {
      continue;
    }
    if (n.appending) {
      unload(n);  // the appends stay; the bytes before them load again
    } else {
      ghost(n);
    }
  }
  return conflicts;
}

Changes ConnectionImpl::changes(std::uint64_t at_least) {
  if (feed_ != nullptr) {
    if (std::optional<Changes> known = feed_->changes_since(snapshot_, at_least)) return *known;
  }
  return store_.changes_since(snapshot_);
}

void ConnectionImpl::catch_up(std::uint64_t load_csn) {
  Changes changes = this->changes(load_csn);
  std::vector<Oid> conflicts = apply(changes, changes.csn == load_csn);
  if (!conflicts.empty()) fail(std::move(conflicts), "changed after this transaction read them");
  // Every read object is unchanged up to changes.csn >= load_csn, every other changed object is
  // a ghost again, and the loaded state is the one at load_csn: the snapshot is now load_csn.
  snapshot_ = load_csn;
}

void ConnectionImpl::fail(std::vector<Oid> oids, const char* why) {
  std::sort(oids.begin(), oids.end());
  oids.erase(std::unique(oids.begin(), oids.end()), oids.end());
  std::string list = oid_list(oids);
  note_conflict(oids);
  abort();
  throw ConflictError(fmt::format("conflict on oids {}: {}", list, why), std::move(oids));
}

void ConnectionImpl::note_conflict(const std::vector<Oid>& oids) {
  ++conflicts_;
  conflict_oids_ = oids;
  conflicted_reads_.clear();
  conflicted_reads_.reserve(read_set_.size());
  for (const Node* n : read_set_)
    conflicted_reads_.push_back(n->oid);
}

void ConnectionImpl::sync() {
  sync_to(snapshot_);
}

void ConnectionImpl::sync_with_store() {
  // Asked of the store, not the change feed: a commit another client has finished is visible
  // after an explicit sync() or abort() even while its push is on its way, as Durus's sync asks
  // the server. Transactions, views and their retries start from what the feed has heard.
  if (dirty_.empty()) end_transaction();
  move_to(store_.changes_since(snapshot_));
}

void ConnectionImpl::sync_to(std::uint64_t at_least) {
  // Without changes there is nothing a stale read could have spoiled: start a new transaction.
  if (dirty_.empty()) end_transaction();
  move_to(this->changes(at_least));
}

void ConnectionImpl::apply_and_move(const Changes& changes) {
  std::vector<Oid> conflicts = apply(changes, true);
  if (!conflicts.empty()) fail(std::move(conflicts), "changed after this transaction read them");
  snapshot_ = changes.csn;
}

void ConnectionImpl::abort(bool ask_store) {
  for (Node* n : dirty_) {
    n->dirty = false;
    if (n->created) {
      // Never committed: the oid stays allocated and absent.
      n->created = false;
      ghost(*n);
      n->loaded = true;
    } else {
      ghost(*n);
    }
  }
  clear_dirty();
  end_transaction();
  // Nothing is read any more, so this cannot conflict.
  if (ask_store) {
    sync_with_store();
  } else {
    sync();
  }
  shrink();
}

std::uint64_t ConnectionImpl::commit() {
  // One request per connection, reused: most transactions write about as much as the last one,
  // so this saves growing its vectors on every commit, and the strings of the writes kept from
  // the last commit (release_request) are assigned to rather than made anew.
  CommitRequest& request = request_;
  // Whatever happens below, empty the request when done (release_request).
  struct Release {
    ConnectionImpl& conn;
    ~Release() { conn.release_request(); }
  } release{*this};
  std::size_t writes = 0;  // request.writes[0, writes) are this commit's
  bool creates = false;
  for (Node* n : dirty_) {
    flush_typed(*n, false);
    if (n->blob && !n->value.is_bytes()) n->blob = false;  // another state: no longer a blob
    if (n->appending) {
      request.appends.push_back(AppendOp{n->oid, n->appended});
    } else if (n->present) {
      if (writes == request.writes.size()) request.writes.emplace_back();
      WriteOp& w = request.writes[writes++];
      w.oid = n->oid;
      copy_string(w.type, n->type);
      copy_string(w.key, n->key);
      w.data.clear();
      try {
        append_stored_form(*n, w.data);
      } catch (...) {
        request_large_ = true;  // the buffer may have grown before encoding failed
        throw;
      }
      if (w.data.capacity() > kept_state_bytes) request_large_ = true;
      // What the node's state takes in the store once committed (approximate until then).
      set_stored_bytes(*n, w.data.size());
      // A new object's oid must still be free. new_oids() never hands one out twice, but a
      // server started again without its data (a memory server) hands out the same oids again:
      // a transaction that created its object before that would write over another's.
      if (n->created) {
        request.reads.push_back(ReadCheck{n->oid, 0});
        creates = true;
      }
    } else if (!n->created) {
      request.deletes.push_back(n->oid);
    }
  }
  if (writes != request.writes.size()) {
    request.writes.erase(request.writes.begin() + static_cast<std::ptrdiff_t>(writes),
                         request.writes.end());
  }
  if (request.changes_nothing()) {
    // A read-only transaction: its reads are one consistent snapshot, so it is serializable as
    // it stands. (Objects created and removed again are dropped like any other change.)
    abort();
    return snapshot_;
  }
  for (Node* n : read_set_)
    request.reads.push_back(ReadCheck{n->oid, n->version});
  if (!required_locks_.empty()) [[unlikely]] {
    request.locks.insert(request.locks.end(), required_locks_.begin(), required_locks_.end());
  }
  std::uint64_t csn = 0;
  try {
    csn = store_.commit(request);
  } catch (const ConflictError& e) {
    note_conflict(e.oids());
    abort();
    throw;
  } catch (const LockLost&) {
    // Nothing applied, and what the transaction read may be changing under the lock's new
    // holder: its changes go, as after a conflict (but transaction() does not run it again).
    abort();
    throw;
  } catch (const InvalidArgument&) {
    throw;  // refused before anything applied: the changes stay, to be fixed or aborted
  } catch (const NotFound&) {
    throw;
  } catch (...) {
    // Whether the store applied the commit is unknown (a connection lost before the reply).
    // Writes may be sent again safely, appends not (the bytes would be there twice), nor
    // creations (their absence checks would fail if the first one applied, hiding that).
    if (!request.appends.empty() || creates) abort();
    throw;
  }
  if (feed_ != nullptr) feed_->note_own_commit(csn);
  bool only_commit = csn == snapshot_ + 1;  // CSNs count commits one by one (store.h)
  for (Node* n : dirty_) {
    n->dirty = false;
    n->created = false;
    n->typed_newer = false;  // written back above, so the state and the form agree
    if (n->appending) {
      // The blob is what this transaction saw plus its appends only if no other commit came in
      // between (another may have appended too): else it loads again on next use.
      bool current = n->loaded && only_commit;
      set_stored_bytes(*n, n->stored_bytes + n->appended.size());
      end_appending(*n);
      if (!current) {
        ghost(*n);
        continue;
      }
    }
    n->version = n->present ? csn : 0;
    if (!n->present) set_stored_bytes(*n, 0);  // removed: nothing of it is stored
  }
  clear_dirty();
  end_transaction();
  if (only_commit) {
    // CSNs count commits one by one (store.h), so this commit is the only one since the
    // snapshot: every cached state is still current, and asking the store what changed would
    // only name what this transaction wrote.
    snapshot_ = csn;
  } else {
    sync_to(csn);  // the snapshot must include this commit
  }
  shrink();
  return csn;
}

void ConnectionImpl::trim_request() noexcept {
  // Freed by swapping with an empty one: assigning an empty string or `{}` keeps the buffer.
  auto release = [](auto& ops) {
    if (ops.capacity() > kept_ops) {
      std::remove_reference_t<decltype(ops)>().swap(ops);
    } else {
      ops.clear();
    }
  };
  std::vector<WriteOp>& writes = request_.writes;
  if (writes.size() > kept_writes) {
    writes.erase(writes.begin() + static_cast<std::ptrdiff_t>(kept_writes), writes.end());
  }
  if (writes.capacity() > kept_ops) {
    std::vector<WriteOp> kept(std::make_move_iterator(writes.begin()),
                              std::make_move_iterator(writes.end()));
    writes.swap(kept);
  }
  for (WriteOp& w : writes) {
    if (w.data.capacity() > kept_state_bytes) std::string().swap(w.data);
  }
  release(request_.deletes);
  release(request_.reads);
  release(request_.appends);
  release(request_.locks);
  request_large_ = false;
}

std::size_t ConnectionImpl::retained_request_bytes() const {
  std::size_t bytes =
      request_.reads.capacity() * sizeof(ReadCheck) + request_.writes.capacity() * sizeof(WriteOp) +
      request_.deletes.capacity() * sizeof(Oid) + request_.appends.capacity() * sizeof(AppendOp) +
      request_.locks.capacity() * sizeof(LockCheck);
  for (const WriteOp& w : request_.writes)
    bytes += w.type.capacity() + w.key.capacity() + w.data.capacity();
  for (const AppendOp& a : request_.appends)
    bytes += a.data.capacity();
  for (const LockCheck& l : request_.locks)
    bytes += l.name.capacity();
  return bytes;
}

void ConnectionImpl::shrink_cache() noexcept {
  std::size_t before = cache_.size();
  try {
    shrink_cache_now();
  } catch (const std::bad_alloc&) {
    // A cache larger than it should be is still a correct cache.
  }
  counters_.cached_objects -= before - cache_.size();
}

void ConnectionImpl::shrink_past_limits() noexcept {
  if (cache_.size() > shrink_at_ || cached_bytes_ > shrink_bytes_at_ ||
      ++skipped_trims_ >= retry_trim_after_) {
    shrink_cache();
  }
}

void ConnectionImpl::shrink_cache_now() {
  // Only nodes no handle refers to may go: identity must hold for every handle. Ghosts go first,
  // then nodes not used since the last shrink, then any, down to three quarters of the limits
  // so that the scan is paid for by many transactions.
  std::size_t target = cache_size_ - cache_size_ / 4;
  std::size_t bytes_target = cache_bytes_ - cache_bytes_ / 4;
  auto over = [&] { return cache_.size() > target || cached_bytes_ > bytes_target; };
  auto droppable = [](const Node& n, bool untouched_only) {
    return !n.dirty && !n.read && !(untouched_only && n.touched);
  };
  auto drop = [&](const std::shared_ptr<Node>& n) {
    cached_bytes_ -= n->stored_bytes;
    return true;
  };
  std::size_t held_bytes = 0;  // of nodes that cannot go now
  cache_.erase_if([&](Oid, const std::shared_ptr<Node>& n) {
    if (n.use_count() != 1 || !droppable(*n, false)) {
      held_bytes += n->stored_bytes;
      return false;
    }
    return !n->loaded && drop(n);
  });
  // Beside what handles and the transaction hold, the rest keeps a quarter of the byte limit:
  // else, with those alone past the target, every trim would empty the rest of the cache.
  bytes_target = std::max(bytes_target, held_bytes + cache_bytes_ / 4);
  for (bool untouched_only : {true, false}) {
    if (!over()) break;
    // Counted down as nodes go (erase_if decides node by node), so the predicate sees the
    // cache as it is after the drops before it.
    std::size_t size = cache_.size();
    cache_.erase_if([&](Oid, const std::shared_ptr<Node>& n) {
      if ((size <= target && cached_bytes_ <= bytes_target) || n.use_count() != 1 ||
          !droppable(*n, untouched_only)) {
        return false;
      }
      --size;
      return drop(n);
    });
  }
  cache_.for_each([](Oid, std::shared_ptr<Node>& n) { n->touched = false; });
  // Mostly held by handles: scan again once the cache doubles, or after enough transactions
  // that the scan costs each little (handles dropped meanwhile free their nodes).
  bool held = over();
  shrink_at_ = held ? std::max(cache_size_, 2 * cache_.size()) : cache_size_;
  shrink_bytes_at_ = held ? std::max(cache_bytes_, 2 * cached_bytes_) : cache_bytes_;
  skipped_trims_ = 0;
  retry_trim_after_ = std::max<std::size_t>(64, cache_.size() / 64);
}

void ConnectionImpl::begin_lease_sync() {
  conflicted_reads_.clear();  // an earlier lease's: nothing to prefetch for this one
  // A clean transaction on the newest snapshot. A pooled connection has no changes and reads
  // (end_lease dropped them), so it only syncs; mostly nothing has changed since its last
  // commit, which the store answers without the sync's general path.
  if (!dirty_.empty() || !read_set_.empty()) {
    abort();
  } else if (feed_ == nullptr) {
    move_to(store_.changes_since(snapshot_));
  } else {
    sync();
  }
}

void ConnectionImpl::end_lease_changes() {
  if (!dirty_.empty()) {
    abort();
  } else {
    end_transaction();
    shrink();
  }
}

}  // namespace cairn::detail

namespace cairn {

Connection::Connection(std::shared_ptr<detail::DatabaseCore> core,
                       std::unique_ptr<detail::ConnectionImpl> impl)
    : core_(std::move(core)), impl_(std::move(impl)) {}

Connection::Connection(Connection&&) noexcept = default;

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    impl_.reset();  // before the core it may be the last user of
    core_ = std::move(other.core_);
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Connection::~Connection() {
  impl_.reset();
}

detail::ConnectionImpl& Connection::impl() const {
  if (!impl_) throw InvalidArgument("this Connection has been moved from");
  return *impl_;
}

PersistentMap Connection::root() {
  return PersistentMap(impl().get(Oid::root()));
}
Object Connection::get(Oid oid) {
  return impl().get(oid);
}
Object Connection::get(const Ref& ref) {
  return impl().get(ref);
}
Object Connection::create(Value state, std::string type, std::string key) {
  return impl().create(std::move(state), std::move(type), std::move(key));
}
Object Connection::create_blob(std::string bytes) {
  return impl().create_blob(std::move(bytes));
}
std::optional<Object> Connection::find(std::string_view type, std::string_view key) {
  return impl().find(type, key);
}
void Connection::prefetch(std::span<const Oid> oids) {
  impl().prefetch(oids);
}
void Connection::require_lock(std::string name, std::uint64_t token) {
  impl().require_lock(std::move(name), token);
}
std::uint64_t Connection::commit() {
  return impl().commit();
}
void Connection::abort() {
  impl().abort(true);
}
void Connection::sync() {
  impl().sync_with_store();
}
bool Connection::has_changes() const {
  return impl().has_changes();
}
std::uint64_t Connection::snapshot_csn() const {
  return impl().snapshot_csn();
}
std::size_t Connection::cached_objects() const {
  return impl().cached_objects();
}

}  // namespace cairn
