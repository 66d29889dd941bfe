// Records: active records over CAIRN_TYPE structs (typed.h) that save, load, list, remove and
// lock themselves through a Repository chosen per type or per instance (docs/records.md).
//
//   struct User : cairn::Record<User> {
//     std::string name;
//     std::string house_name;
//     std::int64_t age = 0;
//     static void describe(cairn::Schema<User>& s) { s.index("house_name").index("age"); }
//   };
//   CAIRN_TYPE(User, "school.User", name, house_name, age);
//
//   auto harry = User::create({{"name", "Harry"}, {"house_name", "Gryffindor"}}, {.id = "harry"});
//   harry->age = 17;
//   harry->save();
//   auto same = User::load("harry");                          // same == harry (identity cache)
//   auto adults = User::find().where("age", ">=", 18).order_by("-name").all();   // query.h
//
// A record is one stored object: its store type is the CAIRN_TYPE name, its store key is the
// record's id (a user-given string, or a random uuid), and its state is a map of its fields plus
// "$gen", the schema generation. Records are handled through std::shared_ptr (make, create,
// load, list and find hand them out); one record object is not thread-safe, a Repository is.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/oid.h"
#include "cairn/store.h"
#include "cairn/typed.h"
#include "cairn/value.h"

namespace cairn {

class RecordBase;
template <typename T>
class Record;
template <typename T>
class Query;

// ---- field kinds and type descriptions ----

// What a field holds, from its C++ type (see FieldTraits below).
enum class FieldKind : std::uint8_t {
  string,      // std::string, valid UTF-8
  bytes,       // cairn::Bytes
  json,        // cairn::Value: any value tree
  uuid,        // cairn::Uuid
  timestamp,   // cairn::Timestamp
  decimal,     // cairn::Decimal (exact)
  floating,    // double
  integer,     // integral types but bool and char
  boolean,     // bool
  list,        // std::vector<X>
  map,         // std::map<std::string, X>
  pointer,     // Pointer<U> or TypedRef<U>: a reference to another record
  object,      // a nested CAIRN_TYPE struct, stored as a map
  bytestream,  // StreamField: bytes appended without rewriting the record
};

// The name a kind has in to_json() ("string", "bytes", "json", "uuid", "timestamp", "decimal",
// "float", "integer", "bool", "list", "map", "pointer", "object", "bytestream").
std::string_view to_string(FieldKind kind);

// A rule a field's value must follow, checked on set() and save().
struct FieldCheck {
  std::function<bool(const Value&)> ok;
  std::string message;  // what the rule asks, e.g. "must be at least 0"
};

struct FieldSpec {
  std::string name;
  FieldKind kind = FieldKind::json;
  bool nullable = false;   // std::optional<X>: null is allowed
  bool indexed = false;    // a secondary index is kept for it (query.h)
  bool required = false;   // not null, and not empty for strings, bytes, lists and maps
  bool auto_now = false;   // timestamp: set to the current time on every save
  bool auto_uuid = false;  // uuid: a random one at save while it is nil
  std::string target;      // pointer: the stored type name of the record pointed to
  Value default_value;     // the field's value in a default-constructed struct
  std::vector<FieldCheck> checks;
};

// Everything the records layer knows of a type: built once per type from CAIRN_TYPE and the
// optional `static void describe(Schema<T>&)`, immutable after.
struct TypeSpec {
  std::string name;             // the CAIRN_TYPE name: the store type of its records
  std::int64_t generation = 0;  // part of the stored identity (tethys's "Zero")
  std::vector<FieldSpec> fields;

  const FieldSpec* find(std::string_view field) const;
  // Throws InvalidArgument naming the type if it has no such field.
  const FieldSpec& at(std::string_view field) const;
  // The store type of the index entries of `field`.
  std::string index_type(const FieldSpec& field) const;
  // Throws InvalidArgument naming the field if an index's store type would be longer than a
  // store type may be (max_type_length): a long type name leaves no room for it.
  void check_index_types() const;
  // Throws InvalidArgument ("school.User.age: ...") unless `value` is acceptable for `field`.
  void validate(const FieldSpec& field, const Value& value) const;
  // `value` converted to the field's kind where the conversion is exact (an integer for a float
  // field if a double holds it exactly, an integer for a decimal field, text for a uuid,
  // timestamp or decimal, an oid for a pointer); throws InvalidArgument naming the type and
  // field if it cannot be (text that does not parse included).
  Value coerce(const FieldSpec& field, Value value) const;
  // For == and in: throws InvalidArgument naming the field for a (coerced) value no stored
  // field can hold, which would match nothing: text that is not UTF-8, a Ref to another type.
  void check_matchable(const FieldSpec& field, const Value& value) const;
};

// ---- repositories ----

// Where records live: a Database (any store cairn::open names) and the identity map of the
// records loaded from it, so that loading one id twice gives the same object. Thread-safe.
// Must be owned by a std::shared_ptr (use open(), memory() or std::make_shared).
class Repository : public std::enable_shared_from_this<Repository> {
 public:
  explicit Repository(Database db);
  static std::shared_ptr<Repository> open(std::string_view url, DatabaseOptions options = {});
  static std::shared_ptr<Repository> memory();  // a new in-memory database

  Database& database() { return db_; }
  Store& store() const { return db_.store(); }
  // Unique to this repository object; record locks are held in its name.
  const std::string& lock_owner() const { return owner_; }

  // The identity map: the live record object of C++ type `spec` for an oid, if any. (Two C++
  // types may read one stored type, e.g. two generations' structs: each has its own objects.)
  std::shared_ptr<RecordBase> cached(Oid oid, const TypeSpec& spec) const;
  // Maps `oid` to `record`. A record object is in one identity map, under one oid: one it was
  // in before (another repository's, after set_repository; another oid) forgets it.
  void remember(Oid oid, const std::shared_ptr<RecordBase>& record);
  // Forgets `oid` if `record` is the object cached for it.
  void forget(Oid oid, RecordBase* record);
  std::size_t cached_records() const;
  // Held while a record is looked up in the identity map and read into the object found there,
  // or into a new one that is then mapped (Record's load, list, queries, refresh): so that two
  // threads loading one record get one object, and two reads into one object never interleave.
  std::unique_lock<std::mutex> hold_identity() const { return std::unique_lock(identity_mu_); }

