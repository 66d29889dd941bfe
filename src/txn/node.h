// Node: one object in a connection's cache, shared by every Object handle to it. Plain data: the
// rules for moving between its states live in ConnectionImpl (connection_impl.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/database.h"
#include "cairn/oid.h"
#include "cairn/value.h"

namespace cairn::detail {

class ConnectionImpl;

struct Node {
  Node(Oid id, ConnectionImpl* owner) : oid(id), conn(owner) {}

  Oid oid;
  ConnectionImpl* conn;  // null once the connection is closed

  // false: a ghost, whose state is not in memory and loads on next use.
  bool loaded = false;
  // The current state exists (false: absent in the store, or removed in this transaction).
  bool present = false;
  // In the current transaction's read set, at `version`.
  bool read = false;
  // Written, created or removed in the current transaction.
  bool dirty = false;
  // Read since the cache was last shrunk (kept in preference to nodes not read).
  bool touched = false;
  // Its oid was allocated in the current transaction and has never been committed.
  bool created = false;
  // Stored as a blob (store.h): while `value` is Bytes it is written back as one.
  bool blob = false;
  // Changed in the current transaction by appends only: `appended` holds their bytes, sent as
  // one AppendOp. (If loaded, `value` has them too.) Any other write ends this.
  bool appending = false;
  std::string appended;

  std::uint64_t version = 0;  // of the committed state this node was loaded from (0 = absent)
  // The size of that state in the store (its data), counted in the connection's cached bytes.
  std::size_t stored_bytes = 0;
  std::string type;
  std::string key;
  Value value;

  // A typed handle's decoded form of `value` (database.h), tagged with its C++ type; when
  // `typed_newer`, it has changes not yet written back into `value`.
  std::unique_ptr<TypedState> typed;
  const void* typed_tag = nullptr;
  bool typed_newer = false;
};

}  // namespace cairn::detail
