// Checks and helpers every backend shares, so that all of them refuse the same bad input with
// the same message.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/store.h"

namespace cairn {

// Throws InvalidArgument for a request no backend may accept: a write to an oid that was never
// allocated (>= next_oid, other than the root), an oid twice among writes and deletes, two
// writes taking the same (type, key), or a type, key or object over its limit.
void validate_commit_shape(const CommitRequest& request, std::uint64_t next_oid);

// Throws InvalidArgument for an empty or over-long name or owner, a ttl <= 0, or a wait < 0.
void validate_lock_request(const LockRequest& request);

// "commit conflicts on oids 3, 7": the message of a ConflictError.
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

// Calls `fn` with the oid of every Ref inside `data` (a codec-encoded Value) of object `owner`.
// Throws Corruption naming `owner` if the data does not decode.
void for_each_ref(std::string_view data, Oid owner, const std::function<void(Oid)>& fn);

}  // namespace cairn