 private:
  struct CacheKey {
    Oid oid;
    const TypeSpec* spec;
    friend bool operator==(const CacheKey&, const CacheKey&) = default;
  };
  struct CacheKeyHash {
    std::size_t operator()(const CacheKey& k) const noexcept {
      return std::hash<Oid>{}(k.oid) ^ (std::hash<const void*>{}(k.spec) << 1);
    }
  };
  Database db_;
  std::string owner_;
  mutable std::mutex identity_mu_;  // before mu_
  mutable std::mutex mu_;
  std::unordered_map<CacheKey, std::weak_ptr<RecordBase>, CacheKeyHash> cache_;
  std::size_t sweep_at_ = 1024;
};

// Which repository a record type uses when a record names none: the one set for its type, else
// the one set for all types, else an in-memory repository made on first use (tethys's
// LocalRepository). Thread-safe.
//
// This is the process's one piece of shared mutable state in the records layer: a type's
// repository is class-level state by design (tethys's `ZeroNetwork.REPOSITORY = repo`), so it
// cannot live in an object the caller passes around. Everything else is per repository.
class RepositoryRegistry {
 public:
  static RepositoryRegistry& process();

  std::shared_ptr<Repository> for_type(std::string_view type);
  // nullptr: the type goes back to the registry's default.
  void set_for_type(std::string_view type, std::shared_ptr<Repository> repository);
  // The repository of every type without its own; nullptr: a new in-memory one on next use.
  void set_default(std::shared_ptr<Repository> repository);
  std::shared_ptr<Repository> default_repository();

 private:
  std::mutex mu_;
  std::shared_ptr<Repository> default_;
  std::map<std::string, std::shared_ptr<Repository>, std::less<>> by_type_;
};

// ---- the non-template core (src/records) ----

namespace detail {

// One stored record as read from the store.
struct RecordRow {
  Oid oid;
  std::string key;
  Value::Map state;
};

// The record `oid`, or nullopt if it does not exist. Throws InvalidArgument if the object has
// another type, or was stored by another generation (naming both).
std::optional<RecordRow> load_record(Store& store, const TypeSpec& spec, Oid oid);
// The oid of the record whose id is `id`.
std::optional<Oid> find_record(Store& store, const TypeSpec& spec, std::string_view id);
// Where a save writes the record `id`.
struct RecordTarget {
  Oid oid;
  bool allocated = false;  // a new oid from new_oids(): nothing is stored there yet
  // The object at `oid` as resolve_record() read it, if it did: the save's first attempt
  // starts from it rather than loading it again (the commit checks its version).
  std::optional<StoredObject> object;
};
// `oid` if it holds the record `id`, else the oid the id is stored at, if any.
std::optional<Oid> locate_record(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                                 std::string_view id);
// locate_record(), else a new oid. An oid that holds another object (another record, as when
// the record was saved in another store, or when a store that lost its data gave the oid out
// again) is never the answer. Throws InvalidArgument if the record stored there is of another
// generation (save_record() would refuse it).
RecordTarget resolve_record(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                            std::string_view id);
// Throws LockLost unless the lock is held under its token now: a commit that only checks it.
void check_fence(Store& store, const LockCheck& fence);
// Throws InvalidArgument if saving the record `id` would replace one stored by another
// generation (which save_record() refuses), as resolve_record() does, but allocates nothing:
// for the check a save with dependencies makes before it writes anything.
void check_replaceable(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                       std::string_view id);
// Writes the record and its index entries in one commit and returns the oid it wrote. The
// commit checks the version of the object it replaces, so it is retried if the record changed
// between that read and the commit; if `oid` turns out to hold another object (or nothing,
// unless `allocated` says it is a new oid for this save), the record goes where
// resolve_record() says instead. `state` holds the fields. With `fence`, the commit applies only
// while that lock is held under its token (LockLost otherwise). Retries wait as
// Database::transaction's do, and stop as they do (`options`: max_retries, retry_delay,
// max_retry_delay), with ConflictError.
Oid save_record(Store& store, const TypeSpec& spec, RecordTarget target, const std::string& id,
                const Value::Map& state, const DatabaseOptions& options,
                const std::optional<LockCheck>& fence = std::nullopt);
// Deletes the record and its index entries; returns how many records were deleted (0 or 1).
// `oid` is where the record was; if it holds another object now, the record is looked up by id.
// Retries as save_record() does.
std::size_t remove_record(Store& store, const TypeSpec& spec, Oid oid, const std::string& id,
                          const DatabaseOptions& options,
                          const std::optional<LockCheck>& fence = std::nullopt);
// Every record of the type and generation, in oid order.
std::vector<RecordRow> list_records(Store& store, const TypeSpec& spec);
// Writes index entries for every record of the type (after an index was added).
std::size_t reindex_records(Store& store, const TypeSpec& spec);
// Throws InvalidArgument naming the field if `state` breaks a rule of `spec`.
void validate_state(const TypeSpec& spec, const Value::Map& state);

// A key, inside a field's stored value, of a map the C++ field type does not hold all of: a
// nested struct's stored field that this program's struct does not declare. Kept on save, as
// the record's own undeclared fields are.
struct NestedKey {
  std::vector<std::string> path;  // the field's name, then the keys of the maps down to it
  Value value;
};
// Appends to `out` each key of a map in `stored` that the map in the same place in `kept` lacks
// (looking into maps only: a list's elements are not matched up). `path` leads to `stored`.
void collect_dropped_keys(const Value& stored, const Value& kept, std::vector<std::string>& path,
                          std::vector<NestedKey>& out);
// Puts each key back in `state` where its path leads, if the maps on the way are still there and
// the key is not.
void restore_dropped_keys(Value::Map& state, const std::vector<NestedKey>& keys);

std::string to_record_json(const TypeSpec& spec, const std::string& id, const Value::Map& state);
// The fields (and "id", if present) of a to_record_json() text, checked against `spec`.
Value::Map from_record_json(const TypeSpec& spec, std::string_view text, std::string* id);

std::string lock_name(const TypeSpec& spec, const std::string& id);
// Takes the lock as `owner`: nullopt if it is still held by someone else after `wait` (nullopt
// wait: as long as it takes).
std::optional<std::uint64_t> acquire_lock(Store& store, const std::string& name,
                                          const std::string& owner, std::chrono::milliseconds ttl,
                                          std::optional<std::chrono::milliseconds> wait);
std::string new_lock_owner(const Repository& repository);

// `i` as a double, if a double holds it exactly (2^53 + 1 does not: it would become 2^53).
std::optional<double> exact_double(std::int64_t i);

}  // namespace detail

// ---- pointers ----

// A field that points to another record of type U: stored as a Ref naming U's type, resolved
// lazily (on first get()) through the repository of the record it was loaded with, or U's own.
// Holding the target keeps it alive; records that point at each other are fine to save and load
// (save with dependencies visits each record once) but keep each other in memory while both
// pointers are resolved: reset() one to break the loop.
template <typename U>
class Pointer {
 public:
  Pointer() = default;  // null
  Pointer(std::nullptr_t) {}
  Pointer(std::shared_ptr<U> target) : target_(std::move(target)) {}
  static Pointer to(Oid oid) {
    Pointer p;
    p.oid_ = oid;
    return p;
  }

