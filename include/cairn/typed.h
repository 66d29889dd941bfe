// Typed objects: plain structs stored as objects of the object layer (database.h).
//
//   struct Message { std::string text; cairn::Timestamp sent_at; };
//   CAIRN_TYPE(Message, "hello_world.Message", text, sent_at);   // in Message's namespace
//
//   db.transaction([&](cairn::Txn& tx) {
//     cairn::TypedRef<Message> ref = cairn::create(tx, Message{"hi", cairn::Timestamp::now()});
//     cairn::modify(tx, ref, [](Message& m) { m.text += "!"; });
//     Message copy = cairn::get(tx, ref);
//   });
//
// A typed object's state is a Map keyed by field name, and its store type (store.h) is the
// name given to CAIRN_TYPE, so scan_type() lists it. Loading is forgiving of schema changes:
// fields missing from the stored map keep their default value and stored fields the struct does
// not declare are ignored (and kept by modify()). A stored field of the wrong kind throws
// InvalidArgument naming the type and the field.
//
// Field types: bool, integers (not char), double (also loads a stored integer), std::string,
// Bytes, Decimal, Timestamp, Uuid, Value (any value), std::vector<X>, std::map<std::string, X>,
// std::optional<X> (nullopt is stored as null), TypedRef<U>, and other CAIRN_TYPE structs
// (embedded as a nested map, without their type name).
//
// TypedRef<T> is the typed counterpart of the Ref value (value.h). ByteStream, at the end, is a
// byte sequence that grows by appending without rewriting what is stored.
#pragma once

#include <algorithm>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cairn/database.h"
#include "cairn/error.h"
#include "cairn/oid.h"
#include "cairn/store.h"
#include "cairn/value.h"

namespace cairn {

// The argument through which CAIRN_TYPE's functions are found (by argument-dependent lookup, in
// the namespace of T).
template <typename T>
struct TypeTag {};

// A struct CAIRN_TYPE has made storable.
template <typename T>
concept Storable = std::is_default_constructible_v<T> && requires {
  { cairn_type_name(TypeTag<T>{}) } -> std::convertible_to<std::string_view>;
};

// The stored type name CAIRN_TYPE gave T.
template <typename T>
constexpr std::string_view type_name() {
  return cairn_type_name(TypeTag<T>{});
}

// A reference to a stored object of type T: an oid, or null. It is only an id, so references
// may form cycles; resolving it (get, modify) is explicit and goes through a transaction or
// connection. Stored as a Ref value naming T's type (a null one as null). T may be incomplete
// where a TypedRef<T> is declared.
template <typename T>
class TypedRef {
 public:
  TypedRef() = default;  // null
  explicit TypedRef(Oid oid) : oid_(oid) {}

  bool is_null() const { return !oid_.has_value(); }
  explicit operator bool() const { return oid_.has_value(); }
  // Throws InvalidArgument for a null reference.
  Oid oid() const {
    if (!oid_) throw InvalidArgument("null reference to a " + std::string(type_name<T>()));
    return *oid_;
  }
  // The untyped Ref value naming T's type (Object, Txn::get and friends take it).
  Ref ref() const { return Ref{oid(), std::string(type_name<T>())}; }

  // Null orders before every oid.
  friend auto operator<=>(const TypedRef&, const TypedRef&) = default;

 private:
  std::optional<Oid> oid_;
};

namespace detail {

// Where in a value being converted an error happened, for messages such as
// `hello_world.Message.tags[2]`: a chain of steps on the stack, formatted only on error.
struct FieldPath {
  enum class Step { top, field, index, key };
  const FieldPath* parent = nullptr;
  Step step = Step::top;
  std::string_view name;  // the type name (top), field name or map key
  std::size_t index = 0;

  FieldPath field(std::string_view field_name) const {
    return FieldPath{this, Step::field, field_name, 0};
  }
  FieldPath at(std::size_t i) const { return FieldPath{this, Step::index, {}, i}; }
  FieldPath key(std::string_view k) const { return FieldPath{this, Step::key, k, 0}; }

