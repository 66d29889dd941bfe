// Records in the store (include/cairn/record.h): one object per record, of the type's store
// type and keyed by the record's id, and one object per index entry (records/index_key.h),
// written together in one commit.
#include <algorithm>
#include <string>
#include <vector>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/record.h"
#include "records/index_key.h"
#include "txn/backoff.h"

namespace cairn::detail {

namespace {

constexpr std::size_t scan_page = 1000;

const Value& value_of(const Value::Map& state, const FieldSpec& field) {
  auto it = state.find(field.name);
  return it != state.end() ? it->second : field.default_value;
}

std::int64_t generation_of(const Value::Map& state) {
  auto it = state.find("$gen");
  return it != state.end() && it->second.is_int() ? it->second.as_int() : 0;
}

// The stored object's state as a record of `spec`; throws InvalidArgument if it has another
// type or generation.
Value::Map checked_state(const TypeSpec& spec, const StoredObject& object) {
  if (object.type != spec.name) {
    throw InvalidArgument("object " + object.oid.str() + " is a \"" + object.type + "\", not a \"" +
                          spec.name + "\"");
  }
  Value state = decode(object.data);
  if (!state.is_map()) {
    throw Corruption(spec.name + " object " + object.oid.str() + " is not a map of fields");
  }
  std::int64_t stored = generation_of(state.as_map());
  if (stored != spec.generation) {
    throw InvalidArgument(spec.name + " \"" + object.key + "\" (object " + object.oid.str() +
                          ") was stored by generation " + std::to_string(stored) +
                          "; this program's " + spec.name + " is generation " +
                          std::to_string(spec.generation));
  }
  return std::move(state.as_map());
}

// The state of the stored record a save is about to replace. A record of another generation is
// refused, index or not: its index entries (under its generation's index types) would stay
// behind, and its own struct could no longer read it.
Value::Map replaced_state(const TypeSpec& spec, const StoredObject& object) {
  try {
    return checked_state(spec, object);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string(e.what()) +
                          "; to save it as this generation, first remove it through a struct "
                          "of the generation that stored it");
  }
}

std::vector<const FieldSpec*> indexed_fields(const TypeSpec& spec) {
  std::vector<const FieldSpec*> out;
  for (const FieldSpec& f : spec.fields)
    if (f.indexed) out.push_back(&f);
  return out;
}

void add_entries(Store& store, const TypeSpec& spec, Oid record,
                 const std::vector<std::pair<std::string, std::string>>& entries,
                 CommitRequest& request) {
  if (entries.empty()) return;
  Oid first = store.new_oids(static_cast<std::uint32_t>(entries.size()));
  std::string data = encode(Value(Ref{record, spec.name}));
  for (std::size_t i = 0; i < entries.size(); ++i) {
    Oid oid(first.value() + i);
    request.writes.push_back(WriteOp{oid, entries[i].first, entries[i].second, data});
    // Still free when the commit applies (see ConnectionImpl::commit: a server started again
    // without its data hands out the same oids again).
    request.reads.push_back(ReadCheck{oid, 0});
  }
}

StoredObject load_one(Store& store, Oid oid) {
  Oid oids[] = {oid};
  LoadResult loaded = store.load(oids);
  return std::move(loaded.objects.at(0));
}

// Whether `object` is the stored record `id` of the type (of any generation).
bool holds_record(const StoredObject& object, const TypeSpec& spec, std::string_view id) {
  return object.exists() && object.type == spec.name && object.key == id;
}

}  // namespace

std::optional<Oid> locate_record(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                                 std::string_view id) {
  if (oid && holds_record(load_one(store, *oid), spec, id)) return oid;
  return find_record(store, spec, id);
}

RecordTarget resolve_record(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                            std::string_view id) {
  if (oid) {
    StoredObject object = load_one(store, *oid);
    if (holds_record(object, spec, id)) {
      replaced_state(spec, object);  // before anything of the save is written
      return RecordTarget{*oid, false, std::move(object)};
    }
  }
  if (std::optional<Oid> found = find_record(store, spec, id)) {
    StoredObject object = load_one(store, *found);
    if (!holds_record(object, spec, id)) return RecordTarget{*found, false, std::nullopt};
    replaced_state(spec, object);
    return RecordTarget{*found, false, std::move(object)};
  }
  return RecordTarget{store.new_oids(1), true, std::nullopt};
}