  bool is_null() const { return !target_ && !oid_; }
  explicit operator bool() const { return !is_null(); }
  // The target's oid: nullopt for null, or a target never saved.
  std::optional<Oid> oid() const { return target_ ? target_->oid() : oid_; }
  bool resolved() const { return static_cast<bool>(target_); }

  // The target, loaded on first use. Throws InvalidArgument for a null pointer and NotFound if
  // the target does not exist (a dangling pointer).
  const std::shared_ptr<U>& get() const {
    if (target_) return target_;
    if (!oid_) throw InvalidArgument("null pointer to a " + std::string(type_name<U>()));
    auto repo = repo_ ? repo_ : U::type_repository();
    auto loaded = U::try_load(*oid_, {.repository = repo});
    if (!loaded) {
      throw NotFound("dangling pointer: " + std::string(type_name<U>()) + " object " + oid_->str() +
                     " does not exist");
    }
    target_ = std::move(loaded);
    return target_;
  }
  U* operator->() const { return get().get(); }
  U& operator*() const { return *get(); }

  // Drops the loaded target, keeping its oid (the next get() loads it again).
  void reset() {
    if (target_) oid_ = target_->oid();
    target_.reset();
  }
  void bind(std::shared_ptr<Repository> repository) { repo_ = std::move(repository); }
  // The repository the target is in, if known: the loaded target's, else the one the pointer
  // was loaded with.
  std::shared_ptr<Repository> repository() const { return target_ ? target_->repository() : repo_; }

  friend bool operator==(const Pointer& a, const Pointer& b) {
    if (a.target_ && b.target_) return a.target_ == b.target_;
    return a.oid() == b.oid() && a.is_null() == b.is_null();
  }

 private:
  mutable std::shared_ptr<U> target_;
  std::optional<Oid> oid_;
  std::shared_ptr<Repository> repo_;
};

namespace detail {

template <typename U>
struct Codec<Pointer<U>> {
  static Value to(const Pointer<U>& p, const FieldPath& path) {
    if (p.is_null()) return Value();
    std::optional<Oid> oid = p.oid();
    if (!oid) {
      throw_field_error(path, "points to a " + std::string(type_name<U>()) +
                                  " that was never saved: save it first, or save with "
                                  "{.dependencies = true}");
    }
    return Value(Ref{*oid, std::string(type_name<U>())});
  }
  static Pointer<U> from(const Value& v, const FieldPath& path) {
    if (v.is_null()) return Pointer<U>();
    expect_kind(path, v, Kind::ref);
    const Ref& ref = v.as_ref();
    if (!ref.type.empty() && ref.type != type_name<U>()) {
      throw_field_error(path, "stored pointer is to a \"" + ref.type +
                                  "\", the field points to a \"" + std::string(type_name<U>()) +
                                  "\"");
    }
    return Pointer<U>::to(ref.oid);
  }
};

}  // namespace detail

// ---- byte streams ----

// A field of bytes that grow by appending (repocket's ByteStream): the record stores a Ref to a
// ByteStream (typed.h) made at its first save, and Record::append() adds to that stream in its
// own small commit, never rewriting the record. Bytes appended before the first save wait in
// memory and are written by it.
class StreamField {
 public:
  std::optional<Oid> head() const { return head_; }
  const std::string& pending() const { return pending_; }

 private:
  template <typename T>
  friend class Record;
  friend struct detail::Codec<StreamField>;
  std::optional<Oid> head_;
  std::string pending_;
};

namespace detail {
template <>
struct Codec<StreamField> {
  static Value to(const StreamField& s, const FieldPath&) {
    return s.head_ ? Value(*s.head_) : Value();
  }
  static StreamField from(const Value& v, const FieldPath& path) {
    StreamField s;
    if (v.is_null()) return s;
    expect_kind(path, v, Kind::ref);
    s.head_ = v.as_ref().oid;
    return s;
  }
};
}  // namespace detail

// ---- field traits: the kind of each C++ field type ----

template <typename X>
struct FieldTraits {
  static constexpr FieldKind kind = FieldKind::object;
  static constexpr bool nullable = false;
  static std::string target() { return {}; }
};
#define CAIRN_DETAIL_FIELD_KIND(Type, Kind)            \
  template <>                                          \
  struct FieldTraits<Type> {                           \
    static constexpr FieldKind kind = FieldKind::Kind; \
    static constexpr bool nullable = false;            \
    static std::string target() { return {}; }         \
  };
CAIRN_DETAIL_FIELD_KIND(std::string, string)
CAIRN_DETAIL_FIELD_KIND(Bytes, bytes)
CAIRN_DETAIL_FIELD_KIND(Value, json)
CAIRN_DETAIL_FIELD_KIND(Uuid, uuid)
CAIRN_DETAIL_FIELD_KIND(Timestamp, timestamp)
CAIRN_DETAIL_FIELD_KIND(Decimal, decimal)
CAIRN_DETAIL_FIELD_KIND(double, floating)
CAIRN_DETAIL_FIELD_KIND(bool, boolean)
CAIRN_DETAIL_FIELD_KIND(StreamField, bytestream)
#undef CAIRN_DETAIL_FIELD_KIND

template <std::integral X>
requires(!std::same_as<X, bool>) struct FieldTraits<X> {
  static constexpr FieldKind kind = FieldKind::integer;
  static constexpr bool nullable = false;
  static std::string target() { return {}; }
};
template <typename X, typename A>
struct FieldTraits<std::vector<X, A>> {
  static constexpr FieldKind kind = FieldKind::list;
  static constexpr bool nullable = false;
  static std::string target() { return {}; }
};
template <typename X, typename C, typename A>
struct FieldTraits<std::map<std::string, X, C, A>> {
  static constexpr FieldKind kind = FieldKind::map;
  static constexpr bool nullable = false;
  static std::string target() { return {}; }
};
template <typename X>
struct FieldTraits<std::optional<X>> {
  static constexpr FieldKind kind = FieldTraits<X>::kind;
  static constexpr bool nullable = true;
  static std::string target() { return FieldTraits<X>::target(); }
};
template <typename U>
struct FieldTraits<Pointer<U>> {
  static constexpr FieldKind kind = FieldKind::pointer;
  static constexpr bool nullable = true;
  static std::string target() { return std::string(type_name<U>()); }
};
template <typename U>
struct FieldTraits<TypedRef<U>> {
  static constexpr FieldKind kind = FieldKind::pointer;
  static constexpr bool nullable = true;
  static std::string target() { return std::string(type_name<U>()); }
};

// ---- schema declarations ----

// What a type's `static void describe(cairn::Schema<T>& s)` may declare beyond its fields:
//   s.generation(1);                       // records of other generations refuse to load
//   s.index("house_name").index("age");    // secondary indexes
//   s.field("name").required();            // not null and not empty
//   s.field("created").auto_now();         // timestamp set on every save
//   s.field("token").auto_uuid();          // a random uuid at first save
//   s.field("age").check([](const cairn::Value& v) { return v.as_int() >= 0; }, "must be >= 0");
// Naming a field the type does not have, or asking something of a field of the wrong kind,
// throws InvalidArgument the first time the type is used.
template <typename T>
class Schema {
 public:
  class Field {
   public:
    Field(Schema& schema, FieldSpec& spec) : schema_(&schema), spec_(&spec) {}
    Field& index() {
      schema_->check_indexable(*spec_);
      spec_->indexed = true;
      return *this;
    }
    Field& required() {
      spec_->required = true;
      return *this;
    }
    Field& auto_now() {
      schema_->expect(*spec_, FieldKind::timestamp, "auto_now");
      spec_->auto_now = true;
      return *this;
    }
    Field& auto_uuid() {
      schema_->expect(*spec_, FieldKind::uuid, "auto_uuid");
      spec_->auto_uuid = true;
      return *this;
    }
    Field& check(std::function<bool(const Value&)> ok, std::string message) {
      spec_->checks.push_back(FieldCheck{std::move(ok), std::move(message)});
      return *this;
    }