  std::string str() const {
    std::string out = parent ? parent->str() : std::string();
    switch (step) {
      case Step::top:
        out += name;
        break;
      case Step::field:
        if (!out.empty()) out += '.';
        out += name;
        break;
      case Step::index:
        out += '[' + std::to_string(index) + ']';
        break;
      case Step::key:
        out += "[\"";
        out += name;
        out += "\"]";
        break;
    }
    return out;
  }
};

[[noreturn]] inline void throw_field_error(const FieldPath& path, std::string_view problem) {
  std::string where = path.str();
  if (where.empty()) where = "value";
  throw InvalidArgument(where + ": " + std::string(problem));
}

[[noreturn]] inline void throw_wrong_kind(const FieldPath& path, Kind wanted, const Value& got) {
  throw_field_error(path, "expected " + std::string(to_string(wanted)) + ", stored value is " +
                              std::string(to_string(got.kind())));
}

inline void expect_kind(const FieldPath& path, const Value& value, Kind wanted) {
  if (value.kind() != wanted) throw_wrong_kind(path, wanted, value);
}

// Codec<X>: to(const X&, path) -> Value and from(const Value&, path) -> X, one specialization
// per supported field type.
template <typename X>
struct Codec;

template <typename X>
concept Codable = requires(const X& x, const Value& v, const FieldPath& p) {
  { Codec<X>::to(x, p) } -> std::same_as<Value>;
  { Codec<X>::from(v, p) } -> std::same_as<X>;
};

template <typename T>
concept PlainScalar =
    std::same_as<T, double> || std::same_as<T, std::string> || std::same_as<T, Bytes> ||
    std::same_as<T, Decimal> || std::same_as<T, Timestamp> || std::same_as<T, Uuid>;

template <>
struct Codec<bool> {
  static Value to(bool b, const FieldPath&) { return Value(b); }
  static bool from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::boolean);
    return v.as_bool();
  }
};

template <std::integral X>
requires(!std::same_as<X, bool> && !std::same_as<X, char> && !std::same_as<X, wchar_t> &&
         !std::same_as<X, char8_t> && !std::same_as<X, char16_t> &&
         !std::same_as<X, char32_t>) struct Codec<X> {
  static Value to(X n, const FieldPath& p) {
    if constexpr (std::is_unsigned_v<X> && sizeof(X) >= sizeof(std::int64_t)) {
      if (n > static_cast<X>(std::numeric_limits<std::int64_t>::max())) {
        throw_field_error(p, std::to_string(n) + " does not fit a stored integer (int64)");
      }
    }
    return Value(static_cast<std::int64_t>(n));
  }
  static X from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::integer);
    std::int64_t n = v.as_int();
    if (!std::in_range<X>(n)) {
      throw_field_error(p,
                        "stored integer " + std::to_string(n) + " is out of range for the field");
    }
    return static_cast<X>(n);
  }
};

template <>
struct Codec<double> {
  static Value to(double d, const FieldPath&) { return Value(d); }
  static double from(const Value& v, const FieldPath& p) {
    if (v.is_int()) return static_cast<double>(v.as_int());
    expect_kind(p, v, Kind::floating);
    return v.as_double();
  }
};

template <>
struct Codec<std::string> {
  static Value to(const std::string& s, const FieldPath&) { return Value(s); }
  static std::string from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::string);
    return v.as_string();
  }
};

template <>
struct Codec<Bytes> {
  static Value to(const Bytes& b, const FieldPath&) { return Value(b); }
  static Bytes from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::bytes);
    return v.as_bytes();
  }
};

template <>
struct Codec<Decimal> {
  static Value to(const Decimal& d, const FieldPath&) { return Value(d); }
  static Decimal from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::decimal);
    return v.as_decimal();
  }
};

template <>
struct Codec<Timestamp> {
  static Value to(Timestamp t, const FieldPath&) { return Value(t); }
  static Timestamp from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::timestamp);
    return v.as_timestamp();
  }
};

template <>
struct Codec<Uuid> {
  static Value to(const Uuid& u, const FieldPath&) { return Value(u); }
  static Uuid from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::uuid);
    return v.as_uuid();
  }
};

