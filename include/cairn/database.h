// The object layer: a Database over any Store hands out Connections, each an identity-mapped
// cache of objects read and written in optimistic, serializable transactions.
//
// Two ways to use it:
//   Durus style   auto conn = db.connect();  conn.root().set("n", 1);  conn.commit();
//                 A connection sees one consistent snapshot of the store, taken at its last
//                 commit(), abort() or sync(). Cached objects show other connections' commits
//                 only then; loading one it has not cached may move the snapshot forward, if
//                 nothing this transaction read has changed (see Connection).
//   ODB style     db.transaction([&](cairn::Txn& tx) { ... });   retried on conflict
//                 db.view([&](cairn::View& v) { ... });          read-only, never conflicts
//
// An object is (oid, type, key, state): the state is a Value (stored with cairn::encode), the type
// and key are the store's (store.h). Objects refer to each other with Ref values in their state.
// A Connection and everything it hands out belong to one thread at a time; Database is
// thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cairn/oid.h"
#include "cairn/store.h"
#include "cairn/value.h"

namespace cairn {

namespace detail {
struct Node;
class ConnectionImpl;
class DatabaseCore;

// A decoded form of an object's state that typed handles (typed.h) keep with the object in the
// connection's cache, so that every handle to the object shares it. Once changed through a
// handle it is written back into the state before the state is next read, written or committed.
class TypedState {
 public:
  virtual ~TypedState() = default;
  // Writes this form's fields into `state` (a map), keeping fields it does not know.
  virtual void write_to(Value& state) const = 0;
};

// A reference to a callable taking Arg&: what transaction() and view() hand their retry loops.
// It neither copies nor owns the callable, which must outlive it.
template <typename Arg>
class CallbackRef {
 public:
  template <typename F>
  explicit CallbackRef(F& f)
      : target_(&f), call_([](void* target, Arg& arg) { (*static_cast<F*>(target))(arg); }) {}
  void operator()(Arg& arg) const { call_(target_, arg); }

 private:
  void* target_;
  void (*call_)(void*, Arg&);
};
}  // namespace detail

// A handle to one object in one connection's cache: cheap to copy; two handles to the same oid
// from the same connection compare equal and share state. Reading the state loads it on first
// use and adds the object to the transaction's read set; writing marks it changed until the
// connection commits or aborts. A handle throws InvalidArgument once its connection is closed or,
// for objects from Database::transaction/view, once that call has returned.
class Object {
 public:
  Object() = default;  // refers to nothing; every accessor but valid() throws InvalidArgument

  bool valid() const { return node_ != nullptr; }
  Oid oid() const;
  Ref ref() const { return Ref{oid(), {}}; }

  // Whether the object exists (has been committed, or created in this transaction, and not
  // removed). Counts as a read.
  bool exists() const;
  // The object's type and key (store.h). Count as a read.
  const std::string& type() const;
  const std::string& key() const;

  // The state. Throws NotFound if the object does not exist; the root (Oid 0) reads as an empty
  // map until it is first written. The reference stays valid until the transaction ends or the
  // object is written.
  const Value& get() const;
  // The state, for changing in place: reads it and marks the object changed.
  Value& mutate();
  // Replaces the state, keeping type and key (loaded if need be) or setting them. A blind write:
  // the previous state is neither read nor validated, so concurrent blind writes do not
  // conflict. A blob (create_blob) set to Bytes without a type and key stays a blob; any other
  // state, and any set() naming a type and key, makes it an ordinary object. The type and key
  // are checked as create()'s, and the root takes no type (scans by type start after it).
  void set(Value state);
  void set(Value state, std::string type, std::string key);
  // Marks the object changed, for changes made through a reference kept from an earlier mutate().
  void note_change();
  // Deletes the object at commit (a blind write). An object created and removed in the same
  // transaction is never written. The root cannot be removed (InvalidArgument). References to
  // it elsewhere are left as they are: dangling, which `cairn check` reports as a problem (it
  // cannot tell them from objects lost), so remove the references too.
  void remove();
  // Adds bytes to the end of a blob (an object made by create_blob, whose state reads as Bytes)
  // without reading it: the commit sends only these bytes (store.h, AppendOp), and appends of
  // concurrent transactions to one blob do not conflict: each lands whole, in commit order.
  // Throws InvalidArgument if the object is loaded here and is not a blob, NotFound if it is
  // loaded and does not exist; otherwise the store checks at commit (and refuses the commit),
  // and so does loading it later in the transaction. A commit with appends that fails without
  // knowing whether the store applied it (IoError) aborts, since sending the appends again
  // could add the bytes twice; Database::transaction does not retry it either.
  void append(std::string_view bytes);