   private:
    Schema* schema_;
    FieldSpec* spec_;
  };

  explicit Schema(TypeSpec& spec) : spec_(&spec) {}
  Schema& generation(std::int64_t n) {
    if (n < 0) throw InvalidArgument(spec_->name + ": a generation is >= 0");
    spec_->generation = n;
    return *this;
  }
  Field field(std::string_view name) { return Field(*this, mutable_field(name)); }
  Schema& index(std::string_view name) {
    field(name).index();
    return *this;
  }

 private:
  FieldSpec& mutable_field(std::string_view name) {
    spec_->at(name);  // throws for an unknown field
    for (FieldSpec& f : spec_->fields)
      if (f.name == name) return f;
    throw InvalidArgument(spec_->name + " has no field \"" + std::string(name) + "\"");
  }
  void expect(const FieldSpec& f, FieldKind kind, std::string_view what) const {
    if (f.kind != kind) {
      throw InvalidArgument(spec_->name + "." + f.name + ": " + std::string(what) + " needs a " +
                            std::string(to_string(kind)) + " field, not a " +
                            std::string(to_string(f.kind)));
    }
  }
  void check_indexable(const FieldSpec& f) const {
    if (f.kind == FieldKind::list || f.kind == FieldKind::map || f.kind == FieldKind::object ||
        f.kind == FieldKind::bytestream) {
      throw InvalidArgument(spec_->name + "." + f.name + ": a " + std::string(to_string(f.kind)) +
                            " field cannot be indexed");
    }
  }
  TypeSpec* spec_;
};

// ---- options ----

struct MakeOptions {
  std::string id = {};                          // "" = a random uuid
  std::shared_ptr<Repository> repository = {};  // nullptr = the type's
};

struct SaveOptions {
  bool dependencies = false;  // save the records this one points to first...
  int depth = 1;              // ...and theirs, this many levels down
};

struct LoadOptions {
  bool cache = true;  // false: read the store again, into the cached object if there is one
  std::shared_ptr<Repository> repository = {};  // nullptr = the type's
};

struct ListOptions {
  std::shared_ptr<Repository> repository = {};  // nullptr = the type's
};

struct LockOptions {
  std::chrono::milliseconds ttl{30'000};  // the lock expires this long after it is taken
  bool blocking = false;                  // wait for a held lock...
  // ...at most this long (nullopt: as long as it takes). A held lock is never taken over.
  std::optional<std::chrono::milliseconds> wait_timeout = {};
};

// A lock taken by lock_context(): released when destroyed, if it was taken, and only if this
// guard still holds it (never a lock taken by another call, even by the same record). While it
// holds the lock, the record's saves and removals are fenced by it, as under lock().
class RecordLock {
 public:
  RecordLock() = default;
  RecordLock(std::shared_ptr<Repository> repository, std::string name, std::string owner,
             std::optional<std::uint64_t> token, std::weak_ptr<RecordBase> record = {})
      : repo_(std::move(repository)),
        name_(std::move(name)),
        owner_(std::move(owner)),
        token_(token),
        record_(std::move(record)) {}
  RecordLock(RecordLock&& other) noexcept
      : repo_(std::move(other.repo_)),
        name_(std::move(other.name_)),
        owner_(std::move(other.owner_)),
        token_(std::exchange(other.token_, std::nullopt)),
        record_(std::move(other.record_)) {}
  RecordLock& operator=(RecordLock&& other) noexcept {
    if (this != &other) {
      release();
      repo_ = std::move(other.repo_);
      name_ = std::move(other.name_);
      owner_ = std::move(other.owner_);
      token_ = std::exchange(other.token_, std::nullopt);
      record_ = std::move(other.record_);
    }
    return *this;
  }
  RecordLock(const RecordLock&) = delete;
  RecordLock& operator=(const RecordLock&) = delete;
  ~RecordLock() { release(); }

  bool acquired() const { return token_.has_value(); }
  explicit operator bool() const { return acquired(); }
  // The fencing token the store issued (nullopt if not acquired).
  std::optional<std::uint64_t> token() const { return token_; }
  // Releases now; returns whether this guard still held the lock.
  bool release() noexcept;

 private:
  std::shared_ptr<Repository> repo_;
  std::string name_;
  std::string owner_;
  std::optional<std::uint64_t> token_;
  std::weak_ptr<RecordBase> record_;  // whose saves this lock fences
};

// ---- records ----

// What every Record<T> has, whatever T is.
class RecordBase : public std::enable_shared_from_this<RecordBase> {
 public:
  virtual ~RecordBase() = default;
  virtual const TypeSpec& type_spec() const = 0;

  // The record's id: given by the user or a random uuid, fixed at make() or first save.
  const std::string& id() const { return id_; }
  // The stored object's oid; nullopt until saved (and again after remove()).
  std::optional<Oid> oid() const { return oid_; }
  bool saved() const { return oid_.has_value(); }
  // A Ref value naming this record (InvalidArgument if it was never saved).
  Ref ref() const;

