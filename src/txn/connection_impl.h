// ConnectionImpl: the identity-mapped cache and the optimistic transaction behind Connection,
// Txn, View and Object (include/cairn/database.h).
//
// Invariant: every loaded, unchanged node holds the state its object had at snapshot_ (the
// connection's snapshot CSN), so that everything the transaction reads is one consistent
// snapshot. Loads return the store's current state; a load newer than the snapshot moves the
// snapshot forward when nothing read so far has changed (catch_up), and is a conflict otherwise.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cairn/database.h"
#include "cairn/store.h"
#include "txn/change_feed.h"
#include "txn/node.h"
#include "txn/oid_map.h"

namespace cairn::detail {

// Counts the Database keeps over all its connections (DatabaseStats).
struct ConnectionCounters {
  std::atomic<std::size_t> connections{0};
  std::atomic<std::size_t> cached_objects{0};
};

inline std::shared_ptr<LeaseCell> make_lease_cell(std::uint64_t lease) {
  auto cell = std::make_shared<LeaseCell>();
  cell->lease.store(lease, std::memory_order_relaxed);
  return cell;
}

class ConnectionImpl {
 public:
  // `feed`, if not null, answers most "what changed since" questions without the store.
  ConnectionImpl(Store& store, ConnectionCounters& counters, std::size_t cache_size,
                 std::size_t cache_bytes, const ChangeFeed* feed = nullptr);
  ConnectionImpl(const ConnectionImpl&) = delete;
  ConnectionImpl& operator=(const ConnectionImpl&) = delete;
  // Detaches every node still referenced by a handle, so that the handle throws.
  ~ConnectionImpl();

  Object get(Oid oid) { return handle(node(oid)); }
  Object get(const Ref& ref);
  Object create(Value state, std::string type, std::string key);
  Object create_blob(std::string bytes);
  std::optional<Object> find(std::string_view type, std::string_view key);
  void prefetch(std::span<const Oid> oids);
  void require_lock(std::string name, std::uint64_t token);
  std::uint64_t commit();
  // Drops the changes and syncs: from the change feed, or with `ask_store` from the store (an
  // explicit Connection::abort()).
  void abort(bool ask_store = false);
  // What changed since the snapshot, from the change feed when it knows (else the store).
  void sync();
  // The same, always asked of the store: for an explicit Connection::sync() or abort().
  void sync_with_store();

  bool has_changes() const { return !dirty_.empty(); }
  std::uint64_t snapshot_csn() const { return snapshot_; }
  std::size_t cached_objects() const { return cache_.size(); }
  // How many ConflictErrors this connection has thrown: tells its own from others'.
  std::uint64_t conflicts() const { return conflicts_; }
  // The oids of the newest ConflictError this connection threw.
  const std::vector<Oid>& conflict_oids() const { return conflict_oids_; }
  // What the transaction the newest ConflictError aborted had read (then emptied): a retry
  // prefetches it, so that its reads come from one load instead of one round trip each, between
  // which others' commits would conflict with it again.
  std::vector<Oid> take_conflicted_reads() { return std::exchange(conflicted_reads_, {}); }

  // A lease is one use of a pooled connection by transaction() or view(): handles from an earlier
  // lease no longer work. `read_only` refuses every write (views).
  void begin_lease(bool read_only) {
    if (!begin_current_lease(read_only)) begin_lease_sync();
  }
  // begin_lease's usual case: a pooled connection (which end_lease left without changes or
  // reads) on which nothing has been committed since its last transaction, as the store's CSN
  // watch tells without a call. Returns false, having done no more than note `read_only`, if
  // the connection needs begin_lease instead.
  bool begin_current_lease(bool read_only) {
    read_only_ = read_only;
    return conflicted_reads_.empty() && csn_watch_ != nullptr &&
           csn_watch_->load(std::memory_order_acquire) == snapshot_;
  }
  void end_lease() {
    if (!lease_is_clean()) [[unlikely]]
      end_lease_changes();
    retire_lease();
  }
  // end_lease's usual case: the connection has no changes or reads (as after a commit) and its
  // cache is within its limits. Returns false, having done nothing, if it needs end_lease.
  bool end_clean_lease() {
    if (!lease_is_clean()) [[unlikely]]
      return false;
    retire_lease();
    return true;
  }
  std::uint64_t lease() const { return lease_; }
  // The lease number as copies of a Txn or View check it (database.h, LeaseRef).
  std::shared_ptr<const LeaseCell> lease_cell() const { return lease_cell_; }

  // Whether `object` is a handle from this connection.
  bool owns(const Object& object) const { return object.node_ && object.node_->conn == this; }