void check_fence(Store& store, const LockCheck& fence) {
  CommitRequest request;
  request.locks.push_back(fence);
  store.commit(request);
}

void check_replaceable(Store& store, const TypeSpec& spec, std::optional<Oid> oid,
                       std::string_view id) {
  if (std::optional<Oid> at = locate_record(store, spec, oid, id)) {
    StoredObject object = load_one(store, *at);
    if (holds_record(object, spec, id)) replaced_state(spec, object);
  }
}

std::optional<RecordRow> load_record(Store& store, const TypeSpec& spec, Oid oid) {
  Oid oids[] = {oid};
  LoadResult result = store.load(oids);
  const StoredObject& object = result.objects.at(0);
  if (!object.exists()) return std::nullopt;
  return RecordRow{oid, object.key, checked_state(spec, object)};
}

std::optional<Oid> find_record(Store& store, const TypeSpec& spec, std::string_view id) {
  if (id.empty()) return std::nullopt;
  return store.find_key(spec.name, id);
}

Oid save_record(Store& store, const TypeSpec& spec, RecordTarget resolved, const std::string& id,
                const Value::Map& state, const DatabaseOptions& options,
                const std::optional<LockCheck>& fence) {
  const std::vector<const FieldSpec*> indexed = indexed_fields(spec);
  std::string data = encode(Value(state));
  Oid target = resolved.oid;
  bool ours = resolved.allocated;  // `target` came from new_oids() for this save: absent expected
  Backoff backoff(options);
  for (int attempt = 0;; ++attempt) {
    // The commit checks the version read here: the object must still be this record (or still
    // absent) when the write applies, so a record is never written over another one.
    StoredObject object =
        attempt == 0 && resolved.object ? std::move(*resolved.object) : load_one(store, target);
    // `target` is not this record: it holds another object, or is absent though it is not a new
    // oid of this save, or it is a new oid of this save that lost a race (the commit conflicted:
    // another save created the record meanwhile, and its oid is now the one to overwrite).
    if (!holds_record(object, spec, id) && (object.exists() || !ours || attempt > 0)) {
      if (std::optional<Oid> found = find_record(store, spec, id)) {
        target = *found;
        ours = false;
        object = load_one(store, target);
        if (!holds_record(object, spec, id)) {
          // The id moved or went away between find_key and load: look again.
          if (attempt >= options.max_retries) {
            throw ConflictError(spec.name + " \"" + id + "\" kept changing during the save",
                                {target});
          }
          backoff.wait(attempt);
          continue;
        }
      } else {
        // Not stored anywhere. A new oid of this save whose commit conflicted is not reused: a
        // server started again without its data since it was handed out may have given it to
        // another object, or be about to (the commit read it as absent, and found it taken or
        // never handed out by that run).
        target = store.new_oids(1);
        ours = true;
        object = StoredObject{target, 0, {}, {}, {}};
      }
    }
    CommitRequest request;
    std::optional<Value::Map> old;
    // resolve_record() checked this too, but another generation may have saved it since.
    if (object.exists()) old = replaced_state(spec, object);
    request.reads.push_back(ReadCheck{target, object.version});
    request.writes.push_back(WriteOp{target, spec.name, id, data});
    if (fence) request.locks.push_back(*fence);
    std::vector<std::pair<std::string, std::string>> entries;
    for (const FieldSpec* f : indexed) {
      std::optional<std::string> old_key;
      if (old) old_key = index_key(value_of(*old, *f), target);
      std::optional<std::string> new_key = index_key(value_of(state, *f), target);
      if (old_key == new_key) continue;
      std::string type = spec.index_type(*f);
      if (old_key) {
        if (auto entry = store.find_key(type, *old_key)) request.deletes.push_back(*entry);
      }
      if (new_key && !store.find_key(type, *new_key)) entries.emplace_back(type, *new_key);
    }
    add_entries(store, spec, target, entries, request);
    try {
      // An entry given the record's own oid: the store has handed that oid out again since this
      // save took it (a server started again without its data). As a conflict: a new oid.
      if (ours && std::any_of(request.writes.begin() + 1, request.writes.end(),
                              [&](const WriteOp& w) { return w.oid == target; })) {
        throw ConflictError("the record's new oid was handed out again", {target});
      }
      store.commit(request);
      return target;
    } catch (const ConflictError&) {
      // Another save of this record came first: wait, as transaction() does, so that savers
      // contending for one record spread out rather than conflicting again in step.
      if (attempt >= options.max_retries) throw;
    }
    backoff.wait(attempt);
  }
}