  // The per-instance repository if one was set, else the type's.
  std::shared_ptr<Repository> repository() const;
  void set_repository(std::shared_ptr<Repository> repository) { repo_ = std::move(repository); }

  // Stored fields this program's type does not declare, kept as they are on save.
  const Value::Map& unknown_fields() const { return extra_; }

  // Saves this record as part of a save with dependencies: `visited` holds records already
  // saved by it, so that each is saved once.
  virtual void save_visiting(int depth, std::unordered_set<const RecordBase*>& visited) = 0;
  // Before a save with dependencies writes anything: refuses a pointer to a record in another
  // repository, a save over a record stored by another generation, and a save under a lock
  // already lost, in this record or in those it points to, `depth` levels down.
  virtual void check_pointers_visiting(int depth,
                                       std::unordered_set<const RecordBase*>& visited) = 0;

 protected:
  RecordBase() = default;
  RecordBase(const RecordBase&) = default;
  RecordBase& operator=(const RecordBase&) = default;

  // Takes the record out of the identity map it is in, if any.
  void leave_identity_map();

  std::string id_;
  std::optional<Oid> oid_;
  std::shared_ptr<Repository> repo_;  // nullptr = the type's
  Value::Map extra_;
  std::vector<detail::NestedKey> nested_extra_;  // undeclared keys inside fields, as extra_
  std::string lock_owner_;  // the owner name of the last lock() that succeeded, until unlock()
  LockCheck locked_;        // its lock's name and fencing token
  // The lock this record holds, by lock() or a lock_context() guard, with its fencing token:
  // saves, removals and stream appends commit only while it is held under it.
  std::optional<LockCheck> fence_;

 private:
  friend class Repository;
  friend class RecordLock;
  // The identity map this object is in (Repository::remember), and under which oid. A copy is
  // in none (it is another object); an assigned-to record stays in its own.
  struct Mapping {
    std::weak_ptr<Repository> in;
    Oid oid;
    Mapping() = default;
    Mapping(const Mapping&) {}
    Mapping& operator=(const Mapping&) { return *this; }
  };
  Mapping mapped_;
};

inline bool RecordLock::release() noexcept {
  if (!token_) return false;
  std::uint64_t token = *std::exchange(token_, std::nullopt);
  // The record's saves are no longer fenced by it (unless a later lock() fences them).
  if (std::shared_ptr<RecordBase> record = record_.lock()) {
    if (record->fence_ && record->fence_->name == name_ && record->fence_->token == token) {
      record->fence_.reset();
    }
  }
  try {
    return repo_->store().unlock(name_, owner_);
  } catch (...) {
    return false;  // the lock expires by its ttl
  }
}

namespace detail {
template <typename T>
concept Describable = requires(Schema<T>& s) {
  T::describe(s);
};

template <typename X>
struct IsPointer : std::false_type {};
template <typename U>
struct IsPointer<Pointer<U>> : std::true_type {};
template <typename X>
struct IsPointerVector : std::false_type {};
template <typename U, typename A>
struct IsPointerVector<std::vector<Pointer<U>, A>> : std::true_type {};

// Calls fn(pointer) for every Pointer in a field (directly, in an optional or in a vector).
template <typename X, typename Fn>
void for_each_pointer_in(X& field, Fn& fn) {
  if constexpr (IsPointer<X>::value) {
    fn(field);
  } else if constexpr (requires {
                         field.has_value();
                         *field;
                       }) {
    if (field) for_each_pointer_in(*field, fn);
  } else if constexpr (IsPointerVector<X>::value) {
    for (auto& item : field)
      fn(item);
  }
}
}  // namespace detail

// The active-record API for T (CRTP): `struct T : cairn::Record<T> { fields... };` followed by
// CAIRN_TYPE(T, "schema.Name", fields...). T must not declare members named like the API below.
template <typename T>
class Record : public RecordBase {
 public:
  using Ptr = std::shared_ptr<T>;

  // The type's description, built on first use.
  static const TypeSpec& spec() {
    // Built once and never changed: a constant, not shared mutable state.
    static const TypeSpec built = build_spec();
    return built;
  }
  const TypeSpec& type_spec() const override { return spec(); }

  // ---- the type's repository ----
  // Named apart from the per-record set_repository(), which a static of the same name hid:
  // a record's own repository was set for its whole type.
  static void set_type_repository(std::shared_ptr<Repository> repository) {
    RepositoryRegistry::process().set_for_type(spec().name, std::move(repository));
  }
  static std::shared_ptr<Repository> type_repository() {
    return RepositoryRegistry::process().for_type(spec().name);
  }

  // ---- making and loading ----

  // A new, unsaved record. Fields are set by name, checked as set() does.
  static Ptr make(const Value::Map& fields = {}, MakeOptions options = {}) {
    auto record = std::make_shared<T>();
    record->id_ = options.id.empty() ? Uuid::random().str() : std::move(options.id);
    record->repo_ = std::move(options.repository);
    for (const auto& [name, value] : fields)
      record->set(name, value);
    return record;
  }
  template <typename Fn>
  requires std::invocable<Fn&, T&>
  static Ptr make(Fn&& init, MakeOptions options = {}) {
    Ptr record = make({}, std::move(options));
    init(*record);
    return record;
  }
  // make() and save().
  static Ptr create(const Value::Map& fields = {}, MakeOptions options = {}) {
    Ptr record = make(fields, std::move(options));
    record->save();
    return record;
  }
  template <typename Fn>
  requires std::invocable<Fn&, T&>
  static Ptr create(Fn&& init, MakeOptions options = {}) {
    Ptr record = make(std::forward<Fn>(init), std::move(options));
    record->save();
    return record;
  }

  // The record with this id (or oid). With options.cache (the default) a record already loaded
  // from the repository is returned as it is, unread; without, it is read again into that same
  // object. Throws NotFound if there is no such record, InvalidArgument if it has another type
  // or generation.
  static Ptr load(std::string_view id, LoadOptions options = {}) {
    Ptr record = try_load(id, std::move(options));
    if (!record) throw NotFound(spec().name + " \"" + std::string(id) + "\" does not exist");
    return record;
  }
  static Ptr load(Oid oid, LoadOptions options = {}) {
    Ptr record = try_load(oid, std::move(options));
    if (!record) throw NotFound(spec().name + " object " + oid.str() + " does not exist");
    return record;
  }
  // As load(), but nullptr if there is no such record.
  static Ptr try_load(std::string_view id, LoadOptions options = {}) {
    auto repo = options.repository ? options.repository : type_repository();
    std::optional<Oid> oid = detail::find_record(repo->store(), spec(), id);
    if (!oid) return nullptr;
    options.repository = repo;
    return try_load(*oid, std::move(options));
  }
  static Ptr try_load(Oid oid, LoadOptions options = {}) {
    auto repo = options.repository ? options.repository : type_repository();
    Ptr cached = cached_in(*repo, oid);
    if (cached && options.cache) return cached;
    std::optional<detail::RecordRow> row = detail::load_record(repo->store(), spec(), oid);
    if (!row) return nullptr;
    return materialize(repo, *row);
  }