template <>
struct Codec<Value> {
  static Value to(const Value& v, const FieldPath&) { return v; }
  static Value from(const Value& v, const FieldPath&) { return v; }
};

template <typename X, typename Alloc>
struct Codec<std::vector<X, Alloc>> {
  static Value to(const std::vector<X, Alloc>& items, const FieldPath& p) {
    Value::List list;
    list.reserve(items.size());
    std::size_t i = 0;
    for (auto&& item : items)
      list.push_back(Codec<X>::to(item, p.at(i++)));
    return Value(std::move(list));
  }
  static std::vector<X, Alloc> from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::list);
    const Value::List& list = v.as_list();
    std::vector<X, Alloc> out;
    out.reserve(list.size());
    for (std::size_t i = 0; i < list.size(); ++i)
      out.push_back(Codec<X>::from(list[i], p.at(i)));
    return out;
  }
};

template <typename X, typename Compare, typename Alloc>
struct Codec<std::map<std::string, X, Compare, Alloc>> {
  using Type = std::map<std::string, X, Compare, Alloc>;
  static Value to(const Type& items, const FieldPath& p) {
    Value::Map map;
    for (const auto& [k, item] : items)
      map.emplace(k, Codec<X>::to(item, p.key(k)));
    return Value(std::move(map));
  }
  static Type from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::map);
    Type out;
    for (const auto& [k, item] : v.as_map())
      out.emplace(k, Codec<X>::from(item, p.key(k)));
    return out;
  }
};

template <typename X>
struct Codec<std::optional<X>> {
  static Value to(const std::optional<X>& x, const FieldPath& p) {
    return x ? Codec<X>::to(*x, p) : Value();
  }
  static std::optional<X> from(const Value& v, const FieldPath& p) {
    if (v.is_null()) return std::nullopt;
    return Codec<X>::from(v, p);
  }
};

template <typename U>
struct Codec<TypedRef<U>> {
  static Value to(const TypedRef<U>& r, const FieldPath&) { return r ? Value(r.ref()) : Value(); }
  static TypedRef<U> from(const Value& v, const FieldPath& p) {
    if (v.is_null()) return TypedRef<U>();
    expect_kind(p, v, Kind::ref);
    const Ref& ref = v.as_ref();
    if (!ref.type.empty() && ref.type != type_name<U>()) {
      throw_field_error(p, "stored reference is to a \"" + ref.type +
                               "\", the field refers to a \"" + std::string(type_name<U>()) + "\"");
    }
    return TypedRef<U>(ref.oid);
  }
};

// A CAIRN_TYPE struct: a Map keyed by field name.
template <Storable T>
struct Codec<T> {
  static Value to(const T& object, const FieldPath& p) {
    Value::Map map;
    cairn_visit_fields(TypeTag<T>{}, object, [&](std::string_view name, const auto& field) {
      using Field = std::remove_cvref_t<decltype(field)>;
      static_assert(Codable<Field>, "cairn: a field of this type cannot be stored (typed.h)");
      map.insert_or_assign(std::string(name), Codec<Field>::to(field, p.field(name)));
    });
    return Value(std::move(map));
  }
  static T from(const Value& v, const FieldPath& p) {
    expect_kind(p, v, Kind::map);
    T object{};
    cairn_visit_fields(TypeTag<T>{}, object, [&](std::string_view name, auto& field) {
      using Field = std::remove_cvref_t<decltype(field)>;
      static_assert(Codable<Field>, "cairn: a field of this type cannot be stored (typed.h)");
      if (const Value* stored = v.find(name)) field = Codec<Field>::from(*stored, p.field(name));
    });
    return object;
  }
};

}  // namespace detail

// X (a CAIRN_TYPE struct or any supported field type) as a Value. Throws InvalidArgument for an
// unsigned integer past int64.
template <typename X>
Value to_value(const X& x) {
  static_assert(detail::Codable<X>, "cairn: this type cannot be stored (typed.h)");
  if constexpr (Storable<X>) {
    return detail::Codec<X>::to(
        x, detail::FieldPath{nullptr, detail::FieldPath::Step::top, type_name<X>(), 0});
  } else {
    return detail::Codec<X>::to(x, detail::FieldPath{});
  }
}