std::size_t remove_record(Store& store, const TypeSpec& spec, Oid oid, const std::string& id,
                          const DatabaseOptions& options, const std::optional<LockCheck>& fence) {
  const std::vector<const FieldSpec*> indexed = indexed_fields(spec);
  Backoff backoff(options);
  for (int attempt = 0;; ++attempt) {
    StoredObject object = load_one(store, oid);
    if (!holds_record(object, spec, id)) {
      // `oid` holds another object (or none): the record, if stored, is where its id is.
      std::optional<Oid> found = find_record(store, spec, id);
      if (!found) return 0;
      oid = *found;
      object = load_one(store, oid);
      if (!holds_record(object, spec, id)) {
        if (attempt >= options.max_retries) {
          throw ConflictError(spec.name + " \"" + id + "\" kept changing during the removal",
                              {oid});
        }
        backoff.wait(attempt);
        continue;
      }
    }
    Value::Map state = checked_state(spec, object);
    CommitRequest request;
    request.reads.push_back(ReadCheck{oid, object.version});
    request.deletes.push_back(oid);
    if (fence) request.locks.push_back(*fence);
    for (const FieldSpec* f : indexed) {
      if (auto key = index_key(value_of(state, *f), oid)) {
        if (auto entry = store.find_key(spec.index_type(*f), *key)) {
          request.deletes.push_back(*entry);
        }
      }
    }
    try {
      store.commit(request);
      return 1;
    } catch (const ConflictError&) {
      if (attempt >= options.max_retries) throw;
    }
    backoff.wait(attempt);
  }
}

std::vector<RecordRow> list_records(Store& store, const TypeSpec& spec) {
  std::vector<RecordRow> out;
  Oid after;
  for (;;) {
    std::vector<ScanEntry> entries = store.scan_type(spec.name, after, scan_page);
    std::vector<Oid> oids;
    oids.reserve(entries.size());
    for (const ScanEntry& e : entries)
      oids.push_back(e.oid);
    LoadResult loaded = store.load(oids);
    for (const StoredObject& object : loaded.objects) {
      if (!object.exists() || object.type != spec.name) continue;  // deleted since the scan
      Value state = decode(object.data);
      // Records of other generations are another type's: list() does not see them.
      if (!state.is_map() || generation_of(state.as_map()) != spec.generation) continue;
      out.push_back(RecordRow{object.oid, object.key, std::move(state.as_map())});
    }
    if (entries.size() < scan_page) break;
    after = entries.back().oid;
  }
  return out;
}

std::size_t reindex_records(Store& store, const TypeSpec& spec) {
  const std::vector<const FieldSpec*> indexed = indexed_fields(spec);
  std::size_t count = 0;
  for (const RecordRow& row : list_records(store, spec)) {
    CommitRequest request;
    std::vector<std::pair<std::string, std::string>> entries;
    for (const FieldSpec* f : indexed) {
      std::optional<std::string> key = index_key(value_of(row.state, *f), row.oid);
      std::string type = spec.index_type(*f);
      if (key && !store.find_key(type, *key)) entries.emplace_back(type, *key);
    }
    if (entries.empty()) continue;
    add_entries(store, spec, row.oid, entries, request);
    store.commit(request);
    ++count;
  }
  return count;
}

}  // namespace cairn::detail
