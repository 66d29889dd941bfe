// The Durus quick demo in C++: a file database, its root map, commit, abort, a second connection
// that sees a commit only once it syncs, and a reopen that finds what was committed. Run by the
// test suite: exits nonzero if anything is not as the demo says.
#include <cairn/database.h>
#include <cairn/error.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

// A directory of its own under $TMPDIR, removed at the end.
struct TempDir {
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/durus-quickstart-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string path;
};

}  // namespace

int main() {
  try {
    TempDir dir;
    std::string url = "file:" + dir.path + "/quickstart.cairn";
    {
      cairn::Database db = cairn::Database::open(url);
      cairn::Connection conn = db.connect();    // connection = Connection(FileStorage(path))
      cairn::PersistentMap root = conn.root();  // root = connection.get_root()
      expect(root.size() == 0, "a new database has an empty root");

      root.set("a", 1);  // root['a'] = 1
      conn.commit();     // connection.commit()

      // Another connection (another durus client) reads the root ...
      cairn::Connection other = db.connect();
      expect(other.root().get("a") == cairn::Value(1), "the other connection sees a == 1");

      root.set("a", 2);  // an uncommitted change ...
      root.set("b", "draft");
      conn.abort();  // ... dropped: connection.abort()
      expect(root.get("a") == cairn::Value(1), "abort puts a back to 1");
      expect(!root.contains("b"), "abort drops b");

      // Objects reached from the root are persistent too.
      cairn::Object user = conn.create(cairn::Value::Map{{"name", "Harry"}}, "User", "harry");
      root.set("harry", user.ref());
      root.set("a", 3);
      conn.commit();

      // The other connection keeps showing what it has cached as of its snapshot until it syncs
      // (or aborts, or commits).
      expect(other.root().get("a") == cairn::Value(1), "the other connection still sees a == 1");
      other.sync();
      expect(other.root().get("a") == cairn::Value(3), "after sync it sees a == 3");
      cairn::Object seen = other.root().object_at("harry");
      expect(seen.get().find("name")->as_string() == "Harry", "and follows the reference");
    }
    {
      cairn::Database db = cairn::Database::open(url);  // reopen the file
      cairn::Connection conn = db.connect();
      cairn::PersistentMap root = conn.root();
      expect(root.get("a") == cairn::Value(3), "after reopening, a == 3");
      expect(!root.contains("b"), "and b was never committed");
      expect(root.object_at("harry").key() == "harry", "harry is still there, with his key");
    }
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
