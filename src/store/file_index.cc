// The FileStore's in-memory index (file_index.h).
#include "store/file_index.h"

#include "cairn/error.h"
#include "store/file_format.h"

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

void FileIndex::encode_checkpoint(std::string& out, std::uint64_t next_oid,
                                  std::uint64_t transactions) const {
  logfmt::put_u64(out, next_oid);
  logfmt::put_u64(out, transactions);
  logfmt::put_u32(out, static_cast<std::uint32_t>(types_.size() - 1));
  for (std::size_t id = 1; id < types_.size(); ++id) {
    out.push_back(static_cast<char>(types_[id].name.size()));
    out += types_[id].name;
  }
  index_.for_each([&](Oid oid, const IndexEntry& e) {
    logfmt::put_u64(out, oid.value());
    logfmt::put_u64(out, e.offset);
    logfmt::put_u64(out, e.version);
    logfmt::put_u32(out, e.length);
    logfmt::put_u32(out, e.type);
    std::string_view key = key_of(oid);
    out.push_back(static_cast<char>(key.size() & 0xff));
    out.push_back(static_cast<char>(key.size() >> 8));
    out += key;
  });
}

std::optional<FileIndex::CheckpointHead> FileIndex::decode_checkpoint(std::string_view body,
                                                                      std::uint32_t count) {
  std::size_t at = 0;
  auto need = [&](std::size_t n) { return body.size() - at >= n; };
  if (!need(20)) return std::nullopt;
  CheckpointHead head{logfmt::get_u64(body.data()), logfmt::get_u64(body.data() + 8)};
  std::uint32_t type_count = logfmt::get_u32(body.data() + 16);
  at = 20;
  std::vector<std::string_view> names{""};
  for (std::uint32_t i = 0; i < type_count; ++i) {
    if (!need(1)) return std::nullopt;
    std::size_t len = static_cast<unsigned char>(body[at++]);
    if (!need(len)) return std::nullopt;
    names.push_back(body.substr(at, len));
    at += len;
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!need(34)) return std::nullopt;
    const char* p = body.data() + at;
    Oid oid(logfmt::get_u64(p));
    std::uint64_t offset = logfmt::get_u64(p + 8);
    std::uint64_t version = logfmt::get_u64(p + 16);
    std::uint32_t length = logfmt::get_u32(p + 24);
    std::uint32_t type = logfmt::get_u32(p + 28);
    std::size_t key_len = static_cast<unsigned char>(p[32]) |
                          (static_cast<std::size_t>(static_cast<unsigned char>(p[33])) << 8);
    at += 34;
    if (!need(key_len) || type >= names.size() || version == 0 || key_len > 1024 ||
        oid.value() >= file_store_max_oid || (!oid.is_root() && oid.value() >= head.next_oid) ||
        index_.find(oid) != nullptr) {
      return std::nullopt;
    }
    put(oid, offset, length, version, names[type], body.substr(at, key_len));
    at += key_len;
  }
  if (body.size() - at == 8) {
    head.fence_mark = logfmt::get_u64(body.data() + at);
    if (head.fence_mark == 0 || head.fence_mark > logfmt::max_fence_mark) return std::nullopt;
    at += 8;
  }
  if (at != body.size()) return std::nullopt;
  return head;
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