  // Every record of the type (and generation), in oid order. Records already loaded are the
  // same objects, read again (tethys's list()).
  static std::vector<Ptr> list(ListOptions options = {}) {
    auto repo = options.repository ? options.repository : type_repository();
    std::vector<Ptr> out;
    for (const detail::RecordRow& row : detail::list_records(repo->store(), spec()))
      out.push_back(materialize(repo, row));
    return out;
  }

  // A query over the type's records (query.h).
  static Query<T> find(std::shared_ptr<Repository> repository = nullptr);

  // Writes index entries for every stored record: needed once after adding an index to a type
  // that already has records. Returns how many records were indexed.
  static std::size_t reindex(std::shared_ptr<Repository> repository = nullptr) {
    auto repo = repository ? repository : type_repository();
    return detail::reindex_records(repo->store(), spec());
  }

  // The record (fields, extras and id) from a stored row, through the repository's identity map:
  // the cached object is refreshed if there is one. For query.h.
  static Ptr materialize(const std::shared_ptr<Repository>& repo, const detail::RecordRow& row) {
    auto held = repo->hold_identity();
    if (Ptr cached = cached_in(*repo, row.oid)) {
      cached->assign(row, repo, true);
      return cached;
    }
    auto record = std::make_shared<T>();
    record->assign(row, repo, false);
    // It stays with the repository it was loaded from, even the type's after that changes.
    record->repo_ = repo;
    repo->remember(row.oid, record);
    return record;
  }

  // ---- one record ----

  // Checks every field and writes the record (with its index entries, in one commit). With
  // options.dependencies, first saves the records it points to, options.depth levels down.
  // Throws InvalidArgument naming the field that breaks a rule; nothing is written then. A save
  // that conflicts with another save of the record runs again (as Database::transaction does,
  // DatabaseOptions), and throws ConflictError if it still conflicts after max_retries retries.
  T& save(SaveOptions options = {}) {
    int depth = options.dependencies ? options.depth : 0;
    if (depth > 0) {
      // Before the first dependency is saved: a refused save writes nothing, theirs included.
      std::unordered_set<const RecordBase*> checked;
      check_pointers_visiting(depth, checked);
    }
    std::unordered_set<const RecordBase*> visited;
    save_visiting(depth, visited);
    return self();
  }

  void check_pointers_visiting(int depth, std::unordered_set<const RecordBase*>& visited) override {
    if (!visited.insert(this).second) return;
    auto repo = repository();
    check_pointer_repositories(repo);
    if (!id_.empty()) detail::check_replaceable(repo->store(), spec(), oid_, id_);
    if (fence_) detail::check_fence(repo->store(), *fence_);
    if (depth > 0) {
      for_each_pointer([&](auto& pointer) {
        if (pointer.resolved()) pointer.get()->check_pointers_visiting(depth - 1, visited);
      });
    }
  }

  void save_visiting(int depth, std::unordered_set<const RecordBase*>& visited) override {
    if (!visited.insert(this).second) return;
    auto repo = repository();
    Store& store = repo->store();
    // What this save changes in the object before its commit, undone if it fails, so that a
    // failed save leaves the record as it was.
    std::vector<std::function<void()>> undo;
    const std::string id_before = id_;
    if (id_.empty()) id_ = Uuid::random().str();
    const std::optional<Oid> before = oid_;
    // The oid to write: the record's own if it still holds this record in this repository, else
    // the one its id is stored at (saving overwrites it, an upsert), else a new one. Never an
    // oid that holds another record, as after a move to another repository. Known before the
    // dependencies are saved, so that their pointers to this record name it.
    detail::RecordTarget target;
    try {
      target = detail::resolve_record(store, spec(), oid_, id_);
      oid_ = target.oid;
      prepare_fields(undo);
      // Before the dependencies are saved: a refused save writes nothing, theirs included.
      check_pointer_repositories(repo);
      if (depth > 0) {
        for_each_pointer([&](auto& pointer) {
          if (pointer.resolved()) pointer.get()->save_visiting(depth - 1, visited);
        });
      }
      Value::Map state = stored_state();
      detail::validate_state(spec(), state);
      make_streams(repo, undo);
      state = stored_state();
      oid_ = detail::save_record(store, spec(), std::move(target), id_, state,
                                 repo->database().options(), fence_);
    } catch (...) {
      for (auto it = undo.rbegin(); it != undo.rend(); ++it)
        (*it)();
      oid_ = before;
      id_ = id_before;
      throw;
    }
    repo->remember(*oid_, shared_self());
    flush_streams(repo);
  }

  // Reads the record again. Returns it, or nullptr (leaving the object as it was) if it is no
  // longer stored.
  Ptr refresh() {
    auto repo = repository();
    std::optional<Oid> oid = detail::locate_record(repo->store(), spec(), oid_, id_);
    if (!oid) return nullptr;
    std::optional<detail::RecordRow> row = detail::load_record(repo->store(), spec(), *oid);
    if (!row) return nullptr;
    auto held = repo->hold_identity();
    assign(*row, repo, true);
    repo->remember(*oid, shared_self());
    return shared_self();
  }

