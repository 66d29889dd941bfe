// The commands over a database file, driven through the real cairn binary: info, check, pack,
// dump and restore. Each test builds its database in-process and works in its own directory.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cairn/codec.h>
#include <cairn/file_store.h>
#include <cairn/kv.h>
#include <cairn/value.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace cairn::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Json = nlohmann::json;

// The oids the sample database gives its objects.
struct Sample {
  Oid alice, bob, note, orphan, blob, latin1;
};

// A root map that refers to two users and an untyped note; an untyped, unreferenced object
// (garbage for pack); and, with `with_raw`, an object whose data is not a codec value and one
// whose value JSON cannot hold (a string that is not UTF-8).
Sample make_database(const std::string& path, bool with_raw = false) {
  auto store = FileStore::open(path);
  Oid first = store->new_oids(6);
  Sample s{first,
           Oid(first.value() + 1),
           Oid(first.value() + 2),
           Oid(first.value() + 3),
           Oid(first.value() + 4),
           Oid(first.value() + 5)};
  CommitRequest tx;
  tx.writes.push_back(
      {s.alice, "User", "alice",
       encode(Value::Map{
           {"name", "Alice"}, {"age", 30}, {"joined", Timestamp{1'700'000'000'000'001}}})});
  tx.writes.push_back(
      {s.bob, "User", "bob",
       encode(Value::Map{{"name", "Bob"}, {"avatar", Bytes{std::string("\x00\xff", 2)}}})});
  tx.writes.push_back({s.note, "", "", encode(Value::List{"untyped", 1.5, Decimal("1.10")})});
  tx.writes.push_back({s.orphan, "", "", encode("nobody refers to me")});
  if (with_raw) {
    tx.writes.push_back({s.blob, "Blob", "", std::string("\xc1\x00 not msgpack", 14)});
    tx.writes.push_back({s.latin1, "Blob", "latin1", encode("caf\xe9")});
  }
  tx.writes.push_back(
      {Oid::root(), "", "",
       encode(Value::Map{{"users", Value::List{Ref{s.alice, "User"}, Ref{s.bob, "User"}}},
                         {"note", Ref{s.note, ""}}})});
  store->commit(tx);
  return s;
}

// The object lines of a dump, without "generation" (which restore does not keep): the lines
// between the header and the trailer.
std::vector<Json> dumped_objects(const std::string& dump) {
  std::vector<Json> objects;
  std::vector<std::string> lines = lines_of(dump);
  for (std::size_t i = 1; i + 1 < lines.size(); ++i) {
    Json j = Json::parse(lines[i]);
    j.erase("generation");
    objects.push_back(std::move(j));
  }
  return objects;
}

std::string joined_lines(const std::vector<std::string>& lines, std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count && i < lines.size(); ++i)
    text += lines[i] + "\n";
  return text;
}

// Every live object of the database at `path`, in oid order, with its type, key and data.
std::vector<StoredObject> live_objects(const std::string& path) {
  auto store = FileStore::open(path);
  std::vector<Oid> oids;
  for (std::uint64_t i = 0; i < store->info().next_oid; ++i)
    oids.push_back(Oid(i));
  std::vector<StoredObject> live;
  for (StoredObject& object : store->load(oids).objects) {
    if (object.exists()) live.push_back(std::move(object));
  }
  return live;
}

TEST(FileCli, EveryCommandHasHelp) {
  for (const char* command : {"info", "check", "pack", "dump", "restore"}) {
    ProcessResult r = cairn({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command << ": " << r.err;
    EXPECT_NE(r.out.find(std::string("Usage: cairn ") + command), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("PATH"), std::string::npos) << r.out;
  }
  ProcessResult top = cairn({"--help"});
  for (const char* command : {"info", "check", "pack", "dump", "restore"})
    EXPECT_NE(top.out.find(command), std::string::npos) << top.out;
}

TEST(FileCli, InfoShowsTheObjectCount) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  ProcessResult r = cairn({"info", db});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\nobjects: 5\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("path: " + db + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nfsync policy: batch\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ntorn tail: none\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ncreated: 20"), std::string::npos) << r.out;
  for (const char* name : {"format version", "file bytes", "live bytes", "garbage bytes",
                           "last csn", "next oid", "transactions", "index bytes"})
    EXPECT_NE(r.out.find(std::string("\n") + name), std::string::npos) << name << "\n" << r.out;
}

TEST(FileCli, InfoJsonIsOneObjectAndAcceptsAFileUrl) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  ProcessResult r = cairn({"info", "--json", "file:" + db});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j.at("objects"), 5);
  EXPECT_EQ(j.at("path"), db);
  EXPECT_EQ(j.at("fsync"), "batch");
  EXPECT_EQ(j.at("last_csn"), 1);
  EXPECT_TRUE(j.at("torn_tail").is_null());
  EXPECT_GT(j.at("file_bytes").get<std::uint64_t>(), 0u);
}

TEST(FileCli, InfoCheckDumpAndPackOfAMissingFileFailClearlyAndCreateNothing) {
  TempDir dir;
  std::string db = dir.file("missing.cairn");
  for (const char* command : {"info", "check", "dump", "pack"}) {
    ProcessResult r = cairn({command, db});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find("cairn: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(db), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(fs::exists(db)) << command;
  }
}

TEST(FileCli, CheckPassesOnAGoodFile) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  ProcessResult r = cairn({"check", db});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind("ok: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(", 5 objects\n"), std::string::npos) << r.out;
}

TEST(FileCli, CheckFailsNamingAnOffsetAfterAByteFlips) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  std::string bytes = read_file(db);
  ASSERT_GT(bytes.size(), 200u);
  bytes[bytes.size() / 2] ^= 0x5a;
  write_file(db, bytes);
  ProcessResult r = cairn({"check", db});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("offset"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("problem"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(db), bytes) << "check wrote to the file";
}

TEST(FileCli, InfoAndCheckReportATornTailAndLeaveTheFileAsItIs) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  std::string whole = read_file(db);
  write_file(db, whole + std::string("ctxn\x01\x00\x00", 7));  // a transaction cut short

  ProcessResult info = cairn({"info", db});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find(fmt::format("\ntorn tail: 7 bytes at offset {}\n", whole.size())),
            std::string::npos)
      << info.out;
  ProcessResult json = cairn({"info", "--json", db});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(Json::parse(json.out).at("torn_tail"), (Json{{"bytes", 7}, {"offset", whole.size()}}));

  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.out.find(fmt::format("offset {}", whole.size())), std::string::npos) << check.out;
  EXPECT_EQ(read_file(db).size(), whole.size() + 7) << "a read-only command cut the tail";
}

TEST(FileCli, ADatabaseInUseIsReportedWithItsHolder) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  make_database(db);
  auto holder = FileStore::open(db);
  for (const char* command : {"info", "dump", "pack"}) {
    ProcessResult r = cairn({command, db});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find(fmt::format("in use by pid {}", getpid())), std::string::npos)
        << command << ": " << r.err;
  }
}

TEST(FileCli, DumpWritesAHeaderThenOneLinePerObjectInOidOrder) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  Sample s = make_database(db, true);
  ProcessResult r = cairn({"dump", db});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 9u) << r.out;
  Json header = Json::parse(lines[0]);
  EXPECT_EQ(header.at("format"), "cairn-dump");
  EXPECT_EQ(header.at("version"), 3);
  EXPECT_EQ(header.at("csn"), 1);
  EXPECT_EQ(header.at("fence_mark"), 1) << "no lock was ever taken";
  EXPECT_GT(header.at("next_oid").get<std::uint64_t>(), s.blob.value());
  EXPECT_EQ(lines[0].rfind(R"({"format":"cairn-dump","version":3,"next_oid":)", 0), 0u);
  EXPECT_EQ(lines[8], R"({"end":"cairn-dump","objects":7})");

  std::vector<Json> objects;
  for (std::size_t i = 1; i + 1 < lines.size(); ++i)
    objects.push_back(Json::parse(lines[i]));
  for (std::size_t i = 1; i < objects.size(); ++i)
    EXPECT_LT(objects[i - 1].at("oid"), objects[i].at("oid"));
  const Json& root = objects[0];
  EXPECT_EQ(root.at("oid"), 0);
  EXPECT_FALSE(root.contains("type"));
  EXPECT_FALSE(root.contains("key"));
  EXPECT_EQ(root.at("generation"), 1);
  EXPECT_EQ(root.at("fields").at("users")[0], (Json{{"$ref", s.alice.value()}, {"$type", "User"}}));
  EXPECT_EQ(root.at("fields").at("note"), (Json{{"$ref", s.note.value()}}));
  const Json& alice = objects[1];
  EXPECT_EQ(alice.at("type"), "User");
  EXPECT_EQ(alice.at("key"), "alice");
  EXPECT_EQ(alice.at("fields").at("name"), "Alice");
  EXPECT_EQ(alice.at("fields").at("joined"), (Json{{"$time", "2023-11-14T22:13:20.000001Z"}}));
  EXPECT_EQ(objects[2].at("fields").at("avatar"), (Json{{"$bytes", "AP8="}}));
  const Json& blob = objects[5];
  EXPECT_EQ(blob.at("oid"), s.blob.value());
  EXPECT_FALSE(blob.contains("fields"));
  EXPECT_EQ(blob.at("raw"), (Json{{"$bytes", "wQAgbm90IG1zZ3BhY2s="}}));
  const Json& latin1 = objects[6];
  EXPECT_EQ(latin1.at("key"), "latin1");
  EXPECT_FALSE(latin1.contains("fields")) << "JSON would turn the \\xe9 into U+FFFD";
  EXPECT_TRUE(latin1.contains("raw"));
}