  // What Object does to its node.
  bool exists(Node& node);
  const std::string& type(Node& node);
  const std::string& key(Node& node);
  const Value& read(Node& node);
  Value& write(Node& node);
  void set(Node& n, Value&& state) {
    check_writable();
    ensure_loaded(n);  // for its type and key; not a read
    flush_typed(n, true);
    end_appending(n);
    n.value = std::move(state);
    n.present = true;
    mark_dirty(n);
  }
  void set(Node& node, Value state, std::string type, std::string key);
  void remove(Node& node);
  void append(Node& node, std::string_view bytes);
  TypedState& typed(Node& node, const void* tag,
                    const std::function<std::unique_ptr<TypedState>(const Value&)>& make,
                    bool for_write);

 private:
  Object handle(const std::shared_ptr<Node>& node) const { return Object(node, lease_); }
  std::shared_ptr<Node>& node(Oid oid) {
    if (std::shared_ptr<Node>* cached = cache_.find(oid)) return *cached;
    return add_node(oid);
  }
  std::shared_ptr<Node>& add_node(Oid oid);  // a ghost, for an oid not in the cache
  void ensure_loaded(Node& node) {
    if (!node.loaded) load(node);
  }
  // Loads ghosts' states from the store, in one call.
  void load(Node& node);
  void load(std::span<Node* const> nodes);
  void note_read(Node& node);
  // Loads the node and adds it to the read set; NotFound unless it exists (or is the root).
  void read_existing(Node& node);
  void mark_dirty(Node& node) {
    if (node.dirty) return;
    node.dirty = true;
    dirty_.push_back(&node);
  }
  // Before a write of the whole state: pending appends are part of the old state now.
  static void end_appending(Node& node) {
    if (!node.appending) return;
    node.appending = false;
    node.appended.clear();
  }
  void check_writable() const {
    if (read_only_) [[unlikely]]
      throw_read_only();
  }
  [[noreturn, gnu::cold]] static void throw_read_only();
  // Forgets the node's state (it loads again on next use) and any change to it.
  void ghost(Node& node);
  // Forgets the node's state but keeps its pending appends.
  void unload(Node& node);
  // Sets the node's stored_bytes, keeping cached_bytes_ their sum.
  void set_stored_bytes(Node& node, std::size_t bytes) {
    cached_bytes_ = cached_bytes_ - node.stored_bytes + bytes;
    node.stored_bytes = bytes;
  }
  // Writes a typed handle's newer form back into the node's value; `drop`: forget the form too
  // (the value is about to change some other way).
  static void flush_typed(Node& node, bool drop) {
    if (node.typed) flush_typed_form(node, drop);
  }
  static void flush_typed_form(Node& node, bool drop);
  // After a load at `load_csn` found a state newer than the snapshot: moves the snapshot there,
  // or aborts and throws ConflictError if something read in this transaction has changed.
  void catch_up(std::uint64_t load_csn);
  // Turns the cached nodes `changes` names into ghosts, unless one of them is in the read set:
  // then changes nothing and returns those (the conflicts). `keep_current`: keep nodes loaded at
  // changes.csn, which no later commit can have changed.
  std::vector<Oid> apply(const Changes& changes, bool keep_current);
  [[noreturn]] void fail(std::vector<Oid> oids, const char* why);
  // Before a conflict aborts the transaction: notes its read set and the conflict's oids.
  void note_conflict(const std::vector<Oid>& oids);
  // What changed since the snapshot, up to a CSN of at least `at_least`.
  Changes changes(std::uint64_t at_least);
  // sync(), to a snapshot of at least `at_least`.
  void sync_to(std::uint64_t at_least);
  // The end of a sync: applies what changed since the snapshot and moves the snapshot there, or
  // aborts and throws ConflictError if something read in this transaction has changed.
  void move_to(const Changes& changes) {
    if (changes.complete && changes.oids.empty()) [[likely]] {
      snapshot_ = changes.csn;  // nothing changed: the usual answer, with nothing to apply
      return;
    }
    apply_and_move(changes);
  }
  void apply_and_move(const Changes& changes);
  bool lease_is_clean() const {
    return dirty_.empty() && read_set_.empty() && !past_cache_limits();
  }
  void retire_lease() {
    read_only_ = false;
    // A run of fn that required a lock and then threw before it changed or read anything left
    // its check here: it is not the next lease's.
    required_locks_.clear();
    ++lease_;  // handles from this lease stop working, and copies of its Txn or View
    lease_cell_->lease.store(lease_, std::memory_order_release);
  }
  // begin_lease's and end_lease's work beyond their common case.
  void begin_lease_sync();
  void end_lease_changes();
  void end_transaction() {
    for (Node* n : read_set_)
      n->read = false;
    read_set_.clear();
    reserved_left_ = 0;
    last_reserve_ = 0;
    required_locks_.clear();
  }
  // Files a changed node in find()'s index under its type and key (none if it has no key).
  void file_key(Node& node);
  // The same for a node whose type or key may have changed, if it is changed and the index built.
  void refile_key(Node& node);
  // Forgets the changed nodes (after they were committed or dropped).
  void clear_dirty();
  // This transaction's own object of that type and key, if it has one.
  Node* find_changed(std::string_view type, std::string_view key);
  // Drops unused nodes once the cache has grown past its limits.
  bool past_cache_limits() const {
    return cache_.size() > cache_size_ || cached_bytes_ > cache_bytes_;
  }
  void shrink() noexcept {
    if (past_cache_limits()) [[unlikely]]
      shrink_past_limits();
  }
  // Trims, unless the last trim found the cache held by handles: then only once it has doubled,
  // or every so many transactions (handles dropped since free their nodes).
  void shrink_past_limits() noexcept;
  // Never throws: it runs after commits that have succeeded. Out of memory, it leaves the cache
  // as it is (OidMap::erase_if changes nothing if it cannot allocate).
  void shrink_cache() noexcept;
  void shrink_cache_now();
  // Empties the reused commit request, keeping a few writes for the next commit to assign to
  // (commit), and freeing its vectors and strings if they grew large: past kept_ops entries (a
  // vector grows past it only while it holds more than that: its size tells), kept_writes
  // writes, or a state of kept_state_bytes (request_large_). What stays is a few tens of KiB.
  static constexpr std::size_t kept_ops = 1024;
  static constexpr std::size_t kept_writes = 16;
  static constexpr std::size_t kept_state_bytes = 1024;
  void release_request() noexcept {
    // The usual commit only writes: its reads, deletes and appends are empty, and stay so.
    if (request_large_ || request_.writes.size() > kept_writes || !request_.reads.empty() ||
        !request_.deletes.empty() || !request_.appends.empty() || !request_.locks.empty())
        [[unlikely]] {
      trim_request();
    }
  }
  void trim_request() noexcept;

