// The stores the object-layer tests run on: a typed fixture that owns a Database over a
// MemoryStore or a FileStore in a fresh temporary directory, and can reopen it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "cairn/codec.h"
#include "cairn/database.h"
#include "cairn/file_store.h"
#include "cairn/store.h"
#include "support/temp_dir.h"

namespace cairn::testing {

struct MemoryBackend {
  static constexpr bool persistent = false;
  std::unique_ptr<Store> open() { return make_memory_store(); }
};

struct FileBackend {
  static constexpr bool persistent = true;
  std::unique_ptr<Store> open() {
    FileStoreOptions options;
    options.fsync = FsyncPolicy::never;  // durability is FileStore's own tests' business
    options.log = [](std::string_view) {};
    return FileStore::open(dir.file("db.cairn"), options);
  }
  TempDir dir;
};

struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, MemoryBackend> ? "Memory" : "File";
  }
};

using Backends = ::testing::Types<MemoryBackend, FileBackend>;

template <typename Backend>
class OnEachStore : public ::testing::Test {
 protected:
  void SetUp() override { open_database(); }

  void open_database(DatabaseOptions options = {}) {
    db.reset();
    db.emplace(backend.open(), options);
  }

  // For a FileStore: closes the database and opens the file again. For a MemoryStore there is
  // nothing to reopen: the same database stays.
  void reopen() {
    if constexpr (Backend::persistent) open_database(db->options());
  }

  Value stored(Oid oid) {
    Oid one[] = {oid};
    StoredObject obj = db->store().load(one).objects.at(0);
    return obj.exists() ? decode(obj.data) : Value();
  }

  // The object's data as the store holds it (empty if absent).
  std::string stored_data(Oid oid) {
    Oid one[] = {oid};
    return db->store().load(one).objects.at(0).data;
  }

  bool stored_exists(Oid oid) {
    Oid one[] = {oid};
    return db->store().load(one).objects.at(0).exists();
  }

  Backend backend;
  std::optional<Database> db;
};

}  // namespace cairn::testing