// A Value back as X. Throws InvalidArgument, naming the type and field, when a stored field has
// the wrong kind or an integer out of the field's range.
template <typename X>
X from_value(const Value& value) {
  static_assert(detail::Codable<X>, "cairn: this type cannot be loaded (typed.h)");
  if constexpr (Storable<X>) {
    return detail::Codec<X>::from(
        value, detail::FieldPath{nullptr, detail::FieldPath::Step::top, type_name<X>(), 0});
  } else {
    return detail::Codec<X>::from(value, detail::FieldPath{});
  }
}

// ---- typed access through a Txn, Connection or View ----

// What typed reads work through: Txn, Connection and View.
template <typename S>
concept ObjectSource = requires(S& s, const Ref& ref) {
  { s.get(ref) } -> std::same_as<Object>;
};

// What typed writes work through: Txn and Connection.
template <typename S>
concept ObjectSink = ObjectSource<S> && requires(S& s, Value v, std::string t) {
  { s.create(std::move(v), t, t) } -> std::same_as<Object>;
};

// The object `ref` names, checked to exist with T's type: NotFound if it does not exist,
// InvalidArgument (naming both types) if it has another type or `ref` is null. Counts as a read.
template <Storable T, ObjectSource S>
Object object_of(S& source, const TypedRef<T>& ref) {
  Object object = source.get(Ref{ref.oid(), {}});
  if (!object.exists()) {
    throw NotFound("object " + ref.oid().str() + " (a " + std::string(type_name<T>()) +
                   ") does not exist");
  }
  if (object.type() != type_name<T>()) {
    throw InvalidArgument("object " + ref.oid().str() + " is a \"" + object.type() +
                          "\", not a \"" + std::string(type_name<T>()) + "\"");
  }
  return object;
}

// A new object of T's type holding `value`, written at commit. `key` is the store's unique key
// among objects of the type ("" = none).
template <Storable T, ObjectSink S>
TypedRef<T> create(S& sink, const T& value, std::string key = {}) {
  Object object = sink.create(to_value(value), std::string(type_name<T>()), std::move(key));
  return TypedRef<T>(object.oid());
}

// The object `ref` names, loaded as a T (see object_of for the errors).
template <Storable T, ObjectSource S>
T get(S& source, const TypedRef<T>& ref) {
  return from_value<T>(object_of(source, ref).get());
}

// Loads the object as a T, calls fn(T&) and writes the fields back (nothing, if fn throws).
// Stored fields T does not declare are kept. A read of the object, so concurrent modifications
// conflict and Database::transaction retries them.
template <Storable T, ObjectSink S, typename Fn>
requires std::invocable<Fn&, T&>
void modify(S& sink, const TypedRef<T>& ref, Fn&& fn) {
  Object object = object_of(sink, ref);
  T value = from_value<T>(object.get());
  fn(value);
  Value updated = to_value(value);
  Value::Map& state = object.mutate().as_map();
  for (auto& [name, field] : updated.as_map())
    state.insert_or_assign(name, std::move(field));
}

// Deletes the object at commit, after checking it is a T.
template <Storable T, ObjectSink S>
void remove(S& sink, const TypedRef<T>& ref) {
  object_of(sink, ref).remove();
}

// The object of T's type whose key is `key`, as the transaction sees it (Connection::find): its
// reference, or nullopt. The object found counts as read.
template <Storable T, ObjectSource S>
std::optional<TypedRef<T>> find(S& source, std::string_view key) {
  std::optional<Object> object = source.find(type_name<T>(), key);
  if (!object) return std::nullopt;
  return TypedRef<T>(object->oid());
}

namespace detail {

// The address of typed_tag<T> tells a cached decoded T from other types' forms.
template <typename T>
inline constexpr char typed_tag = 0;

template <Storable T>
class TypedForm final : public TypedState {
 public:
  explicit TypedForm(T value) : value_(std::move(value)) {}
  T& value() { return value_; }
  void write_to(Value& state) const override {
    Value updated = to_value(value_);
    if (!state.is_map()) state = Value::Map{};
    Value::Map& map = state.as_map();
    for (auto& [name, field] : updated.as_map())
      map.insert_or_assign(name, std::move(field));
  }

