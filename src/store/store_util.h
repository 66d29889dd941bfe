// Checks and helpers every backend shares, so that all of them refuse the same bad input with
// the same message.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "cairn/store.h"

namespace cairn {

// Throws InvalidArgument for a request no backend may accept: a write, delete or append naming an
// oid that was never allocated (>= next_oid, other than the root; ConflictError instead if the
// request reads that oid as absent, as a new object's), an oid twice among writes,
// deletes and appends, two writes taking the same (type, key), a type, key, object or
// appended data over its limit, or a lock check with an empty or over-long name or token 0.
void validate_commit_shape(const CommitRequest& request, std::uint64_t next_oid);

// For an append of `appended` bytes to object `oid`, whose data is `current` (null: absent):
// throws NotFound if it is absent, InvalidArgument if it is not a blob or would grow past
// max_object_bytes.
void check_append(Oid oid, const std::string* current, std::size_t appended);

// The same check for a store that knows of the current data only its size (nullopt: absent) and
// whether it is a blob, because it keeps the data elsewhere (Redis checks them in its commit
// script and reports what it found).
void check_append(Oid oid, std::optional<std::size_t> current_size, bool blob,
                  std::size_t appended);

// Throws InvalidArgument for a lock check with an empty or over-long name, or token 0.
void validate_lock_check(const LockCheck& check);
// The LockLost a commit throws when its lock check `check` fails (Store::commit).
[[noreturn]] void throw_lock_lost(const LockCheck& check);

// Throws InvalidArgument for an empty or over-long name or owner, a ttl <= 0, or a wait < 0.
void validate_lock_request(const LockRequest& request);
// Refuses a lock or renew ttl that is not positive or is over max_lock_duration.
void check_lock_ttl(std::chrono::milliseconds ttl);

// "commit conflicts on oids 3, 7": the message of a ConflictError.
// "1, 2, 3": the oids as messages name them.
std::string oid_list(std::span<const Oid> oids);
std::string conflict_message(const std::vector<Oid>& oids);

// Who holds (type, key) among live objects, if anyone.
using KeyHolder = std::function<std::optional<Oid>(std::string_view type, std::string_view key)>;

// Appends to `conflicts` every write of `request` that takes a key still held by another live
// object after the commit (one that the commit neither deletes nor rewrites without that key),
// and the holder.
void check_key_conflicts(const CommitRequest& request, const KeyHolder& holder_of,
                         std::vector<Oid>& conflicts);

// If `conflicts` is not empty: sorts it, drops duplicates and throws ConflictError.
void throw_if_conflicts(std::vector<Oid> conflicts);

// The oids pack() keeps among `objects` (a map from Oid to something with .type, .key and .data):
// the roots (oid 0, every object with a type or a key) and what their refs reach.
template <class Objects>
std::unordered_set<Oid> reachable_from_roots(const Objects& objects);

// Calls `fn` with the oid of every Ref inside `data` (a codec-encoded Value, or a blob, which
// holds none) of object `owner`. Throws Corruption naming `owner` if the data does not decode.
void for_each_ref(std::string_view data, Oid owner, const std::function<void(Oid)>& fn);

template <class Objects>
std::unordered_set<Oid> reachable_from_roots(const Objects& objects) {
  std::vector<Oid> pending;
  std::unordered_set<Oid> live;
  for (const auto& [oid, obj] : objects) {
    if (oid.is_root() || !obj.type.empty() || !obj.key.empty()) {
      live.insert(oid);
      pending.push_back(oid);
    }
  }
  while (!pending.empty()) {
    Oid oid = pending.back();
    pending.pop_back();
    for_each_ref(objects.at(oid).data, oid, [&](Oid target) {
      if (objects.contains(target) && live.insert(target).second) pending.push_back(target);
    });
  }
  return live;
}

}  // namespace cairn
