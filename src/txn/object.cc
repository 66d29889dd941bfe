// Object handles, the persistent containers over them, and the Txn and View facades.
#include <fmt/format.h>

#include <utility>

#include "cairn/database.h"
#include "cairn/error.h"
#include "txn/connection_impl.h"

namespace cairn {

namespace {

// Why a handle is not live (Object::live), thrown.
[[noreturn, gnu::cold]] void throw_not_live(const detail::Node* node) {
  if (node == nullptr) throw InvalidArgument("this Object handle refers to no object");
  if (node->conn == nullptr) {
    throw InvalidArgument(
        fmt::format("object {}: its connection has been closed", node->oid.value()));
  }
  throw InvalidArgument(fmt::format("object {}: the transaction or view it was read in has ended",
                                    node->oid.value()));
}

}  // namespace

inline detail::Node& Object::live() const {
  detail::Node* node = node_.get();
  if (node == nullptr || node->conn == nullptr || node->conn->lease() != lease_) [[unlikely]] {
    throw_not_live(node);
  }
  return *node;
}

Oid Object::oid() const {
  return live().oid;
}

bool Object::exists() const {
  detail::Node& n = live();
  return n.conn->exists(n);
}

const std::string& Object::type() const {
  detail::Node& n = live();
  return n.conn->type(n);
}

const std::string& Object::key() const {
  detail::Node& n = live();
  return n.conn->key(n);
}

const Value& Object::get() const {
  detail::Node& n = live();
  return n.conn->read(n);
}

Value& Object::mutate() {
  detail::Node& n = live();
  return n.conn->write(n);
}

void Object::set(Value state) {
  detail::Node& n = live();
  n.conn->set(n, std::move(state));
}

void Object::set(Value state, std::string type, std::string key) {
  detail::Node& n = live();
  n.conn->set(n, std::move(state), std::move(type), std::move(key));
}

detail::TypedState& Object::typed_state(
    const void* tag,
    const std::function<std::unique_ptr<detail::TypedState>(const Value& state)>& make,
    bool for_write) const {
  detail::Node& n = live();
  return n.conn->typed(n, tag, make, for_write);
}

void Object::note_change() {
  mutate();
}

void Object::remove() {
  detail::Node& n = live();
  n.conn->remove(n);
}

void Object::append(std::string_view bytes) {
  detail::Node& n = live();
  n.conn->append(n, bytes);
}

Object Object::create_blob(std::string bytes) const {
  detail::Node& n = live();
  return n.conn->create_blob(std::move(bytes));
}

Object Object::create_untyped(Value state) const {
  detail::Node& n = live();
  return n.conn->create(std::move(state), {}, {});
}

void Object::prefetch(std::span<const Oid> oids) const {
  detail::Node& n = live();
  n.conn->prefetch(oids);
}

Object Object::resolve(const Value& ref) const {
  detail::Node& n = live();
  if (!ref.is_ref()) {
    throw InvalidArgument(
        fmt::format("expected a reference to an object, got a {}", to_string(ref.kind())));
  }
  return n.conn->get(ref.as_ref());
}

// ---- PersistentMap ----

const Value::Map& PersistentMap::map() const {
  return object_.get().as_map();
}

std::size_t PersistentMap::size() const {
  return map().size();
}

bool PersistentMap::contains(std::string_view key) const {
  return map().contains(key);
}

const Value* PersistentMap::find(std::string_view key) const {
  const Value::Map& m = map();
  auto it = m.find(key);
  return it == m.end() ? nullptr : &it->second;
}

const Value& PersistentMap::get(std::string_view key) const {
  if (const Value* v = find(key)) return *v;
  throw NotFound(fmt::format("object {} has no key \"{}\"", object_.oid().value(), key));
}

Object PersistentMap::object_at(std::string_view key) const {
  return object_.resolve(get(key));
}

std::vector<std::string> PersistentMap::keys() const {
  std::vector<std::string> out;
  out.reserve(map().size());
  for (const auto& [key, value] : map())
    out.push_back(key);
  return out;
}

void PersistentMap::set(std::string key, Value value) {
  object_.mutate().as_map().insert_or_assign(std::move(key), std::move(value));
}

bool PersistentMap::erase(std::string_view key) {
  auto it = map().find(key);
  if (it == map().end()) return false;
  Value::Map& m = object_.mutate().as_map();
  m.erase(m.find(key));
  return true;
}

// ---- PersistentList ----

const Value::List& PersistentList::list() const {
  return object_.get().as_list();
}

std::size_t PersistentList::size() const {
  return list().size();
}

namespace {
void check_index(Oid oid, std::size_t index, std::size_t size) {
  if (index >= size) {
    throw InvalidArgument(
        fmt::format("index {} is past the end of object {} (size {})", index, oid.value(), size));
  }
}
}  // namespace

const Value& PersistentList::at(std::size_t index) const {
  const Value::List& l = list();
  check_index(object_.oid(), index, l.size());
  return l[index];
}

Object PersistentList::object_at(std::size_t index) const {
  return object_.resolve(at(index));
}

void PersistentList::push_back(Value value) {
  object_.mutate().as_list().push_back(std::move(value));
}

void PersistentList::set(std::size_t index, Value value) {
  check_index(object_.oid(), index, list().size());
  object_.mutate().as_list()[index] = std::move(value);
}

void PersistentList::erase(std::size_t index) {
  check_index(object_.oid(), index, list().size());
  Value::List& l = object_.mutate().as_list();
  l.erase(l.begin() + static_cast<std::ptrdiff_t>(index));
}

// ---- Txn and View ----

namespace detail {

LeaseRef::LeaseRef(const LeaseRef& other)
    : conn_(other.conn_),
      lease_(other.lease_),
      // The one passed to the function lives no longer than the call, nor its connection: only
      // a copy needs the cell. Copying a Txn whose call has returned copies its cell.
      cell_(other.cell_ ? other.cell_ : other.conn_->lease_cell()) {}

LeaseRef& LeaseRef::operator=(const LeaseRef& other) {
  if (this != &other) {
    std::shared_ptr<const LeaseCell> cell = other.cell_ ? other.cell_ : other.conn_->lease_cell();
    conn_ = other.conn_;
    lease_ = other.lease_;
    cell_ = std::move(cell);
  }
  return *this;
}

namespace {

[[noreturn, gnu::cold]] void throw_lease_ended(const char* what) {
  throw InvalidArgument(
      fmt::format("this {} has ended: its transaction() or view() call returned", what));
}

}  // namespace

inline ConnectionImpl& LeaseRef::conn(const char* what) const {
  bool ended = cell_ ? cell_->closed.load(std::memory_order_acquire) ||
                           cell_->lease.load(std::memory_order_acquire) != lease_
                     : conn_->lease() != lease_;
  if (ended) [[unlikely]]
    throw_lease_ended(what);
  return *conn_;
}

}  // namespace detail

PersistentMap Txn::root() {
  return PersistentMap(conn().get(Oid::root()));
}
Object Txn::get(Oid oid) {
  return conn().get(oid);
}
Object Txn::get(const Ref& ref) {
  return conn().get(ref);
}
Object Txn::create(Value state, std::string type, std::string key) {
  return conn().create(std::move(state), std::move(type), std::move(key));
}

Object Txn::create_blob(std::string bytes) {
  return conn().create_blob(std::move(bytes));
}
std::optional<Object> Txn::find(std::string_view type, std::string_view key) {
  return conn().find(type, key);
}
void Txn::prefetch(std::span<const Oid> oids) {
  conn().prefetch(oids);
}
void Txn::require_lock(std::string name, std::uint64_t token) {
  conn().require_lock(std::move(name), token);
}
void Txn::modify(Oid oid, const std::function<void(Value&)>& fn) {
  fn(get(oid).mutate());
}
void Txn::modify(const Ref& ref, const std::function<void(Value&)>& fn) {
  fn(get(ref).mutate());
}
namespace {
Object own(detail::ConnectionImpl& conn, const Object& object) {
  if (object.valid() && !conn.owns(object)) {
    throw InvalidArgument(
        fmt::format("object {} belongs to another connection", object.oid().value()));
  }
  return object;
}
}  // namespace

void Txn::modify(const Object& object, const std::function<void(Value&)>& fn) {
  fn(own(conn(), object).mutate());
}
void Txn::remove(Oid oid) {
  get(oid).remove();
}
void Txn::remove(const Ref& ref) {
  get(ref).remove();
}
void Txn::remove(const Object& object) {
  own(conn(), object).remove();
}

PersistentMap View::root() {
  return PersistentMap(conn().get(Oid::root()));
}
Object View::get(Oid oid) {
  return conn().get(oid);
}
Object View::get(const Ref& ref) {
  return conn().get(ref);
}
std::optional<Object> View::find(std::string_view type, std::string_view key) {
  return conn().find(type, key);
}
void View::prefetch(std::span<const Oid> oids) {
  conn().prefetch(oids);
}

}  // namespace cairn