  // For typed handles (typed.h): the cached decoded form tagged `tag`, made by `make(state)` from
  // the state if there is none (a read of the object, as get()). With `for_write`, also marks the
  // object changed and the form as the newer one, written back into the state at commit.
  detail::TypedState& typed_state(
      const void* tag,
      const std::function<std::unique_ptr<detail::TypedState>(const Value& state)>& make,
      bool for_write) const;

  // The object a Ref value names, from the same connection (identity-mapped). Throws
  // InvalidArgument if `ref` is not a Ref.
  Object resolve(const Value& ref) const;

  friend bool operator==(const Object& a, const Object& b) { return a.node_ == b.node_; }

 private:
  friend class detail::ConnectionImpl;
  friend class ByteStream;
  // A new blob, a new untyped object, and loads, in this object's transaction or connection
  // (ByteStream's chunks and pages: reached through the head, they work exactly as long as it
  // does).
  Object create_blob(std::string bytes) const;
  Object create_untyped(Value state) const;
  void prefetch(std::span<const Oid> oids) const;
  Object(std::shared_ptr<detail::Node> node, std::uint64_t lease)
      : node_(std::move(node)), lease_(lease) {}
  detail::Node& live() const;

  std::shared_ptr<detail::Node> node_;
  std::uint64_t lease_ = 0;
};

// A view of an Object whose state is a Map, noting its own changes. Throws InvalidArgument (from
// Value) if the state is not a map.
class PersistentMap {
 public:
  PersistentMap() = default;
  explicit PersistentMap(Object object) : object_(std::move(object)) {}

  const Object& object() const { return object_; }
  std::size_t size() const;
  bool contains(std::string_view key) const;
  const Value* find(std::string_view key) const;  // nullptr if absent
  const Value& get(std::string_view key) const;   // NotFound if absent
  // The object the Ref at `key` names (NotFound if absent, InvalidArgument if not a Ref).
  Object object_at(std::string_view key) const;
  std::vector<std::string> keys() const;  // in key order

  void set(std::string key, Value value);
  bool erase(std::string_view key);  // whether the key was there; unchanged if not

 private:
  const Value::Map& map() const;
  Object object_;
};

// A view of an Object whose state is a List, noting its own changes. Indexes past the end throw
// InvalidArgument.
class PersistentList {
 public:
  PersistentList() = default;
  explicit PersistentList(Object object) : object_(std::move(object)) {}

  const Object& object() const { return object_; }
  std::size_t size() const;
  const Value& at(std::size_t index) const;
  Object object_at(std::size_t index) const;  // the object the Ref at `index` names

  void push_back(Value value);
  void set(std::size_t index, Value value);
  void erase(std::size_t index);

 private:
  const Value::List& list() const;
  Object object_;
};

// One thread's session with a Database: an identity-mapped cache and the current transaction
// (everything read or written since the last commit/abort/sync). Not thread-safe. Its cache is
// released when it is destroyed.
//
// Consistency: the connection reads a snapshot of the store as of its last commit, abort or sync.
// Objects load lazily; if one turns out to have changed since the snapshot, the connection moves
// its snapshot forward when nothing it has read in this transaction changed, and otherwise
// throws ConflictError. Every ConflictError a connection throws (from a read, sync or commit)
// leaves it aborted and synced, ready to retry the transaction.
class Connection {
 public:
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  ~Connection();