  // Deletes the stored record and its index entries; returns how many records were deleted
  // (0 if it was not stored). The object keeps its fields and id and can be saved again; its
  // byte streams are dropped with it (saved again, it starts empty ones).
  std::size_t remove() {
    if (!oid_) return 0;
    auto repo = repository();
    std::size_t n = detail::remove_record(repo->store(), spec(), *oid_, id_,
                                          repo->database().options(), fence_);
    leave_identity_map();
    oid_.reset();
    // The streams went with the record (pack() drops them): saved again, it starts new ones.
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view, auto& member) {
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(member)>, StreamField>) {
        member.head_.reset();
      }
    });
    return n;
  }

  // ---- fields by name ----

  // The field's current value. Throws InvalidArgument for an unknown field.
  Value get(std::string_view field) const {
    const FieldSpec& f = spec().at(field);
    Value out;
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, const auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      if (name == f.name) out = detail::Codec<Field>::to(member, path().field(name));
    });
    return out;
  }
  // Sets the field after checking the value (kind, null, rules); throws InvalidArgument naming
  // the type and field, leaving the field unchanged. "id" sets the id of an unsaved record.
  void set(std::string_view field, Value value) {
    if (field == "id" && !spec().find("id")) {
      if (!value.is_string() || value.as_string().empty()) {
        throw InvalidArgument(spec().name + ".id: must be a non-empty string");
      }
      if (oid_ && value.as_string() != id_) {
        throw InvalidArgument(spec().name + ".id: a saved record keeps its id");
      }
      id_ = value.as_string();
      return;
    }
    const FieldSpec& f = spec().at(field);
    if (f.kind == FieldKind::floating && value.is_int()) {
      std::optional<double> d = detail::exact_double(value.as_int());
      if (!d) {
        throw InvalidArgument(spec().name + "." + f.name + ": the integer " +
                              std::to_string(value.as_int()) + " has no exact float value");
      }
      value = Value(*d);
    }
    spec().validate(f, value);
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      if (name != f.name) return;
      Field decoded = detail::Codec<Field>::from(value, path().field(name));
      // A key a nested struct does not declare would be dropped here: refused, as an unknown
      // field of the record itself is.
      std::vector<detail::NestedKey> dropped;
      collect_dropped_keys<Field>(name, value, decoded, dropped);
      if (!dropped.empty()) {
        std::string where = spec().name;
        for (const std::string& key : dropped.front().path)
          where += "." + key;
        throw InvalidArgument(where + ": unknown field");
      }
      member = std::move(decoded);
    });
  }

  // ---- byte streams ----

  // Appends to a StreamField: one commit that writes the stream's last chunk and head, not the
  // record. Before the record's first save the bytes wait in memory for it.
  void append(std::string_view field, std::string_view bytes) {
    StreamField& stream = stream_field(field);
    if (!oid_ || !stream.head_) {
      stream.pending_.append(bytes);
      return;
    }
    append_to_stream(*repository(), *stream.head_, bytes);
  }
  // Every byte of a StreamField: what is stored, then what waits for the first save.
  std::string read(std::string_view field) {
    StreamField& stream = stream_field(field);
    std::string out;
    if (stream.head_) {
      Ref head{*stream.head_, {}};
      out =
          repository()->database().view([&](View& v) { return ByteStream::open(v, head).read(); });
    }
    return out + stream.pending_;
  }

  // ---- JSON ----

  // {"id": {"type": "id", "value": "..."}, "name": {"type": "string", "value": "Harry"}, ...}:
  // every field with its kind, so the text says what each value is (docs/records.md).
  std::string to_json() const { return detail::to_record_json(spec(), id_, field_values()); }
  // Sets the fields (and id) a to_json() text holds; the others keep their values.
  void assign_json(std::string_view text) {
    std::string id;
    Value::Map fields = detail::from_record_json(spec(), text, &id);
    if (!id.empty()) set("id", Value(id));
    for (const auto& [name, value] : fields)
      set(name, value);
  }
  static Ptr from_json(std::string_view text, MakeOptions options = {}) {
    Ptr record = make({}, std::move(options));
    record->assign_json(text);
    return record;
  }

  // ---- locks (never taken over while held; see LockOptions) ----

  // Takes the record's lock; returns whether it did. Locks are not re-entrant: locking again
  // while this record holds it waits (or fails) like anyone else.
  bool lock(LockOptions options = {}) {
    auto repo = repository();
    std::string owner = detail::new_lock_owner(*repo);
    std::string name = lock_name();
    auto token = detail::acquire_lock(repo->store(), name, owner, options.ttl, wait_of(options));
    if (!token) return false;
    lock_owner_ = std::move(owner);
    locked_ = LockCheck{std::move(name), *token};
    fence_ = locked_;
    return true;
  }
  // Releases the lock the last successful lock() took, if it still holds it.
  bool unlock() {
    if (lock_owner_.empty()) return false;
    // By the name it was taken under: the id may have changed since (before a first save).
    bool released = repository()->store().unlock(locked_.name, lock_owner_);
    lock_owner_.clear();
    // Not a lock_context() guard's fence, taken since this lock() expired.
    if (fence_ && fence_->token == locked_.token && fence_->name == locked_.name) fence_.reset();
    locked_ = {};
    return released;
  }
  // A guard that holds the lock if it could be taken (check acquired()).
  RecordLock lock_context(LockOptions options = {}) {
    auto repo = repository();
    std::string owner = detail::new_lock_owner(*repo);
    std::string name = lock_name();
    auto token = detail::acquire_lock(repo->store(), name, owner, options.ttl, wait_of(options));
    if (token) fence_ = LockCheck{name, *token};
    return RecordLock(repo, std::move(name), std::move(owner), token, weak_from_this());
  }

 protected:
  Record() = default;

 private:
  friend T;

  static detail::FieldPath path() {
    return detail::FieldPath{nullptr, detail::FieldPath::Step::top, type_name<T>(), 0};
  }
  T& self() { return static_cast<T&>(*this); }
  const T& self() const { return static_cast<const T&>(*this); }
  Ptr shared_self() {
    std::weak_ptr<RecordBase> weak = weak_from_this();
    if (weak.expired()) {
      throw InvalidArgument(spec().name +
                            ": records are used through std::shared_ptr; make them with "
                            "make(), create() or load()");
    }
    return std::static_pointer_cast<T>(weak.lock());
  }
  static Ptr cached_in(const Repository& repo, Oid oid) {
    return std::static_pointer_cast<T>(repo.cached(oid, spec()));
  }
  std::string lock_name() {
    if (id_.empty()) id_ = Uuid::random().str();
    return detail::lock_name(spec(), id_);
  }
  static std::optional<std::chrono::milliseconds> wait_of(const LockOptions& options) {
    if (!options.blocking) return std::chrono::milliseconds(0);
    return options.wait_timeout;
  }

  StreamField& stream_field(std::string_view field) {
    const FieldSpec& f = spec().at(field);
    if (f.kind != FieldKind::bytestream) {
      throw InvalidArgument(spec().name + "." + f.name + ": not a bytestream field");
    }
    StreamField* found = nullptr;
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, auto& member) {
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(member)>, StreamField>) {
        if (name == f.name) found = &member;
      }
    });
    return *found;
  }

  // Streams get their ByteStream before the record that refers to it is written (an orphan
  // stream, if that write fails, goes with the next pack). `undo` gets what puts them back.
  void make_streams(const std::shared_ptr<Repository>& repo,
                    std::vector<std::function<void()>>& undo) {
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view, auto& member) {
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(member)>, StreamField>) {
        if (!member.head_) {
          undo.push_back([&member] { member.head_.reset(); });
          member.head_ = repo->database().transaction(
              [](Txn& tx) { return ByteStream::create(tx).ref().oid; });
        }
      }
    });
  }
  // Writes bytes appended before the first save.
  // One commit that appends to the stream whose head is `head`, fenced by the record's lock.
  void append_to_stream(Repository& repo, Oid head, std::string_view bytes) {
    repo.database().transaction([&](Txn& tx) {
      if (fence_) tx.require_lock(fence_->name, fence_->token);
      ByteStream::open(tx, Ref{head, {}}).append(bytes);
    });
  }
  void flush_streams(const std::shared_ptr<Repository>& repo) {
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view, auto& member) {
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(member)>, StreamField>) {
        if (member.head_ && !member.pending_.empty()) {
          append_to_stream(*repo, *member.head_, member.pending_);
          member.pending_.clear();
        }
      }
    });
  }

  // Refuses a pointer to a record in another repository: a pointer stores only the oid, which
  // in this repository names another record, or none.
  void check_pointer_repositories(const std::shared_ptr<Repository>& repo) {
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, auto& member) {
      auto check = [&](auto& pointer) {
        std::shared_ptr<Repository> there = pointer.repository();
        if (there && there != repo) {
          std::string which = id_.empty() ? "" : " of \"" + id_ + "\"";
          throw InvalidArgument(spec().name + "." + std::string(name) + which +
                                ": points to a record in another repository (a pointer stores "
                                "only an oid, which names another record in this one)");
        }
      };
      detail::for_each_pointer_in(member, check);
    });
  }

  template <typename Fn>
  void for_each_pointer(Fn&& fn) {
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view, auto& member) {
      detail::for_each_pointer_in(member, fn);
    });
  }

  // auto_now and auto_uuid fields, before a save. `undo` gets what puts back their values.
  void prepare_fields(std::vector<std::function<void()>>& undo) {
    const TypeSpec& s = spec();
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      const FieldSpec* f = s.find(name);
      auto keep = [&] { undo.push_back([&member, old = member] { member = old; }); };
      if constexpr (std::is_same_v<Field, Timestamp> ||
                    std::is_same_v<Field, std::optional<Timestamp>>) {
        if (f->auto_now) {
          keep();
          member = Timestamp::now();
        }
      } else if constexpr (std::is_same_v<Field, Uuid>) {
        if (f->auto_uuid && member == Uuid{}) {
          keep();
          member = Uuid::random();
        }
      } else if constexpr (std::is_same_v<Field, std::optional<Uuid>>) {
        if (f->auto_uuid && !member) {
          keep();
          member = Uuid::random();
        }
      }
    });
  }

  Value::Map field_values() const {
    Value::Map state;
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, const auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      state.insert_or_assign(std::string(name),
                             detail::Codec<Field>::to(member, path().field(name)));
    });
    return state;
  }
  // What save writes: the fields, the stored fields this type does not declare, and "$gen".
  Value::Map stored_state() const {
    Value::Map state = extra_;
    for (auto& [name, value] : field_values())
      state.insert_or_assign(name, std::move(value));
    detail::restore_dropped_keys(state, nested_extra_);
    state.insert_or_assign("$gen", Value(spec().generation));
    return state;
  }

  // Sets every field from a stored row (missing fields take their defaults). `checked`: decode
  // into a scratch object first, so that a bad row leaves this one unchanged.
  void assign(const detail::RecordRow& row, const std::shared_ptr<Repository>& repo, bool checked) {
    if (checked) {
      T scratch;
      scratch.decode_fields(row.state, repo);
    }
    decode_fields(row.state, repo);
    nested_extra_ = dropped_keys(row.state);
    extra_.clear();
    for (const auto& [name, value] : row.state) {
      if (name != "$gen" && !spec().find(name)) extra_.insert_or_assign(name, value);
    }
    id_ = row.key;
    oid_ = row.oid;
  }
  // What decoding `state` into the fields left out: keys of nested structs this program does
  // not declare. Only fields that may hold a struct are compared.
  std::vector<detail::NestedKey> dropped_keys(const Value::Map& state) const {
    std::vector<detail::NestedKey> out;
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, const auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      auto it = state.find(name);
      if (it != state.end()) collect_dropped_keys<Field>(name, it->second, member, out);
    });
    return out;
  }
  template <typename Field>
  void collect_dropped_keys(std::string_view name, const Value& stored, const Field& decoded,
                            std::vector<detail::NestedKey>& out) const {
    constexpr FieldKind kind = FieldTraits<Field>::kind;
    if constexpr (kind == FieldKind::object || kind == FieldKind::map) {
      if (!stored.is_map()) return;
      std::vector<std::string> keys{std::string(name)};
      detail::collect_dropped_keys(stored, detail::Codec<Field>::to(decoded, path().field(name)),
                                   keys, out);
    }
  }
  void decode_fields(const Value::Map& state, const std::shared_ptr<Repository>& repo) {
    const TypeSpec& s = spec();
    cairn_visit_fields(TypeTag<T>{}, self(), [&](std::string_view name, auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      auto it = state.find(name);
      const Value& stored = it != state.end() ? it->second : s.find(name)->default_value;
      member = detail::Codec<Field>::from(stored, path().field(name));
    });
    for_each_pointer([&](auto& pointer) { pointer.bind(repo); });
  }

  static TypeSpec build_spec() {
    TypeSpec s;
    s.name = std::string(type_name<T>());
    T probe;
    cairn_visit_fields(TypeTag<T>{}, probe, [&](std::string_view name, const auto& member) {
      using Field = std::remove_cvref_t<decltype(member)>;
      static_assert(detail::Codable<Field>, "cairn: a field of this type cannot be stored");
      FieldSpec f;
      f.name = std::string(name);
      f.kind = FieldTraits<Field>::kind;
      f.nullable = FieldTraits<Field>::nullable || f.kind == FieldKind::json ||
                   f.kind == FieldKind::bytestream;
      f.target = FieldTraits<Field>::target();
      f.default_value = detail::Codec<Field>::to(member, path().field(name));
      s.fields.push_back(std::move(f));
    });
    if constexpr (detail::Describable<T>) {
      Schema<T> schema(s);
      T::describe(schema);
    }
    s.check_index_types();
    return s;
  }
};

}  // namespace cairn

// Record<T>::find() is defined with the queries.
#include "cairn/query.h"  // IWYU pragma: export