TEST(FileCli, DumpRestoreDumpGivesTheSameObjects) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  Sample s = make_database(a, true);
  ProcessResult first = cairn({"dump", a});
  ASSERT_EQ(first.exit_code, 0) << first.err;

  ProcessResult restored = cairn({"restore", "--fsync", "never", b}, first.out);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.out, "restored 7 objects\n");

  ProcessResult second = cairn({"dump", "file:" + b});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(dumped_objects(second.out), dumped_objects(first.out));

  // The restored database is a whole, valid one whose oids past the dump's are fresh.
  auto store = FileStore::open(b);
  Oid fresh = store->new_oids(1);
  EXPECT_GE(fresh.value(), Json::parse(lines_of(first.out)[0]).at("next_oid").get<std::uint64_t>());
  LoadResult loaded = store->load(std::vector<Oid>{Oid::root(), s.blob, s.latin1});
  ASSERT_TRUE(loaded.objects[0].exists());
  EXPECT_EQ(decode(loaded.objects[0].data).find("note")->as_ref().oid, s.note);
  EXPECT_EQ(loaded.objects[1].data, std::string("\xc1\x00 not msgpack", 14));
  EXPECT_EQ(decode(loaded.objects[2].data), Value("caf\xe9"));
  EXPECT_EQ(store->find_key("User", "bob"), s.bob);
  EXPECT_EQ(store->find_key("Blob", "latin1"), s.latin1);
}