  // The root map (Oid 0); reads as empty until first committed.
  PersistentMap root();
  // The object with this oid, without loading it yet.
  Object get(Oid oid);
  // The object `ref` names. If `ref.type` is set, loads it now and throws InvalidArgument if the
  // object exists with another type.
  Object get(const Ref& ref);
  // A new object with a freshly allocated oid, written at commit. Throws InvalidArgument for a
  // type or key over the store's limits, or a key without a type (find() could not find it).
  Object create(Value state, std::string type = {}, std::string key = {});
  // A new blob: an object whose state is Bytes, stored as plain bytes (store.h, blob_marker) so
  // that Object::append can add to it. Writing it any other state makes it an ordinary object.
  Object create_blob(std::string bytes = {});
  // The object of `type` with key `key` (store.h) as this transaction sees it: its own creations,
  // key changes and removals included. The object found counts as read, so a later change to
  // it conflicts. Finding nothing is not validated, and if keys moved between objects after the
  // snapshot it may be wrong for the snapshot: use a miss to decide to create (creating a key
  // another live object holds conflicts at commit), not as a serializable read.
  std::optional<Object> find(std::string_view type, std::string_view key);
  // Loads the states of those of these objects that are not in the cache, with one store call
  // (one round trip to a server or Redis), as reading each in turn would have loaded them: a
  // list of references is then read without a round trip per object. Not a read: nothing
  // enters the read set until it is read. The store's limit on one reply applies (a server's
  // is 1 GiB): prefetch the largest objects a few at a time. More than max_load_oids (store.h)
  // are loaded in calls of that many each.
  void prefetch(std::span<const Oid> oids);

  // Fencing: this transaction's commit applies only while lock `name` is held under `token`, the
  // fencing token Store::lock returned for it (CommitRequest::locks). If it is not, the commit
  // throws LockLost and the transaction is aborted: a holder whose lock expired, or was taken
  // over while it was paused, changes nothing. Lasts until the transaction ends (commit or
  // abort); a transaction that changes nothing commits nothing, so checks nothing.
  void require_lock(std::string name, std::uint64_t token);

  // Sends one commit with the reads, writes and removals of this transaction and returns its CSN,
  // then syncs. With nothing changed it only syncs (a read-only transaction always succeeds).
  // On ConflictError or LockLost the transaction has been aborted and the connection synced.
  // Failing without knowing whether the store applied it (IoError: the connection to a server
  // was lost before the reply), the changes stay, to be committed again, unless the
  // transaction created objects or appended to blobs: then it aborts, since a commit sent again
  // would find its new objects taken if the first one applied (ConflictError, the commit's
  // outcome hidden), or append the bytes twice.
  std::uint64_t commit();
  // Drops uncommitted changes (changed objects revert to their committed state; created ones no
  // longer exist) and syncs.
  void abort();
  // Makes other connections' commits visible: cached objects they changed reload on next use.
  // It asks the store (over a server, one round trip), so every commit finished before the call
  // is seen, pushed yet or not; abort() does the same. Without uncommitted changes this starts a
  // new transaction. With changes, keeps them, and throws ConflictError (after aborting) if
  // something this transaction read has changed.
  void sync();

  bool has_changes() const;
  std::uint64_t snapshot_csn() const;  // the store CSN this connection's reads are consistent at
  std::size_t cached_objects() const;

 private:
  friend class Database;
  Connection(std::shared_ptr<detail::DatabaseCore> core,
             std::unique_ptr<detail::ConnectionImpl> impl);
  detail::ConnectionImpl& impl() const;

  std::shared_ptr<detail::DatabaseCore> core_;  // outlives impl_
  std::unique_ptr<detail::ConnectionImpl> impl_;
};

namespace detail {

// A lease's number as copies of a Txn or View see it, shared with the connection so that a copy
// kept past its transaction() or view() call can tell, even after the connection is gone.
struct LeaseCell {
  std::atomic<std::uint64_t> lease{0};
  std::atomic<bool> closed{false};
};

// What a Txn or View holds: its connection, for the lease it was made in. Every use checks the
// lease; a copy (which may outlive the call, and the connection) checks through the LeaseCell.
class LeaseRef {
 public:
  LeaseRef(ConnectionImpl& conn, std::uint64_t lease) : conn_(&conn), lease_(lease) {}
  LeaseRef(const LeaseRef& other);
  LeaseRef& operator=(const LeaseRef& other);
  // The connection; InvalidArgument once the lease has ended. `what` names the holder.
  ConnectionImpl& conn(const char* what) const;

