// The store contract: the one interface every backend (memory, file, Redis, remote server)
// implements, and that the transaction and record layers are written against. Every backend
// passes the same conformance suite (tests/conformance/store_conformance.h).
//
// A store holds objects. Each object has an Oid, a version (the commit sequence number, CSN, of
// the commit that last wrote it; 0 means "does not exist"), opaque encoded data, and two pieces
// of metadata the store indexes:
//   type  the name under which the object is listed by scan_type(); "" = not listed;
//   key   a name unique among live objects of the same type, listed by scan_keys(); "" = none.
// Objects that are listed by type or key, and the root (Oid 0), are roots for pack(); other
// objects live only while a Ref inside the data of a live object reaches them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/oid.h"

namespace cairn {

// Limits every backend enforces (InvalidArgument past them).
inline constexpr std::size_t max_type_length = 255;
inline constexpr std::size_t max_key_length = 1024;
inline constexpr std::size_t max_lock_name_length = 1024;
inline constexpr std::size_t max_object_bytes = 64 * 1024 * 1024;
// The most oids one load() over a server may name (InvalidArgument past it, nothing sent): a
// server answering a load holds about 140 bytes per oid before its reply, so a load of tens of
// millions would take gigabytes. A Connection loads in pieces of at most this many.
inline constexpr std::size_t max_load_oids = 1 << 20;
// The longest lock ttl and lock wait: longer ones are refused (InvalidArgument).
inline constexpr std::chrono::milliseconds max_lock_duration{366LL * 24 * 3600 * 1000};

// The first byte of a blob: object data that holds plain bytes rather than an encoded Value, and
// to which a commit may append (AppendOp) without sending or rewriting what it already holds.
// No encoded Value starts with 0xc1, the one byte MessagePack never uses (docs/file-format.md),
// so data is a blob exactly when its first byte is this. The blob's bytes are all that follow.
inline constexpr char blob_marker = '\xc1';

inline bool is_blob(std::string_view data) {
  return !data.empty() && data.front() == blob_marker;
}

struct StoredObject {
  Oid oid;
  std::uint64_t version = 0;  // CSN of the commit that wrote this state; 0 = absent
  std::string type;
  std::string key;
  std::string data;
  bool exists() const { return version != 0; }
};

struct LoadResult {
  std::uint64_t csn = 0;              // the store's last CSN when the objects were read
  std::vector<StoredObject> objects;  // one per requested oid, in request order
};

struct ReadCheck {
  Oid oid;
  std::uint64_t version = 0;  // the version that was read; 0 = it was read as absent
};

struct WriteOp {
  Oid oid;
  std::string type;
  std::string key;
  std::string data;
};

// Bytes added to the end of an existing blob. An append reads nothing: commits appending to one
// blob never conflict over it, and their bytes follow each other in CSN order.
struct AppendOp {
  Oid oid;
  std::string data;  // may be empty: the object still changes (new version, in the commit's oids)
};

// A lock a commit requires: held (not expired) under the fencing token `lock()` returned.
struct LockCheck {
  std::string name;
  std::uint64_t token = 0;
};

struct CommitRequest {
  std::vector<ReadCheck> reads;   // validated: each must still be at the version given
  std::vector<WriteOp> writes;    // blind unless also listed in reads
  std::vector<Oid> deletes;       // deleting an absent object is allowed and changes nothing
  std::vector<AppendOp> appends;  // to blobs that exist when the commit applies
  std::vector<LockCheck> locks;   // fencing: each lock must still be held under its token