 private:
  T value_;
};

}  // namespace detail

// A typed object that notes its own changes, Durus style: mutate() hands out the decoded T to
// change in place and marks the object changed, so the commit writes the fields back (stored
// fields T does not declare are kept). Handles are cheap to copy; every handle to one object in
// one connection shares one decoded T, so a change through one is seen through the others.
//
//   cairn::Handle<Message> msg(tx, ref);
//   std::string text = msg->text;   // a read
//   msg.mutate().text += "!";       // a write, committed with the transaction
//
// References returned by get() and mutate() stay valid, and changes through them are committed,
// until the transaction ends, the object is changed through its Object (set, mutate, remove), or
// a Handle of another type is used on the same object.
template <Storable T>
class Handle {
 public:
  Handle() = default;
  // The object `ref` names, checked to exist as a T (object_of).
  template <ObjectSource S>
  Handle(S& source, const TypedRef<T>& ref) : object_(object_of(source, ref)) {}

  TypedRef<T> ref() const { return TypedRef<T>(object_.oid()); }
  const Object& object() const { return object_; }

  // The object as a T: decoded at the first use in a transaction. Counts as a read.
  const T& get() const { return form(false).value(); }
  const T& operator*() const { return get(); }
  const T* operator->() const { return &get(); }
  // The object as a T to change in place; the object is now changed in this transaction.
  T& mutate() { return form(true).value(); }

 private:
  detail::TypedForm<T>& form(bool for_write) const {
    detail::TypedState& state = object_.typed_state(
        &detail::typed_tag<T>,
        [](const Value& stored) -> std::unique_ptr<detail::TypedState> {
          return std::make_unique<detail::TypedForm<T>>(from_value<T>(stored));
        },
        for_write);
    return static_cast<detail::TypedForm<T>&>(state);
  }

  Object object_;
};

// Every committed object of T's type, in oid order, as the store lists them now (not as of a
// transaction's snapshot: load them in a transaction to read them).
template <Storable T>
std::vector<TypedRef<T>> scan(Store& store) {
  constexpr std::size_t page = 1000;
  std::vector<TypedRef<T>> out;
  Oid after;
  for (;;) {
    // Oid 0 is the root, never listed by type, so starting "after" it misses nothing.
    std::vector<ScanEntry> entries = store.scan_type(type_name<T>(), after, page);
    for (const ScanEntry& entry : entries)
      out.emplace_back(entry.oid);
    if (entries.size() < page) break;
    after = entries.back().oid;
  }
  return out;
}

template <Storable T>
std::vector<TypedRef<T>> scan(const Database& db) {
  return scan<T>(db.store());
}

// ---- ByteStream ----

// Bytes that grow by appending, without reading or resending what is already stored: a head
// object, chunks, each a blob (Connection::create_blob), and pages listing full runs of chunks,
// all untyped (so they live while something refers to the head).
//   head   {"size": int, "chunk_size": int, "chunks": [Ref, ...],
//           "pages": [Ref, ...], "paged": int}          (pages and paged: absent = none)
//   page   [Ref, ...]        (page_chunks chunk references; more in the one page a head from
//                            before pages moves its whole list into)
// The stream is the chunks the pages list, in order ("paged" of them), then those "chunks"
// lists. Every chunk but the last is full (chunk_size bytes). append() adds to the last chunk
// with Object::append (the store receives only the new bytes) until it is full, then creates
// chunks; once "chunks" holds page_chunks references, the next new chunk first moves them into a
// new page. So an append rewrites the head, whose size is bounded by page_chunks references plus
// one per page, and never a page or a full chunk. It reads the head, so concurrent appends to one
// stream conflict (and Database::transaction retries them) rather than lose bytes. An append
// lands whole or not at all. A ByteStream is usable while the transaction or connection it came
// from is (it works through its head object, so moving the Connection does not matter). Over a
// server, all the bytes one transaction appends travel in its one commit request, which must fit
// the server's frame limit (`cairn serve --max-frame-bytes`, 65 MiB by default): a larger commit
// is refused with IoError naming the limit, and nothing is applied. Append more in several
// transactions.
class ByteStream {
 public:
  static constexpr std::size_t default_chunk_size = 64 * 1024;
  static constexpr std::size_t max_chunk_size = max_object_bytes - 1;  // a blob's marker byte
  // How many chunk references the head lists before they move into a new page.
  static constexpr std::size_t page_chunks = 512;
  // How many bytes of chunks read() asks the store for at a time.
  static constexpr std::size_t prefetch_bytes = 64u << 20;