 private:
  ConnectionImpl* conn_;
  std::uint64_t lease_;
  std::shared_ptr<const LeaseCell> cell_;  // copies only
};

}  // namespace detail

// The read-write transaction Database::transaction passes to its function. It, and any copy of
// it, works until that call returns; then every use throws InvalidArgument.
class Txn {
 public:
  Txn(detail::ConnectionImpl& conn, std::uint64_t lease) : lease_(conn, lease) {}

  PersistentMap root();
  Object get(Oid oid);
  Object get(const Ref& ref);
  Object create(Value state, std::string type = {}, std::string key = {});
  Object create_blob(std::string bytes = {});  // Connection::create_blob
  std::optional<Object> find(std::string_view type, std::string_view key);  // Connection::find
  void prefetch(std::span<const Oid> oids);                                 // Connection::prefetch
  // Fencing (Connection::require_lock): the commit applies only while the lock is held under
  // `token`; else transaction() throws LockLost, and does not run fn again.
  void require_lock(std::string name, std::uint64_t token);
  // Calls fn with the object's state to change in place (NotFound if it does not exist).
  void modify(Oid oid, const std::function<void(Value&)>& fn);
  void modify(const Ref& ref, const std::function<void(Value&)>& fn);
  void modify(const Object& object, const std::function<void(Value&)>& fn);
  // Deletes the object at commit (Object::remove).
  void remove(Oid oid);
  void remove(const Ref& ref);
  void remove(const Object& object);

 private:
  detail::ConnectionImpl& conn() const { return lease_.conn("Txn"); }
  detail::LeaseRef lease_;
};

// The read-only snapshot Database::view passes to its function. Writing to an object obtained
// through it throws InvalidArgument. It, and any copy of it, works until that call returns.
class View {
 public:
  View(detail::ConnectionImpl& conn, std::uint64_t lease) : lease_(conn, lease) {}

  PersistentMap root();
  Object get(Oid oid);
  Object get(const Ref& ref);
  std::optional<Object> find(std::string_view type, std::string_view key);  // Connection::find
  void prefetch(std::span<const Oid> oids);                                 // Connection::prefetch

 private:
  detail::ConnectionImpl& conn() const { return lease_.conn("View"); }
  detail::LeaseRef lease_;
};

struct DatabaseOptions {
  // transaction(): how many times to retry after a ConflictError before rethrowing it.
  int max_retries = 10;
  // The back-off before retry n is uniformly random in [0, min(retry_delay * 2^n,
  // max_retry_delay)].
  std::chrono::microseconds retry_delay{200};
  std::chrono::microseconds max_retry_delay{50'000};
  // Objects a connection keeps cached between transactions: past it, or past cache_bytes, commit
  // and abort (and the end of a transaction() or view()) drop objects no handle refers to
  // (ghosts, then the least recently read) to 3/4 of both.
  std::size_t cache_size = 100'000;
  // The stored bytes of the objects a connection keeps cached (their size in the store: a large
  // ByteStream read through a pooled connection is tens of thousands of 64 KiB chunks).
  std::size_t cache_bytes = 64 << 20;
  // Idle connections kept for transaction() and view() to reuse, with their caches.
  std::size_t pool_size = 8;
};

struct DatabaseStats {
  std::size_t connections = 0;         // connections alive: handed out by connect() or pooled
  std::size_t pooled_connections = 0;  // of those, idle in the pool
  std::size_t cached_objects = 0;      // objects cached by all of them together
  std::size_t replica_objects = 0;     // object states the subscriptions' replica holds
  std::uint64_t replica_csn = 0;       // the CSN those states are current at
  std::size_t replica_pending = 0;     // oids it is (re)loading after commits; 0 = current
  std::uint64_t replica_reads = 0;     // loads, scans and key lookups it answered from memory
};

// A store and the connections working on it. Thread-safe. Connections keep what they need of it
// alive, so they may outlive the Database object.
class Database {
 public:
  explicit Database(std::unique_ptr<Store> store, DatabaseOptions options = {});
  // The store a URL names (cairn::open).
  static Database open(std::string_view url, DatabaseOptions options = {});
  Database(Database&&) noexcept;
  Database& operator=(Database&&) noexcept;
  ~Database();