 public:
  // The bytes the reused commit request keeps allocated between commits (its vectors' and
  // kept writes' capacity), for tests of release_request.
  std::size_t retained_request_bytes() const;

 private:
  Store& store_;
  ConnectionCounters& counters_;
  const ChangeFeed* feed_;
  const std::atomic<std::uint64_t>* csn_watch_;  // Store::csn_watch()
  OidMap<std::shared_ptr<Node>> cache_;
  std::vector<Node*> read_set_;  // nodes with read set, kept alive by cache_
  std::vector<Node*> dirty_;     // nodes with dirty set, in the order they changed
  // find()'s index of the changed nodes by "type\0key", once a transaction has changed more
  // than a few: dirty_[0, dirty_indexed_) are in it, under the type and key they had then or
  // took later (a node may be under several, and every hit is checked).
  std::unordered_multimap<std::string, Node*> dirty_keys_;
  std::size_t dirty_indexed_ = 0;
  std::uint64_t snapshot_ = 0;
  std::uint64_t lease_ = 1;
  std::shared_ptr<LeaseCell> lease_cell_ = make_lease_cell(lease_);
  bool read_only_ = false;
  std::uint64_t conflicts_ = 0;
  std::vector<Oid> conflict_oids_;
  std::vector<Oid> conflicted_reads_;
  std::size_t cache_size_;
  std::size_t cache_bytes_;
  std::size_t cached_bytes_ = 0;  // the nodes' stored_bytes, summed
  // After a trim that left the cache past its limits: trim again past these, or after
  // retry_trim_after_ more transactions past the limits (counted in skipped_trims_).
  std::size_t shrink_at_;
  std::size_t shrink_bytes_at_;
  std::size_t skipped_trims_ = 0;
  std::size_t retry_trim_after_ = 0;
  // Oids allocated for this transaction's creates and not used yet: [reserved_, reserved_ +
  // reserved_left_). new_oid() takes them one by one, and refills twice as many as the time
  // before, up to max_oid_reserve: a transaction creating many objects makes a few calls (each a
  // round trip to a server) instead of one per object, and leaves at most as many unused as it
  // used. end_transaction() drops what is left: oids kept past a restart of a memory server could
  // be the ones that server gives to others.
  static constexpr std::uint32_t max_oid_reserve = 1024;
  std::vector<LockCheck> required_locks_;  // require_lock()'s, until the transaction ends
  Oid new_oid();
  std::uint64_t reserved_ = 0;
  std::uint32_t reserved_left_ = 0;
  std::uint32_t last_reserve_ = 0;  // the size of the last refill in this transaction (0: none)
  CommitRequest request_;           // commit()'s, reused (release_request)
  bool request_large_ = false;      // a write's state in request_ has grown past kept_state_bytes
};

}  // namespace cairn::detail