// Data other MessagePack writers produce decodes to a Value, but encoding that Value gives other
// bytes: dump wrote it as "fields", and restore changed the bytes (and lost nanoseconds below
// the microsecond). It is written as "raw" now, and comes back byte for byte.
TEST(FileCli, DumpAndRestoreKeepFormsCairnDoesNotWrite) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  const std::vector<std::string> forms = {
      std::string("\xcd\x00\x01", 3),          // 1 as a uint 16
      std::string("\xca\x3f\xc0\x00\x00", 5),  // 1.5 as a float 32
      std::string("\x82\xa1"
                  "b\x01\xa1"
                  "a\x02",
                  7),  // {"b":1,"a":2}: keys out of order
      // A timestamp of 1 s and 1 ns, in the 96-bit form: the nanosecond is below what a Value
      // holds.
      std::string("\xc7\x0c\xff\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01", 15),
  };
  {
    auto store = FileStore::open(a);
    Oid first = store->new_oids(static_cast<std::uint32_t>(forms.size() + 1));
    CommitRequest tx;
    for (std::size_t i = 0; i < forms.size(); ++i)
      tx.writes.push_back({Oid(first.value() + i), "", "", forms[i]});
    tx.writes.push_back(
        {Oid(first.value() + forms.size()), "", "", encode(Value::Map{{"a", 1}, {"b", 2}})});
    store->commit(tx);
  }
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<Json> objects = dumped_objects(dump.out);
  ASSERT_EQ(objects.size(), forms.size() + 1);
  for (std::size_t i = 0; i < forms.size(); ++i)
    EXPECT_TRUE(objects[i].contains("raw")) << objects[i].dump();
  EXPECT_TRUE(objects.back().contains("fields")) << "cairn's own form stays readable";

  ProcessResult restored = cairn({"restore", "--fsync", "never", b}, dump.out);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  FileStoreOptions read_only;
  read_only.read_only = true;
  auto original = FileStore::open(a, read_only);
  auto copy = FileStore::open(b);
  std::vector<Oid> oids;
  for (const Json& object : objects)
    oids.push_back(Oid(object.at("oid").get<std::uint64_t>()));
  LoadResult before = original->load(oids);
  LoadResult after = copy->load(oids);
  for (std::size_t i = 0; i < oids.size(); ++i)
    EXPECT_EQ(after.objects[i].data, before.objects[i].data) << "object " << oids[i].value();
}

// The file commands work on database files: another store's URL used to be taken for a file
// name, so `restore memory:` made a file called "memory:" and said it had restored.
TEST(FileCli, FileCommandsRefuseOtherStoresUrls) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  make_database(a, true);
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  for (std::string url : {"memory:", "redis://localhost", "redis+unix:///tmp/x.sock",
                          "cairn://localhost:2972", "cairns://localhost"}) {
    ProcessResult restored = cairn({"restore", url}, dump.out);
    EXPECT_EQ(restored.exit_code, 1) << url << ": " << restored.out;
    EXPECT_NE(restored.err.find("names another kind of store"), std::string::npos) << restored.err;
    EXPECT_FALSE(std::filesystem::exists(url)) << "restore made a file called " << url;
    std::filesystem::remove(url);
    std::filesystem::remove(url + ".lock");
    for (const char* command : {"info", "check", "pack", "dump"}) {
      ProcessResult r = cairn({command, url});
      EXPECT_NE(r.exit_code, 0) << command << " " << url;
      EXPECT_NE(r.err.find("names another kind of store"), std::string::npos)
          << command << " " << url << ": " << r.err;
    }
  }
  // A file that is so named is still reachable, as ./NAME.
  std::string named = dir.file("memory:");
  ProcessResult restored = cairn({"restore", named}, dump.out);
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_TRUE(std::filesystem::exists(named));
}