  Store& store() const;
  const DatabaseOptions& options() const;

  // A new connection with an empty cache, for this thread.
  Connection connect();

  // Runs fn(Txn&) on a pooled connection and commits what it changed. On ConflictError (from a
  // read or the commit) waits a jittered, growing delay and runs fn again, up to
  // options().max_retries times, then rethrows. Any other exception aborts and propagates.
  // A ConflictError that fn catches and goes on from still counts: the conflict has aborted
  // what fn had changed before it, so nothing is committed and fn runs again (so too if fn then
  // throws something else: mixing two snapshots may have caused it). A rerun after a conflict
  // first loads, in one call, what the conflicted run had read that is not cached any more.
  // Returns what fn returns;
  // objects from the transaction are not usable after it returns. fn must not call
  // transaction() itself: the inner one would commit on its own, once per run of fn.
  template <typename Fn>
  std::invoke_result_t<Fn&, Txn&> transaction(Fn&& fn) {
    using Result = std::invoke_result_t<Fn&, Txn&>;
    static_assert(!std::is_reference_v<Result>, "a transaction returns values, not references");
    if constexpr (std::is_void_v<Result>) {
      auto body = [&fn](Txn& tx) { fn(tx); };
      run_transaction(detail::CallbackRef<Txn>(body));
    } else {
      std::optional<Result> result;
      auto body = [&fn, &result](Txn& tx) { result.emplace(fn(tx)); };
      run_transaction(detail::CallbackRef<Txn>(body));
      return std::move(*result);
    }
  }

  // Runs fn(View&) on a consistent snapshot. If the snapshot cannot be kept (an object it needs
  // changed after something it already read), runs fn again on a newer one: fn never sees a
  // partly applied commit and the caller never sees a conflict. fn may therefore run more than
  // once (also if it catches the view's ConflictError and goes on: that run's result, or what
  // it throws, from two snapshots, is dropped). A rerun first loads, in one call, what the
  // conflicted run had read that is not cached any more.
  template <typename Fn>
  std::invoke_result_t<Fn&, View&> view(Fn&& fn) {
    using Result = std::invoke_result_t<Fn&, View&>;
    static_assert(!std::is_reference_v<Result>, "a view returns values, not references");
    if constexpr (std::is_void_v<Result>) {
      auto body = [&fn](View& v) { fn(v); };
      run_view(detail::CallbackRef<View>(body));
    } else {
      std::optional<Result> result;
      auto body = [&fn, &result](View& v) { result.emplace(fn(v)); };
      run_view(detail::CallbackRef<View>(body));
      return std::move(*result);
    }
  }

  // Subscriptions (ODB's subscribeToSchema): over a remote store (cairn://, redis://) the
  // database keeps a local replica of the objects a subscription names, kept current by the
  // commits the store pushes, and serves reads of them from memory: loads in views and
  // transactions, and scan_type / scan_keys / find_key on store() when a subscription covers
  // them. Each call returns once the initial contents are loaded; destroying or resetting the
  // Subscription unsubscribes, and the last one frees the replica. Reads stay snapshot
  // consistent. Another client's commit becomes visible to views and transactions once its push
  // arrives (as for cached objects), not the moment that client's commit returns; a
  // connection's sync() or abort() asks the server. Over a local store these do nothing.
  //
  // Every object of `type` (store.h), including ones created later by anyone.
  Subscription subscribe_type(std::string type);
  // The objects of `type` whose key starts with `prefix`: e.g. a record index value, whose
  // entries are keyed objects of the index's type (docs/records.md).
  Subscription subscribe_keys(std::string type, std::string prefix);
  // These objects, whatever their type, present or not.
  Subscription subscribe_objects(std::vector<Oid> oids);

  DatabaseStats stats() const;

 private:
  void run_transaction(detail::CallbackRef<Txn> fn);
  void run_view(detail::CallbackRef<View> fn);
  detail::DatabaseCore& core() const;

  std::shared_ptr<detail::DatabaseCore> core_;
};

}  // namespace cairn