  bool changes_nothing() const { return writes.empty() && deletes.empty() && appends.empty(); }
};

struct Changes {
  std::uint64_t csn = 0;  // the store's last CSN
  std::vector<Oid> oids;  // objects written or deleted after the given CSN (each once)
  bool complete = true;   // false: history before the given CSN was trimmed; drop all caches
};

struct ScanEntry {
  Oid oid;
  std::string key;
};

struct LockRequest {
  std::string name;
  std::string owner;                      // who holds it; unlock/renew must name the same owner
  std::chrono::milliseconds ttl{30'000};  // the lock expires this long after it is taken
  std::chrono::milliseconds wait{0};      // how long to wait for a held lock; 0 = try once
};

struct PackStats {
  std::uint64_t objects_before = 0;
  std::uint64_t objects_after = 0;
  std::uint64_t bytes_before = 0;
  std::uint64_t bytes_after = 0;
};

// Called once per commit, in CSN order, with the commit's CSN and the oids it wrote, appended to
// or deleted (deletes of absent objects included, so never none: a commit that changes nothing
// has no CSN). A remote store that was cut off from its server
// reports what it missed once it is back: one call may then sum up several commits (the last
// CSN, every oid they changed), and a call with no oids says that the commits up to `csn` are
// unknown (the store's history no longer reaches back to them): anything may have changed.
using CommitListener = std::function<void(std::uint64_t csn, std::span<const Oid> oids)>;

// Unsubscribes when destroyed (or reset). May outlive the store.
class Subscription {
 public:
  Subscription() = default;
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  Subscription(Subscription&& other) noexcept : cancel_(std::exchange(other.cancel_, {})) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      reset();
      cancel_ = std::exchange(other.cancel_, {});
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { reset(); }
  void reset() {
    if (cancel_) std::exchange(cancel_, {})();
  }
  bool active() const { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

class Store {
 public:
  virtual ~Store() = default;

  // Reads the current state of each oid (absent ones have version 0) in one round trip.
  virtual LoadResult load(std::span<const Oid> oids) = 0;

  // Atomically: if every read is still at its version and no write takes a key held by another
  // live object of the same type, applies writes, deletes and appends and returns the new CSN;
  // else throws ConflictError naming the offending oids and changes nothing. A commit with
  // nothing to write, delete or append validates its reads and returns the current CSN. Writes
  // (and deletes and appends) must name the root or an oid from new_oids() (InvalidArgument;
  // but ConflictError if the commit reads that oid as absent: a new object's oid from an earlier
  // run of a store that lost its data, such as a memory server started again); an oid may
  // appear once among writes, deletes and appends. An append's object must exist and be a blob when
  // the commit applies (else NotFound or InvalidArgument, and nothing changes); it keeps its type
  // and key, and its data grows by the appended bytes, up to max_object_bytes (InvalidArgument past
  // it). CSNs count commits one by one: the commits that write, delete or append get CSNs N+1, N+2,
  // ... after the last one, N, so a commit that returns N+1 to a reader of N is the only commit
  // since. Fencing: each of `locks` must be held, unexpired, under its token (the one lock()
  // returned when it was taken); else the commit throws LockLost naming the lock and changes
  // nothing. This is checked first, and atomically with the apply: a holder whose lock expired, or
  // who was paused while another took the lock over, cannot commit under it. A lock name is as for
  // lock(), a token is never 0 (InvalidArgument).
  virtual std::uint64_t commit(const CommitRequest& request) = 0;

  // Called once a commit_async() commit is durable (error null), or could not be made durable.
  using CommitCallback = std::function<void(std::uint64_t csn, std::exception_ptr error)>;

  // For servers: like commit(), but returns once the commit is validated and applied (visible
  // to loads) and calls `done`, from a thread of the store's, once it is durable, so that no
  // thread waits for the disk per commit. Conflicts and invalid requests throw here, as from
  // commit(). Returns false, doing nothing, if this store has no such path: call commit().
  virtual bool commit_async(const CommitRequest& request, CommitCallback done) {
    (void)request;
    (void)done;
    return false;
  }

  // The oids changed by commits with CSN > `csn`.
  virtual Changes changes_since(std::uint64_t csn) = 0;

  // Optional: an atomic this store keeps equal to its newest CSN, or null. The store stores a
  // commit's CSN into it (release order) once loads return that commit's states, and keeps it
  // as long as the store lives. A caller that reads (acquire order) its own last CSN there knows
  // without a call that changes_since() would name nothing.
  virtual const std::atomic<std::uint64_t>* csn_watch() const { return nullptr; }

  // `listener` is called after every commit until the Subscription is destroyed. It runs on the
  // committing thread (or the store's own thread) and must not commit to this store.
  virtual Subscription subscribe(CommitListener listener) = 0;

  // Allocates `count` (>= 1) fresh oids, contiguous, returned as the first one. Never returns an
  // oid returned before, to any thread or process sharing the store; unless the store itself
  // starts again without its data (a memory server restarted), which is why a commit creating
  // an object reads its oid as absent (version 0).
  virtual Oid new_oids(std::uint32_t count) = 0;

  // Objects listed under `type` with oid > `after`, in ascending oid order, at most `limit`.
  // A cursor by value: objects deleted during a scan are skipped, never the cause of a skip.
  virtual std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) = 0;

  // Objects of `type` whose key starts with `prefix` and sorts after `after` (bytewise), in
  // ascending key order, at most `limit`.
  virtual std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                           std::string_view after, std::size_t limit) = 0;