// A store takes any bytes as a type or key, and a JSON string holds only UTF-8: dump used to
// stop at the first such object with "has a key that is not valid UTF-8", leaving a partial
// dump. Such a type or key is written as {"$bytes": ...} and restored byte for byte; UTF-8 ones
// stay JSON strings, NULs included.
TEST(FileCli, DumpAndRestoreKeepTypesAndKeysThatAreNotUtf8) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  const std::vector<std::string> keys = {
      "\xff\xfe",
      std::string("a\0b\xff", 4),          // a NUL among bytes that are not UTF-8
      std::string("nul\0in", 6),           // a NUL in UTF-8: a JSON string
      "\xc0\x80",                          // an overlong NUL
      "\xed\xa0\x80",                      // a UTF-16 surrogate
      "caf\xe9",                           // Latin-1
      "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87",  // "ключ", UTF-8
      "\xe2\x82",                          // a truncated sequence
  };
  Oid odd_type;
  {
    auto store = FileStore::open(a);
    KvView kv(*store);
    for (std::size_t i = 0; i < keys.size(); ++i)
      kv.upsert(keys[i], Value::Map{{"n", static_cast<std::int64_t>(i)}});
    odd_type = store->new_oids(1);
    CommitRequest tx;
    tx.writes.push_back({odd_type, std::string("T\xff\x00", 3), "\x80", encode("typed")});
    store->commit(tx);
  }
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  EXPECT_TRUE(dump.err.empty()) << dump.err;
  std::vector<std::string> lines = lines_of(dump.out);
  ASSERT_EQ(lines.size(), keys.size() + 3) << dump.out;  // header, keys, odd_type, trailer
  EXPECT_EQ(lines.back(), fmt::format(R"({{"end":"cairn-dump","objects":{}}})", keys.size() + 1));
  std::vector<Json> objects = dumped_objects(dump.out);
  ASSERT_EQ(objects.size(), keys.size() + 1);
  EXPECT_EQ(objects[0].at("type"), "cairn.kv");
  EXPECT_EQ(objects[0].at("key"), (Json{{"$bytes", "//4="}}));
  EXPECT_EQ(objects[1].at("key"), (Json{{"$bytes", "YQBi/w=="}}));
  EXPECT_EQ(objects[2].at("key"), std::string("nul\0in", 6));
  EXPECT_NE(lines[3].find(R"("key":"nul\u0000in")"), std::string::npos) << lines[3];
  EXPECT_EQ(objects[3].at("key"), (Json{{"$bytes", "wIA="}}));
  EXPECT_EQ(objects[4].at("key"), (Json{{"$bytes", "7aCA"}}));
  EXPECT_EQ(objects[5].at("key"), (Json{{"$bytes", "Y2Fm6Q=="}}));
  EXPECT_EQ(objects[6].at("key"), keys[6]);
  EXPECT_EQ(objects[7].at("key"), (Json{{"$bytes", "4oI="}}));
  EXPECT_EQ(objects[8].at("type"), (Json{{"$bytes", "VP8A"}}));
  EXPECT_EQ(objects[8].at("key"), (Json{{"$bytes", "gA=="}}));

  ProcessResult restored = cairn({"restore", "--fsync", "never", b}, dump.out);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.out, fmt::format("restored {} objects\n", keys.size() + 1));

  std::vector<StoredObject> before = live_objects(a);
  std::vector<StoredObject> after = live_objects(b);
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].oid, before[i].oid) << i;
    EXPECT_EQ(after[i].type, before[i].type) << i;
    EXPECT_EQ(after[i].key, before[i].key) << i;
    EXPECT_EQ(after[i].data, before[i].data) << i;
  }
  auto store = FileStore::open(b);
  KvView kv(*store);
  for (std::size_t i = 0; i < keys.size(); ++i)
    EXPECT_EQ(kv.fetch_one(keys[i]), (Value::Map{{"n", static_cast<std::int64_t>(i)}})) << i;
  EXPECT_EQ(store->find_key(std::string("T\xff\x00", 3), "\x80"), odd_type);
}

TEST(FileCli, RestoreReadsTypesAndKeysAsBytesAndRefusesBadOnes) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  std::string header = R"({"format":"cairn-dump","version":2,"next_oid":3,"csn":1})";
  for (const char* bad :
       {R"({"oid":1,"key":{"$bytes":"!!"},"fields":1})",
        R"({"oid":1,"key":{"$bytes":"AA=="},"type":{"$time":"x"},"fields":1})",
        R"({"oid":1,"key":{"$bytes":1},"fields":1})",
        R"({"oid":1,"key":{"$bytes":"AA==","x":1},"fields":1})",
        R"({"oid":1,"key":["a"],"fields":1})", R"({"oid":1,"key":1,"fields":1})"}) {
    ProcessResult r =
        cairn({"restore", b}, header + "\n" + bad + "\n" + R"({"end":"cairn-dump","objects":1})");
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("line 2: "), std::string::npos) << bad << ": " << r.err;
    EXPECT_FALSE(fs::exists(b)) << bad;
  }
  // The same key twice, once as bytes, is refused naming it as dump writes it.
  ProcessResult twice = cairn({"restore", b}, header + "\n" +
                                                  R"({"oid":1,"key":{"$bytes":"/w=="},"fields":1})"
                                                  "\n" +
                                                  R"({"oid":2,"key":{"$bytes":"/w=="},"fields":1})"
                                                  "\n" +
                                                  R"({"end":"cairn-dump","objects":2})");
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find(R"(line 3: type "" key {"$bytes":"/w=="} is also on line 2)"),
            std::string::npos)
      << twice.err;
  // A UTF-8 key may be written either way.
  ProcessResult ok =
      cairn({"restore", b}, header + "\n" +
                                R"({"oid":1,"type":"T","key":{"$bytes":"aGk="},"fields":1})"
                                "\n" +
                                R"({"end":"cairn-dump","objects":1})" + "\n");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(FileStore::open(b)->find_key("T", "hi"), Oid(1));
}

