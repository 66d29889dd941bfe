// Shared validation for store backends (store_util.h).
#include "store/store_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <unordered_set>

#include "cairn/codec.h"
#include "cairn/error.h"

namespace cairn {

namespace {

void check_length(std::string_view what, std::string_view text, std::size_t limit) {
  if (text.size() > limit) {
    throw InvalidArgument(
        fmt::format("{} of {} bytes is longer than the limit of {}", what, text.size(), limit));
  }
}

void check_lock_name(std::string_view name) {
  if (name.empty()) throw InvalidArgument("lock name must not be empty");
  check_length("lock name", name, max_lock_name_length);
}

// A commit names an oid the store never handed out. If the commit reads it as absent, it is a new
// object's, whose oid came from a run of the store that has since been started again without its
// data (a memory server): what the transaction was built on is gone, as in a conflict, and it can
// run again with oids of this run. Otherwise the caller made the oid up.
[[noreturn, gnu::cold]] void throw_unallocated(const CommitRequest& request, Oid oid) {
  bool created = std::any_of(request.reads.begin(), request.reads.end(),
                             [&](const ReadCheck& r) { return r.oid == oid && r.version == 0; });
  if (created) {
    throw ConflictError(
        fmt::format("commit conflicts on oids {}: a new object's oid this store never handed "
                    "out (the server was started again without its data since it handed it "
                    "out?); nothing was committed",
                    oid.value()),
        {oid});
  }
  throw InvalidArgument(
      fmt::format("commit names oid {}, which was never allocated (use new_oids)", oid.value()));
}

}  // namespace

void validate_commit_shape(const CommitRequest& request, std::uint64_t next_oid) {
  // Runs on every commit: no allocation beyond one vector, no formatting unless it throws.
  std::vector<Oid> oids;
  oids.reserve(request.writes.size() + request.deletes.size() + request.appends.size());
  auto check_oid = [&](Oid oid) {
    if (!oid.is_root() && oid.value() >= next_oid) [[unlikely]]
      throw_unallocated(request, oid);
    oids.push_back(oid);
  };
  bool keyed = false;
  for (const WriteOp& w : request.writes) {
    check_oid(w.oid);
    check_length("type name", w.type, max_type_length);
    check_length("key", w.key, max_key_length);
    if (w.data.size() > max_object_bytes) {
      check_length(fmt::format("object {}", w.oid.value()), w.data, max_object_bytes);
    }
    keyed = keyed || !w.key.empty();
  }
  for (Oid oid : request.deletes)
    check_oid(oid);
  for (const AppendOp& a : request.appends) {
    check_oid(a.oid);
    if (a.data.size() > max_object_bytes) {
      check_length(fmt::format("append to object {}", a.oid.value()), a.data, max_object_bytes);
    }
  }
  for (const LockCheck& l : request.locks)
    validate_lock_check(l);
  std::sort(oids.begin(), oids.end());
  if (auto twice = std::adjacent_find(oids.begin(), oids.end()); twice != oids.end()) {
    throw InvalidArgument(fmt::format(
        "commit names oid {} more than once among writes, deletes and appends", twice->value()));
  }
  if (!keyed) return;
  std::set<std::pair<std::string_view, std::string_view>> keys;
  for (const WriteOp& w : request.writes) {
    if (!w.key.empty() && !keys.emplace(w.type, w.key).second) {
      throw InvalidArgument(
          fmt::format("commit gives key \"{}\" of type \"{}\" to two objects", w.key, w.type));
    }
  }
}

void check_append(Oid oid, const std::string* current, std::size_t appended) {
  check_append(oid, current == nullptr ? std::nullopt : std::optional<std::size_t>(current->size()),
               current != nullptr && is_blob(*current), appended);
}

void check_append(Oid oid, std::optional<std::size_t> current_size, bool blob,
                  std::size_t appended) {
  if (!current_size) {
    throw NotFound(fmt::format("cannot append to object {}: it does not exist", oid.value()));
  }
  if (!blob) {
    throw InvalidArgument(
        fmt::format("cannot append to object {}: its data is not a blob", oid.value()));
  }
  if (*current_size + appended > max_object_bytes) {
    throw InvalidArgument(
        fmt::format("appending {} bytes to object {} would make it {} bytes, "
                    "past the limit of {}",
                    appended, oid.value(), *current_size + appended, max_object_bytes));
  }
}

void throw_lock_lost(const LockCheck& check) {
  throw LockLost(fmt::format(
      "lock \"{}\" is no longer held under fencing token {} (it expired, was released or was "
      "taken over); nothing was committed",
      check.name, check.token));
}

void validate_lock_check(const LockCheck& check) {
  check_lock_name(check.name);
  if (check.token == 0) {
    throw InvalidArgument(
        fmt::format("a check of lock \"{}\" under fencing token 0, which no lock has", check.name));
  }
}

void validate_lock_request(const LockRequest& request) {
  check_lock_name(request.name);
  if (request.owner.empty()) throw InvalidArgument("lock owner must not be empty");
  check_length("lock owner", request.owner, max_lock_name_length);
  check_lock_ttl(request.ttl);
  if (request.wait.count() < 0) throw InvalidArgument("lock wait must not be negative");
  if (request.wait > max_lock_duration) {
    throw InvalidArgument(fmt::format("lock wait of {} ms is over the limit of {} ms",
                                      request.wait.count(), max_lock_duration.count()));
  }
}

void check_lock_ttl(std::chrono::milliseconds ttl) {
  // Past the limit, now + ttl could overflow the clock and make a held lock look expired.
  if (ttl.count() <= 0) throw InvalidArgument("lock ttl must be positive");
  if (ttl > max_lock_duration) {
    throw InvalidArgument(fmt::format("lock ttl of {} ms is over the limit of {} ms", ttl.count(),
                                      max_lock_duration.count()));
  }
}

std::string oid_list(std::span<const Oid> oids) {
  std::string list;
  for (Oid oid : oids) {
    if (!list.empty()) list += ", ";
    list += oid.str();
  }
  return list;
}

std::string conflict_message(const std::vector<Oid>& oids) {
  return fmt::format("commit conflicts on oid{} {}: changed since read, or key taken",
                     oids.size() == 1 ? "" : "s", oid_list(oids));
}

void check_key_conflicts(const CommitRequest& request, const KeyHolder& holder_of,
                         std::vector<Oid>& conflicts) {
  if (std::none_of(request.writes.begin(), request.writes.end(),
                   [](const WriteOp& w) { return !w.key.empty(); })) {
    return;  // no write takes a key
  }
  std::unordered_set<Oid> released;  // objects that this commit deletes or rewrites
  for (Oid oid : request.deletes)
    released.insert(oid);
  for (const WriteOp& w : request.writes)
    released.insert(w.oid);
  for (const WriteOp& w : request.writes) {
    if (w.key.empty()) continue;
    std::optional<Oid> holder = holder_of(w.type, w.key);
    if (!holder || *holder == w.oid) continue;
    // The holder gives the key up only if this commit deletes it or rewrites it without it.
    bool gives_up = false;
    if (released.contains(*holder)) {
      gives_up = true;
      for (const WriteOp& other : request.writes) {
        if (other.oid == *holder && other.type == w.type && other.key == w.key) gives_up = false;
      }
    }
    if (!gives_up) {
      conflicts.push_back(w.oid);
      conflicts.push_back(*holder);
    }
  }
}

void throw_if_conflicts(std::vector<Oid> conflicts) {
  if (conflicts.empty()) return;
  std::sort(conflicts.begin(), conflicts.end());
  conflicts.erase(std::unique(conflicts.begin(), conflicts.end()), conflicts.end());
  std::string message = conflict_message(conflicts);
  throw ConflictError(std::move(message), std::move(conflicts));
}

namespace {

void walk_refs(const Value& v, const std::function<void(Oid)>& fn) {
  switch (v.kind()) {
    case Kind::ref:
      fn(v.as_ref().oid);
      break;
    case Kind::list:
      for (const Value& item : v.as_list())
        walk_refs(item, fn);
      break;
    case Kind::map:
      for (const auto& [key, item] : v.as_map())
        walk_refs(item, fn);
      break;
    default:
      break;
  }
}

}  // namespace

void for_each_ref(std::string_view data, Oid owner, const std::function<void(Oid)>& fn) {
  if (is_blob(data)) return;  // plain bytes: no refs
  Value v;
  try {
    v = decode(data);
  } catch (const Corruption& e) {
    throw Corruption(fmt::format("object {}: {}", owner.value(), e.what()));
  }
  walk_refs(v, fn);
}

}  // namespace cairn