  // A new, empty stream. Throws InvalidArgument unless 1 <= chunk_size <= max_chunk_size.
  template <ObjectSink S>
  static ByteStream create(S& sink, std::size_t chunk_size = default_chunk_size) {
    if (chunk_size < 1 || chunk_size > max_chunk_size) {
      throw InvalidArgument("ByteStream chunk size " + std::to_string(chunk_size) +
                            " is not between 1 and " + std::to_string(max_chunk_size));
    }
    Object head =
        sink.create(Value::Map{{"size", 0}, {"chunk_size", chunk_size}, {"chunks", Value::List{}}});
    return ByteStream(std::move(head), true);
  }

  // The stream whose head `ref` names. Throws NotFound if it does not exist and InvalidArgument
  // if it is not a stream's head. Through a View the stream can only be read.
  template <ObjectSource S>
  static ByteStream open(S& source, const Ref& ref) {
    Object head = source.get(Ref{ref.oid, {}});
    check_head(head);
    return ByteStream(std::move(head), ObjectSink<S>);
  }

  const Object& object() const { return head_; }
  Ref ref() const { return head_.ref(); }

  std::uint64_t size() const { return static_cast<std::uint64_t>(field(head_, "size").as_int()); }

  void append(std::string_view bytes) {
    if (bytes.empty()) return;
    if (!writable_) throw InvalidArgument("this ByteStream was opened read-only");
    Value::Map head = head_.get().as_map();
    const auto chunk_size = static_cast<std::size_t>(head.at("chunk_size").as_int());
    const auto old_size = static_cast<std::size_t>(head.at("size").as_int());
    Value::List& chunks = head.at("chunks").as_list();
    Value::List pages = page_refs();
    std::size_t paged = paged_chunks();
    const std::size_t count = paged + chunks.size();
    if (old_size > count * chunk_size || (count > 0 && old_size <= (count - 1) * chunk_size) ||
        (paged > 0 && chunks.empty())) {
      throw Corruption("ByteStream " + head_.oid().str() + " has " + std::to_string(count) +
                       " chunks of " + std::to_string(chunk_size) + " bytes for " +
                       std::to_string(old_size) + " bytes");
    }
    const std::size_t room = count * chunk_size - old_size;
    const std::string_view into_last = bytes.substr(0, std::min(room, bytes.size()));
    const Value last_ref = into_last.empty() ? Value() : chunks.back();
    // What can fail comes first, and chunks and pages made before a failure are removed again:
    // an append lands whole or not at all.
    std::vector<Object> made;
    try {
      for (std::string_view rest = bytes.substr(into_last.size()); !rest.empty();) {
        if (chunks.size() >= page_chunks) {
          paged += chunks.size();
          made.push_back(head_.create_untyped(Value(std::exchange(chunks, Value::List{}))));
          pages.emplace_back(made.back().ref());
        }
        std::size_t take = std::min(chunk_size, rest.size());
        made.push_back(head_.create_blob(std::string(rest.substr(0, take))));
        chunks.emplace_back(made.back().ref());
        rest.remove_prefix(take);
      }
      Object last = into_last.empty() ? Object() : head_.resolve(last_ref);
      Value& stored_head = head_.mutate();
      if (!into_last.empty()) last.append(into_last);  // not read, not resent
      head.insert_or_assign("size", static_cast<std::int64_t>(old_size + bytes.size()));
      if (paged > 0) {
        head.insert_or_assign("pages", std::move(pages));
        head.insert_or_assign("paged", static_cast<std::int64_t>(paged));
      }
      stored_head = Value(std::move(head));
    } catch (...) {
      for (Object& object : made) {
        try {
          object.remove();  // created and removed in one transaction: never written
        } catch (const Error&) {
          // Unreferenced, so pack() reclaims it.
        }
      }
      throw;
    }
  }

