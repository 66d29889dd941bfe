// ForwardingStore: a Store that passes every call to another one. Tests derive from it to
// count, delay or change a few calls and leave the rest alone.
#pragma once

#include <memory>

#include "cairn/store.h"

namespace cairn::testing {

class ForwardingStore : public Store {
 public:
  LoadResult load(std::span<const Oid> oids) override { return inner().load(oids); }
  std::uint64_t commit(const CommitRequest& r) override { return inner().commit(r); }
  Changes changes_since(std::uint64_t csn) override { return inner().changes_since(csn); }
  Subscription subscribe(CommitListener l) override { return inner().subscribe(std::move(l)); }
  Oid new_oids(std::uint32_t count) override { return inner().new_oids(count); }
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override {
    return inner().scan_type(type, after, limit);
  }
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override {
    return inner().scan_keys(type, prefix, after, limit);
  }
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override {
    return inner().find_key(type, key);
  }
  std::optional<std::uint64_t> lock(const LockRequest& r) override { return inner().lock(r); }
  bool unlock(std::string_view name, std::string_view owner) override {
    return inner().unlock(name, owner);
  }
  bool renew(std::string_view name, std::string_view owner,
             std::chrono::milliseconds ttl) override {
    return inner().renew(name, owner, ttl);
  }
  PackStats pack() override { return inner().pack(); }
  bool is_remote() const override { return inner().is_remote(); }
  bool hears_commits() const override { return inner().hears_commits(); }

 protected:
  virtual Store& inner() const = 0;
};

// A ForwardingStore in front of a MemoryStore of its own, which a test may reach or replace.
class OverMemoryStore : public ForwardingStore {
 protected:
  Store& inner() const override { return *inner_; }
  std::unique_ptr<Store> inner_ = make_memory_store();
};

}  // namespace cairn::testing