// A restored database used to start fencing tokens at 1 again, so a holder of a lock on the
// dumped database could pass a fencing check against one newly granted on the restored one.
TEST(FileCli, RestoreKeepsFencingTokensAboveEveryOneTheDumpedDatabaseHandedOut) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  std::uint64_t last = 0;
  {
    auto store = FileStore::open(a);
    for (int i = 0; i < 1500; ++i) {  // past one reservation of 1024 tokens
      std::optional<std::uint64_t> token = store->lock(LockRequest{"l", "me"});
      ASSERT_TRUE(token.has_value());
      last = *token;
      ASSERT_TRUE(store->unlock("l", "me"));
    }
  }
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  Json header = Json::parse(lines_of(dump.out).at(0));
  EXPECT_GT(header.at("fence_mark").get<std::uint64_t>(), last);
  ProcessResult restored = cairn({"restore", b}, dump.out);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  // After a reopen too: the raised mark is in the file.
  auto store = FileStore::open(b);
  std::optional<std::uint64_t> token = store->lock(LockRequest{"l", "other"});
  ASSERT_TRUE(token.has_value());
  EXPECT_GT(*token, last);
  EXPECT_GE(store->info().fence_mark, header.at("fence_mark").get<std::uint64_t>());
}

TEST(FileCli, RestoreChecksTheFenceMarkOfTheHeader) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  std::string trailer = R"({"end":"cairn-dump","objects":0})";
  for (const char* bad : {R"({"format":"cairn-dump","version":3,"next_oid":1,"csn":0})",
                          R"({"format":"cairn-dump","version":3,"next_oid":1,"csn":0,)"
                          R"("fence_mark":4611686018427387905})",
                          R"({"format":"cairn-dump","version":2,"next_oid":1,"csn":0,)"
                          R"("fence_mark":5})"}) {
    ProcessResult r = cairn({"restore", b}, std::string(bad) + "\n" + trailer + "\n");
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("line 1: "), std::string::npos) << bad << ": " << r.err;
    EXPECT_FALSE(fs::exists(b)) << bad;
  }
  // A version 2 dump has no fence mark: the restored database starts its tokens at 1.
  ProcessResult old =
      cairn({"restore", b}, R"({"format":"cairn-dump","version":2,"next_oid":1,"csn":0})"
                            "\n" +
                                trailer + "\n");
  ASSERT_EQ(old.exit_code, 0) << old.err;
  EXPECT_EQ(FileStore::open(b)->lock(LockRequest{"l", "me"}), 1u);
}

// Dump walked every oid below next_oid: a one-object database with oids near 2^40 handed out
// ran for hours. It now walks the live objects.
TEST(FileCli, DumpTimeFollowsTheObjectsNotTheOidsHandedOut) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  std::uint64_t last = (std::uint64_t{1} << 40) - 1;
  std::string input = fmt::format(
      "{{\"format\":\"cairn-dump\",\"version\":3,\"next_oid\":{},\"csn\":1,"
      "\"fence_mark\":1}}\n"
      "{{\"oid\":0,\"fields\":{{\"far\":{{\"$ref\":{}}}}}}}\n"
      "{{\"oid\":{},\"fields\":\"far away\"}}\n"
      "{{\"end\":\"cairn-dump\",\"objects\":2}}\n",
      last + 1, last, last);
  ProcessResult restored = cairn({"restore", b}, input);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  ProcessResult dump = run_process({CAIRN_BINARY, "dump", b}, "", std::chrono::seconds(20));
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<std::string> lines = lines_of(dump.out);
  ASSERT_EQ(lines.size(), 4u) << dump.out;
  EXPECT_EQ(Json::parse(lines[2]).at("oid"), last);
  EXPECT_EQ(lines[3], R"({"end":"cairn-dump","objects":2})");
}