  // All the bytes, in order. The pages load with one store call (one round trip to a server),
  // then the chunks a group at a time, each group with one call of about prefetch_bytes.
  std::string read() const {
    const auto stored_size = static_cast<std::size_t>(size());
    const auto chunk_size = static_cast<std::size_t>(field(head_, "chunk_size").as_int());
    const std::size_t group =
        std::max<std::size_t>(1, prefetch_bytes / std::max<std::size_t>(1, chunk_size));
    const Value::List refs = chunk_refs();
    std::string out;
    out.reserve(stored_size);
    for (std::size_t i = 0; i < refs.size(); ++i) {
      if (i % group == 0) {
        std::vector<Oid> oids;
        for (std::size_t j = i; j < refs.size() && j < i + group; ++j) {
          if (refs[j].is_ref()) oids.push_back(refs[j].as_ref().oid);
        }
        head_.prefetch(oids);
      }
      Object chunk = head_.resolve(refs[i]);
      const Value& bytes = chunk.get();
      if (!bytes.is_bytes()) {
        throw Corruption("chunk " + chunk.oid().str() + " of ByteStream " + head_.oid().str() +
                         " holds no bytes");
      }
      out += bytes.as_bytes().data;
    }
    if (out.size() != stored_size) {
      throw Corruption("ByteStream " + head_.oid().str() + " holds " + std::to_string(out.size()) +
                       " bytes, not the " + std::to_string(stored_size) + " its head says");
    }
    return out;
  }

 private:
  ByteStream(Object head, bool writable) : head_(std::move(head)), writable_(writable) {}

  static void check_head(const Object& head) {
    const Value& state = head.get();
    const Value* stored_size = state.find("size");
    const Value* chunk = state.find("chunk_size");
    const Value* chunks = state.find("chunks");
    const Value* pages = state.find("pages");
    const Value* paged = state.find("paged");
    if (!stored_size || !stored_size->is_int() || stored_size->as_int() < 0 || !chunk ||
        !chunk->is_int() || chunk->as_int() < 1 || !chunks || !chunks->is_list() ||
        (pages && !pages->is_list()) || (paged && (!paged->is_int() || paged->as_int() < 0))) {
      throw InvalidArgument("object " + head.oid().str() + " is not the head of a ByteStream");
    }
  }

  // The head's references to its pages (absent: none), or Corruption.
  Value::List page_refs() const {
    const Value* pages = head_.get().find("pages");
    if (pages == nullptr) return {};
    if (!pages->is_list())
      throw Corruption("ByteStream " + head_.oid().str() + " has no page list");
    return pages->as_list();
  }

  // How many chunks the head says its pages list (absent: 0), or Corruption.
  std::size_t paged_chunks() const {
    const Value* paged = head_.get().find("paged");
    if (paged == nullptr) return 0;
    if (!paged->is_int() || paged->as_int() < 0) {
      throw Corruption("ByteStream " + head_.oid().str() + " has no valid count of paged chunks");
    }
    return static_cast<std::size_t>(paged->as_int());
  }

  // Every chunk's reference, in order: the pages' (loaded with one prefetch), then the head's.
  Value::List chunk_refs() const {
    Value::List refs;
    const Value::List pages = page_refs();
    const std::size_t paged = paged_chunks();
    if (!pages.empty()) {
      std::vector<Oid> oids;
      for (const Value& page : pages) {
        if (page.is_ref()) oids.push_back(page.as_ref().oid);
      }
      head_.prefetch(oids);
      for (const Value& page : pages) {
        const Value& listed = head_.resolve(page).get();
        if (!listed.is_list()) {
          throw Corruption("a page of ByteStream " + head_.oid().str() + " lists no chunks");
        }
        refs.insert(refs.end(), listed.as_list().begin(), listed.as_list().end());
      }
    }
    if (refs.size() != paged) {
      throw Corruption("the pages of ByteStream " + head_.oid().str() + " list " +
                       std::to_string(refs.size()) + " chunks, not the " + std::to_string(paged) +
                       " its head says");
    }
    const Value::List& chunks = field(head_, "chunks").as_list();
    refs.insert(refs.end(), chunks.begin(), chunks.end());
    return refs;
  }