  // The live object of `type` with key `key`, if any.
  virtual std::optional<Oid> find_key(std::string_view type, std::string_view key) = 0;

  // TTL lock. Returns a fencing token, strictly greater than every token issued before for
  // this name, or nullopt if someone else still holds the lock after waiting `wait`. Locks are
  // not re-entrant: the holder locking again waits like anyone else. Never takes a held lock.
  // A ttl or wait over max_lock_duration is refused.
  virtual std::optional<std::uint64_t> lock(const LockRequest& request) = 0;
  // Releases the lock if `owner` holds it; returns whether it did.
  virtual bool unlock(std::string_view name, std::string_view owner) = 0;
  // Extends a lock `owner` holds to expire `ttl` from now; false if it is not held by `owner`.
  // A ttl that is not positive or is over max_lock_duration is refused.
  virtual bool renew(std::string_view name, std::string_view owner,
                     std::chrono::milliseconds ttl) = 0;

  // Whether calls are round trips to another process (a server, Redis). The object layer then
  // keeps its own record of the commits subscribe() reports, and asks changes_since() less.
  virtual bool is_remote() const { return false; }

  // Whether subscribe()'s listeners are hearing of commits as they happen. A remote store says
  // false while it is cut off from the commits of others (its connection, or its change feed's,
  // is down); what it missed is reported once it is back. The object layer relies on its own
  // record of commits only while this is true, and asks changes_since() otherwise.
  virtual bool hears_commits() const { return true; }

  // Drops objects that no root reaches (see top of file). Data must be codec-encoded Values for
  // references to be followed.
  virtual PackStats pack() = 0;
};

// An in-memory store: thread-safe, nothing survives the process. What `memory:` opens.
std::unique_ptr<Store> make_memory_store();

// Opens the store a URL names:
//   memory:                                 a new MemoryStore
//   file:PATH                               the embedded file store
//   redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P]
//   cairn://[TOKEN@]HOST[:PORT]             a cairn server (port 2972 by default; the token may
//                                           also come from env CAIRN_TOKEN)
//   cairns://[TOKEN@]HOST[:PORT][?ca=FILE]  the same over TLS, the server's certificate checked
//                                           against FILE (default: the system's CAs);
//                                           ?insecure=1 skips that check
//   cairn://[TOKEN@]localhost?socket=PATH   a server's unix socket (plaintext: with cairns://
//                                           or another host or port it is refused)
// Throws InvalidArgument for a malformed URL or unknown scheme, Unsupported for a backend this
// build does not have.
std::unique_ptr<Store> open(std::string_view url);

}  // namespace cairn