// A dump cut at any line boundary before its trailer (a full disk, a killed dump) used to
// restore as if whole. Restore now refuses it and writes nothing, neither to a new file nor to
// an existing empty one.
TEST(FileCli, RestoreRefusesADumpCutBeforeItsTrailerAndWritesNothing) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  std::string empty = dir.file("empty.cairn");
  make_database(a, true);
  FileStore::open(empty).reset();
  std::string empty_bytes = read_file(empty);
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<std::string> lines = lines_of(dump.out);
  ASSERT_EQ(lines.size(), 9u);
  for (std::size_t kept = 1; kept < lines.size(); ++kept) {
    std::string cut = joined_lines(lines, kept);
    for (const std::string& target : {b, empty}) {
      ProcessResult r = cairn({"restore", target}, cut);
      EXPECT_EQ(r.exit_code, 1) << kept;
      EXPECT_NE(r.err.find(fmt::format(
                    "the dump ends without its trailer line: it was cut short after {} object{}",
                    kept - 1, kept == 2 ? "" : "s")),
                std::string::npos)
          << kept << ": " << r.err;
      EXPECT_TRUE(r.out.empty()) << r.out;
    }
    EXPECT_FALSE(fs::exists(b)) << kept;
    EXPECT_FALSE(fs::exists(b + ".lock")) << kept;
    EXPECT_EQ(read_file(empty), empty_bytes) << kept;
  }
  // Without the last newline the dump is whole.
  std::string whole = joined_lines(lines, lines.size());
  whole.pop_back();
  ProcessResult r = cairn({"restore", b}, whole);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "restored 7 objects\n");
}

TEST(FileCli, RestoreRefusesATrailerThatDisagreesOrIsNotLast) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  make_database(a);
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<std::string> lines = lines_of(dump.out);
  ASSERT_EQ(lines.size(), 7u);
  ASSERT_EQ(lines[6], R"({"end":"cairn-dump","objects":5})");

  std::vector<std::string> missing = lines;  // an object line lost from the middle
  missing.erase(missing.begin() + 3);
  std::vector<std::string> more = lines;
  more[6] = R"({"end":"cairn-dump","objects":6})";
  std::vector<std::string> after = lines;
  after.push_back(lines[6]);
  std::vector<std::string> object_after = lines;
  object_after.push_back(lines[5]);
  std::vector<std::string> wrong_name = lines;
  wrong_name[6] = R"({"end":true,"objects":5})";
  std::vector<std::string> extra = lines;
  extra[6] = R"({"end":"cairn-dump","objects":5,"csn":1})";
  std::vector<std::string> no_count = lines;
  no_count[6] = R"({"end":"cairn-dump"})";
  struct Case {
    std::vector<std::string> lines;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {missing, "line 6: the trailer counts 5 objects but the dump holds 4"},
           {more, "line 7: the trailer counts 6 objects but the dump holds 5"},
           {after, "line 8: a line after the trailer line (line 7)"},
           {object_after, "line 8: a line after the trailer line (line 7)"},
           {wrong_name, R"(line 7: the trailer's "end" must be "cairn-dump")"},
           {extra, R"(line 7: unknown member "csn")"},
           {no_count, R"(line 7: "objects" is missing)"},
       }) {
    ProcessResult r = cairn({"restore", b}, joined_lines(c.lines, c.lines.size()));
    EXPECT_EQ(r.exit_code, 1) << c.error;
    EXPECT_NE(r.err.find(c.error), std::string::npos) << c.error << ": " << r.err;
    EXPECT_FALSE(fs::exists(b)) << c.error;
  }
  // Blank lines after the trailer are fine.
  ProcessResult blank = cairn({"restore", b}, dump.out + "\n  \n");
  EXPECT_EQ(blank.exit_code, 0) << blank.err;
}

// Dumps of version 1, from before the trailer, still restore without one; a trailer line in one
// is not part of that format.
TEST(FileCli, RestoreReadsAVersion1DumpWithoutATrailer) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  std::string v1 = std::string(R"({"format":"cairn-dump","version":1,"next_oid":3,"csn":4})") +
                   "\n" + R"({"oid":0,"generation":4,"fields":{"a":{"$ref":2}}})" + "\n" +
                   R"({"oid":2,"type":"User","key":"bob","generation":4,"fields":{"n":1}})" + "\n";
  ProcessResult trailer = cairn({"restore", b}, v1 + R"({"end":"cairn-dump","objects":2})" + "\n");
  EXPECT_EQ(trailer.exit_code, 1);
  EXPECT_NE(trailer.err.find(R"(line 4: unknown member "end")"), std::string::npos) << trailer.err;
  EXPECT_FALSE(fs::exists(b));

  ProcessResult r = cairn({"restore", b}, v1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "restored 2 objects\n");
  EXPECT_EQ(FileStore::open(b)->find_key("User", "bob"), Oid(2));
}

TEST(FileCli, RestoreRefusesAMalformedLineAndCreatesNothing) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  std::string b = dir.file("b.cairn");
  make_database(a);
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::vector<std::string> lines = lines_of(dump.out);
  ASSERT_GE(lines.size(), 4u);
  lines[2] = lines[2].substr(0, lines[2].size() / 2);  // line 3: cut off mid-object
  std::string input;
  for (const std::string& line : lines)
    input += line + "\n";

  ProcessResult r = cairn({"restore", b}, input);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(b));
  EXPECT_FALSE(fs::exists(b + ".lock"));
}