  // A field of the head's state, or Corruption if the layout is broken.
  static const Value& field(const Object& object, std::string_view name) {
    if (const Value* v = object.get().find(name)) return *v;
    throw Corruption("object " + object.oid().str() + " of a ByteStream has no \"" +
                     std::string(name) + "\"");
  }

  Object head_;  // chunks are made, resolved and prefetched through it
  bool writable_;
};

}  // namespace cairn

// ---- CAIRN_TYPE ----

#define CAIRN_DETAIL_PARENS ()
#define CAIRN_DETAIL_EXPAND(...) \
  CAIRN_DETAIL_EXPAND4(          \
      CAIRN_DETAIL_EXPAND4(CAIRN_DETAIL_EXPAND4(CAIRN_DETAIL_EXPAND4(__VA_ARGS__))))
#define CAIRN_DETAIL_EXPAND4(...) \
  CAIRN_DETAIL_EXPAND3(           \
      CAIRN_DETAIL_EXPAND3(CAIRN_DETAIL_EXPAND3(CAIRN_DETAIL_EXPAND3(__VA_ARGS__))))
#define CAIRN_DETAIL_EXPAND3(...) \
  CAIRN_DETAIL_EXPAND2(           \
      CAIRN_DETAIL_EXPAND2(CAIRN_DETAIL_EXPAND2(CAIRN_DETAIL_EXPAND2(__VA_ARGS__))))
#define CAIRN_DETAIL_EXPAND2(...) \
  CAIRN_DETAIL_EXPAND1(           \
      CAIRN_DETAIL_EXPAND1(CAIRN_DETAIL_EXPAND1(CAIRN_DETAIL_EXPAND1(__VA_ARGS__))))
#define CAIRN_DETAIL_EXPAND1(...) __VA_ARGS__
#define CAIRN_DETAIL_FOR_EACH(macro, ...) \
  __VA_OPT__(CAIRN_DETAIL_EXPAND(CAIRN_DETAIL_FOR_EACH_STEP(macro, __VA_ARGS__)))
#define CAIRN_DETAIL_FOR_EACH_STEP(macro, first, ...) \
  macro(first) __VA_OPT__(CAIRN_DETAIL_FOR_EACH_AGAIN CAIRN_DETAIL_PARENS(macro, __VA_ARGS__))
#define CAIRN_DETAIL_FOR_EACH_AGAIN() CAIRN_DETAIL_FOR_EACH_STEP
#define CAIRN_DETAIL_VISIT_FIELD(field) cairn_visit(#field, cairn_self.field);

// Makes the struct Type storable under the stored type name `name` (a string literal of 1 to
// max_type_length bytes), with the listed data members as its fields. Use it at namespace scope
// in Type's own namespace, after the struct. Type must be default-constructible.
#define CAIRN_TYPE(Type, name, ...)                                              \
  inline constexpr ::std::string_view cairn_type_name(::cairn::TypeTag<Type>) {  \
    return name;                                                                 \
  }                                                                              \
  template <typename CairnSelf, typename CairnVisitor>                           \
  requires ::std::is_same_v<::std::remove_const_t<CairnSelf>, Type>              \
  void cairn_visit_fields(::cairn::TypeTag<Type>, CairnSelf& cairn_self,         \
                          CairnVisitor&& cairn_visit) {                          \
    (void)cairn_self;                                                            \
    (void)cairn_visit;                                                           \
    CAIRN_DETAIL_FOR_EACH(CAIRN_DETAIL_VISIT_FIELD, __VA_ARGS__)                 \
  }                                                                              \
  static_assert(::std::string_view(name).size() >= 1 &&                          \
                    ::std::string_view(name).size() <= ::cairn::max_type_length, \
                "CAIRN_TYPE: the type name must be 1 to max_type_length bytes")
