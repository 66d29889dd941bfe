// Repositories (include/cairn/record.h): a Database with the identity map of its records, the
// process's registry of which repository each record type uses, and record locks.
#include <fmt/format.h>
#include <openssl/sha.h>

#include <algorithm>
#include <thread>

#include "cairn/record.h"

namespace cairn {

Repository::Repository(Database db) : db_(std::move(db)), owner_(Uuid::random().str()) {}

std::shared_ptr<Repository> Repository::open(std::string_view url, DatabaseOptions options) {
  return std::make_shared<Repository>(Database::open(url, options));
}

std::shared_ptr<Repository> Repository::memory() {
  return std::make_shared<Repository>(Database(make_memory_store()));
}

std::shared_ptr<RecordBase> Repository::cached(Oid oid, const TypeSpec& spec) const {
  std::lock_guard lk(mu_);
  auto it = cache_.find(CacheKey{oid, &spec});
  return it == cache_.end() ? nullptr : it->second.lock();
}

void Repository::remember(Oid oid, const std::shared_ptr<RecordBase>& record) {
  std::shared_ptr<Repository> before = record->mapped_.in.lock();
  if (before && (before.get() != this || record->mapped_.oid != oid)) {
    // Else the old repository would hand this object out for a record it no longer is.
    before->forget(record->mapped_.oid, record.get());
  }
  std::lock_guard lk(mu_);
  cache_.insert_or_assign(CacheKey{oid, &record->type_spec()}, record);
  record->mapped_.in = weak_from_this();
  record->mapped_.oid = oid;
  if (cache_.size() >= sweep_at_) {
    // Records nobody holds any more leave expired entries: drop them now and then.
    std::erase_if(cache_, [](const auto& entry) { return entry.second.expired(); });
    sweep_at_ = std::max<std::size_t>(1024, cache_.size() * 2);
  }
}

void Repository::forget(Oid oid, RecordBase* record) {
  std::lock_guard lk(mu_);
  if (record->mapped_.oid == oid && record->mapped_.in.lock().get() == this) {
    record->mapped_.in.reset();
  }
  auto it = cache_.find(CacheKey{oid, &record->type_spec()});
  if (it == cache_.end()) return;
  auto held = it->second.lock();
  if (!held || held.get() == record) cache_.erase(it);
}

std::size_t Repository::cached_records() const {
  std::lock_guard lk(mu_);
  return static_cast<std::size_t>(std::count_if(
      cache_.begin(), cache_.end(), [](const auto& entry) { return !entry.second.expired(); }));
}

RepositoryRegistry& RepositoryRegistry::process() {
  // The one registry of the process (see the class comment for why it exists); its members are
  // guarded by its mutex.
  static RepositoryRegistry registry;
  return registry;
}

std::shared_ptr<Repository> RepositoryRegistry::for_type(std::string_view type) {
  std::lock_guard lk(mu_);
  auto it = by_type_.find(type);
  if (it != by_type_.end()) return it->second;
  if (!default_) default_ = Repository::memory();
  return default_;
}

void RepositoryRegistry::set_for_type(std::string_view type,
                                      std::shared_ptr<Repository> repository) {
  std::lock_guard lk(mu_);
  if (repository) {
    by_type_.insert_or_assign(std::string(type), std::move(repository));
  } else if (auto it = by_type_.find(type); it != by_type_.end()) {
    by_type_.erase(it);
  }
}

void RepositoryRegistry::set_default(std::shared_ptr<Repository> repository) {
  std::lock_guard lk(mu_);
  default_ = std::move(repository);
}

std::shared_ptr<Repository> RepositoryRegistry::default_repository() {
  std::lock_guard lk(mu_);
  if (!default_) default_ = Repository::memory();
  return default_;
}

Ref RecordBase::ref() const {
  if (!oid_) throw InvalidArgument(type_spec().name + " \"" + id_ + "\" was never saved");
  return Ref{*oid_, type_spec().name};
}

void RecordBase::leave_identity_map() {
  if (std::shared_ptr<Repository> mapped = mapped_.in.lock()) mapped->forget(mapped_.oid, this);
}

std::shared_ptr<Repository> RecordBase::repository() const {
  return repo_ ? repo_ : RepositoryRegistry::process().for_type(type_spec().name);
}

namespace detail {

std::string lock_name(const TypeSpec& spec, const std::string& id) {
  // One name per record, and one record per name: the type with '%' and ':' escaped ends at
  // the first ':' (type "a:b" with id "c" is not type "a" with id "b:c"), and what follows is
  // the id, unless it starts with "sha256:" (that, and an id too long for a lock name, are
  // replaced by their SHA-256: so an id "sha256:..." never passes for another id's hash).
  std::string name = "cairn.record:";
  for (char c : spec.name) {
    if (c == '%') {
      name += "%25";
    } else if (c == ':') {
      name += "%3A";
    } else {
      name += c;
    }
  }
  name += ':';
  constexpr std::string_view hashed = "sha256:";
  if (!id.starts_with(hashed) && name.size() + id.size() <= max_lock_name_length) {
    return name + id;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(id.data()), id.size(), digest);
  name += hashed;
  for (unsigned char byte : digest)
    name += fmt::format("{:02x}", byte);
  return name;
}

std::string new_lock_owner(const Repository& repository) {
  // One owner name per acquisition: releasing one never releases another, even by the same
  // record or repository.
  return repository.lock_owner() + "/" + Uuid::random().str();
}

std::optional<std::uint64_t> acquire_lock(Store& store, const std::string& name,
                                          const std::string& owner, std::chrono::milliseconds ttl,
                                          std::optional<std::chrono::milliseconds> wait) {
  LockRequest request{name, owner, ttl, wait.value_or(std::chrono::milliseconds(0))};
  if (wait) return store.lock(request);
  // Waiting as long as it takes: in long slices, so that a store's own limits on one wait hold.
  request.wait = std::chrono::hours(1);
  for (;;) {
    if (auto token = store.lock(request)) return token;
  }
}

}  // namespace detail

}  // namespace cairn