TEST(FileCli, RestoreRefusesABadLineAfterGoodOnesAndLeavesAnEmptyTargetUnchanged) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  FileStore::open(b).reset();  // an empty database
  std::string before = read_file(b);
  for (const char* bad :
       {R"({"oid":2,"fields":{"$nope":1}})", R"({"oid":2})",
        R"({"oid":2,"fields":1,"raw":{"$bytes":""}})", R"({"oid":-2,"fields":1})",
        R"({"oid":2,"fields":1,"colour":"red"})", R"({"oid":99,"fields":1})",
        R"({"oid":1,"fields":1})", R"([1,2])", R"({"oid":2,"fields":{"n":18446744073709551616}})",
        // A member named twice: the parser kept the last one silently.
        R"({"oid":2,"oid":1,"fields":1})", R"({"oid":2,"fields":{"a":1,"a":2}})",
        R"({"oid":2,"fields":[{"$decimal":"1.10","$decimal":"2"}]})"}) {
    std::string input = std::string(R"({"format":"cairn-dump","version":1,"next_oid":3,"csn":1})") +
                        "\n" + R"({"oid":1,"fields":{"a":1}})" + "\n" + bad + "\n";
    ProcessResult r = cairn({"restore", b}, input);
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("line 3: "), std::string::npos) << bad << ": " << r.err;
    EXPECT_EQ(read_file(b), before) << bad;
  }
  // A NUL byte: the JSON parser took it for the end of the line and dropped what followed.
  std::string nul = std::string(R"({"format":"cairn-dump","version":1,"next_oid":3,"csn":1})") +
                    "\n" + R"({"oid":1,"fields":{"a":1}})" + std::string(1, '\0') + " ]]] junk\n";
  ProcessResult r = cairn({"restore", b}, nul);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("line 2: invalid JSON at byte 27: a NUL byte"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(b), before);
}

TEST(FileCli, RestoreRefusesInputThatIsNotADump) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  ProcessResult empty = cairn({"restore", b}, "");
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.err.find("empty"), std::string::npos) << empty.err;
  ProcessResult other = cairn({"restore", b}, "{\"oid\":1,\"fields\":1}\n");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("line 1: not a cairn dump"), std::string::npos) << other.err;
  for (const char* header : {R"({"format":"cairn-dump","version":4,"next_oid":1,"csn":0})",
                             R"({"format":"cairn-dump","version":0,"next_oid":1,"csn":0})"}) {
    ProcessResult version = cairn({"restore", b}, header);
    EXPECT_EQ(version.exit_code, 1);
    EXPECT_NE(version.err.find("line 1: dump version "), std::string::npos) << version.err;
    EXPECT_NE(version.err.find("is not supported (this cairn reads 1 to 3)"), std::string::npos)
        << version.err;
  }
  EXPECT_FALSE(fs::exists(b));
}

// An oid past what a database file holds is refused with the header's line, before anything is
// written: allocating toward it used to write oid marks until the oid space ran out, and leave
// the database unable to create another object.
TEST(FileCli, RestoreRefusesANextOidPastTheFileLimitAndWritesNothing) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  FileStore::open(b).reset();  // an empty database
  std::string before = read_file(b);
  ProcessResult r =
      cairn({"restore", b},
            "{\"format\":\"cairn-dump\",\"version\":1,\"next_oid\":2000000000000,\"csn\":0}\n"
            "{\"oid\":0,\"fields\":{\"a\":1}}\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 1: \"next_oid\" 2000000000000 is past the largest"), std::string::npos)
      << r.err;
  EXPECT_EQ(read_file(b), before);
  EXPECT_NE(FileStore::open(b)->new_oids(1).value(), 0u);
}

// Only a regular file can be a database: a FIFO used to make info, check and dump wait forever
// for a writer, a directory gave "No such device", and an empty path left a stray ".lock" and
// ".new" in the working directory.
TEST(FileCli, WhatCannotBeADatabaseIsRefusedAtOnceAndNothingIsMadeBesideIt) {
  TempDir dir;
  std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  std::string sub = dir.file("sub");
  fs::create_directory(sub);
  for (const char* command : {"info", "check", "dump", "pack"}) {
    ProcessResult r = run_process({CAIRN_BINARY, command, fifo}, "", 20s);
    EXPECT_EQ(r.exit_code, 1) << command << ": " << r.err;
    EXPECT_NE(r.err.find("it is not a regular file"), std::string::npos)
        << command << ": " << r.err;
    ProcessResult d = cairn({command, sub});
    EXPECT_EQ(d.exit_code, 1) << command << ": " << d.err;
    EXPECT_NE(d.err.find("it is a directory"), std::string::npos) << command << ": " << d.err;
  }
  ProcessResult restore =
      cairn({"restore", fifo}, R"({"format":"cairn-dump","version":1,"next_oid":1,"csn":0})");
  EXPECT_EQ(restore.exit_code, 1) << restore.err;
  EXPECT_NE(restore.err.find("it is not a regular file"), std::string::npos) << restore.err;
  EXPECT_FALSE(fs::exists(fifo + ".lock"));
  EXPECT_FALSE(fs::exists(sub + ".lock"));
  for (const char* command : {"restore ''", "pack ''", "shell -c 'get /' --file ''"}) {
    // From the directory, where a stray file of an empty path would appear.
    ProcessResult empty =
        run_process({"/bin/sh", "-c",
                     fmt::format("cd '{}' && exec '{}' {}", dir.path(), CAIRN_BINARY, command)},
                    R"({"format":"cairn-dump","version":1,"next_oid":1,"csn":0})");
    EXPECT_NE(empty.exit_code, 0) << command;
    EXPECT_NE(empty.err.find("the database path is empty"), std::string::npos) << empty.err;
  }
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir.path()))
    left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"fifo", "sub"}));
}

