// The FileStore's in-memory index (file_index.h).
#include "store/file_index.h"

#include "cairn/error.h"

namespace cairn {

std::uint32_t FileIndex::intern(std::string_view type) {
  auto it = type_ids_.find(type);
  if (it != type_ids_.end()) return it->second;
  auto id = static_cast<std::uint32_t>(types_.size());
  types_.push_back(Type{std::string(type), {}, {}});
  type_ids_.emplace(std::string(type), id);
  return id;
}

std::optional<Oid> FileIndex::key_holder(std::string_view type, std::string_view key) const {
  auto it = type_ids_.find(type);
  if (it == type_ids_.end()) return std::nullopt;
  const auto& keys = types_[it->second].keys;
  auto k = keys.find(key);
  if (k == keys.end()) return std::nullopt;
  return k->second;
}

void FileIndex::unlist(Oid oid, const IndexEntry& entry) {
  Type& type = types_[entry.type];
  if (!type.name.empty()) type.members.erase(oid);
  if (auto k = key_of_.find(oid); k != key_of_.end()) {
    // Within one commit a key may already have moved to another object: erase only our own.
    if (auto m = type.keys.find(k->second); m != type.keys.end() && m->second == oid) {
      type.keys.erase(m);
    }
    key_of_.erase(k);
  }
  --objects_;
  live_bytes_ -= entry.length;
}

void FileIndex::put(Oid oid, std::uint64_t offset, std::uint32_t length, std::uint64_t version,
                    std::string_view type, std::string_view key) {
  if (oid.value() >= file_store_max_oid) {
    throw InvalidArgument("oid " + oid.str() + " is past the largest oid a file store holds");
  }
  if (const IndexEntry* old = index_.find(oid)) unlist(oid, *old);
  std::uint32_t id = intern(type);
  index_.slot(oid) = IndexEntry{offset, version, length, id};
  if (!type.empty()) types_[id].members.insert(oid);
  if (!key.empty()) {
    types_[id].keys.insert_or_assign(std::string(key), oid);
    key_of_.insert_or_assign(oid, std::string(key));
  }
  ++objects_;
  live_bytes_ += length;
}

bool FileIndex::remove(Oid oid) {
  const IndexEntry* old = index_.find(oid);
  if (old == nullptr) return false;
  unlist(oid, *old);
  index_.erase(oid);
  return true;
}

std::size_t FileIndex::memory_bytes() const {
  std::size_t n = index_.memory_bytes();
  for (const Type& type : types_) {
    n += sizeof(Type) + type.name.capacity() + type.members.memory_bytes();
    for (const auto& [key, oid] : type.keys)
      n += key.capacity() + 64;
  }
  n += key_of_.size() * 64;
  for (const auto& [oid, key] : key_of_)
    n += key.capacity();
  return n;
}

}  // namespace cairn