TEST(FileCli, RestoreIntoANonEmptyDatabaseFails) {
  TempDir dir;
  std::string a = dir.file("a.cairn");
  make_database(a);
  ProcessResult dump = cairn({"dump", a});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::string before = read_file(a);
  ProcessResult r = cairn({"restore", a}, dump.out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(a), before);
}

TEST(FileCli, PackReclaimsTheBytesOfOverwrittenAndUnreachableObjects) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  Sample s = make_database(db);
  {
    FileStoreOptions options;
    options.fsync = FsyncPolicy::never;
    auto store = FileStore::open(db, options);
    for (int i = 0; i < 200; ++i) {
      CommitRequest tx;
      tx.writes.push_back({s.alice, "User", "alice",
                           encode(Value::Map{{"name", "Alice"}, {"visits", i}, {"pad", "x"}})});
      store->commit(tx);
    }
  }
  ProcessResult r = cairn({"pack", "--fsync", "never", db});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << "no progress bar when stderr is not a terminal: " << r.err;
  unsigned long long objects_before = 0, objects_after = 0, bytes_before = 0, bytes_after = 0,
                     reclaimed = 0;
  ASSERT_EQ(
      std::sscanf(r.out.c_str(), "objects: %llu -> %llu, bytes: %llu -> %llu (reclaimed %llu)",
                  &objects_before, &objects_after, &bytes_before, &bytes_after, &reclaimed),
      5)
      << r.out;
  EXPECT_EQ(objects_before, 5u);
  EXPECT_EQ(objects_after, 4u);  // the orphan is gone
  EXPECT_LT(bytes_after, bytes_before);
  EXPECT_EQ(reclaimed, bytes_before - bytes_after);

  ProcessResult check = cairn({"check", db});
  EXPECT_EQ(check.exit_code, 0) << check.out;
  ProcessResult info = cairn({"info", db});
  EXPECT_NE(info.out.find("\nobjects: 4\n"), std::string::npos) << info.out;
}

TEST(FileCli, AnUnknownFsyncPolicyIsAUsageError) {
  TempDir dir;
  std::string db = dir.file("a.cairn");
  ProcessResult r = cairn({"pack", "--fsync", "sometimes", db});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("sometimes"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(db));
}

// docs/file-format.md 2.2: a fence mark is at least 1. A header with 0 was restored.
TEST(FileCli, RestoreRefusesAFenceMarkOfZero) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  ProcessResult r =
      cairn({"restore", b}, R"({"format":"cairn-dump","version":3,"next_oid":10,"csn":1,)"
                            R"("fence_mark":0})"
                            "\n"
                            R"({"end":"cairn-dump","objects":0})"
                            "\n");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("cairn: line 1: \"fence_mark\" 0 is below the smallest, 1"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(b));
}

// A dump whose objects refer to objects it does not hold is restored as it is (refusing would
// leave the data no way back in), with a warning for each reference: check reports them.
TEST(FileCli, RestoreWarnsOfReferencesToObjectsTheDumpDoesNotHold) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  ProcessResult r = cairn(
      {"restore", b}, R"({"format":"cairn-dump","version":3,"next_oid":10,"csn":1,"fence_mark":1})"
                      "\n"
                      R"({"oid":0,"generation":1,"fields":{"u":{"$ref":5},"v":{"$ref":1}}})"
                      "\n"
                      R"({"oid":1,"generation":1,"fields":[{"$ref":0},{"$ref":7}]})"
                      "\n"
                      R"({"oid":2,"generation":1,"raw":{"$bytes":"kw=="}})"
                      "\n"
                      R"({"end":"cairn-dump","objects":3})"
                      "\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "restored 3 objects\n");
  EXPECT_EQ(r.err,
            "cairn restore: warning: object 0 refers to object 5, which the dump does not hold\n"
            "cairn restore: warning: object 1 refers to object 7, which the dump does not hold\n");
  ProcessResult check = cairn({"check", b});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.out.find("refers to object 5"), std::string::npos) << check.out;
}

// A standard input that cannot be read (here a directory) was reported as "the input is empty".
TEST(FileCli, RestoreSaysWhenStandardInputCannotBeRead) {
  TempDir dir;
  std::string b = dir.file("b.cairn");
  ProcessResult r = run_process(
      {"/bin/sh", "-c", std::string(CAIRN_BINARY) + " restore " + b + " < " + dir.path()});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.err, "cairn: cannot read standard input: Is a directory\n");
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(b));
}

}  // namespace
}  // namespace cairn::testing
