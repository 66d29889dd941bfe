// eric-sse's persistence layer in C++: composite repositories (channels -> connections ->
// listeners and queues) built on the key-value view (cairn::KvView, the KvStorage contract) over
// a FileStore, with persist / load_one / load_all, a reopen that finds everything again, and
// the two eric-sse defects fixed: prefix search honours the ':' separator, and deleting while
// iterating works. Run by the test suite: exits nonzero if anything is not as it says.
#include <cairn/error.h>
#include <cairn/file_store.h>
#include <cairn/kv.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace sse {

struct Listener {
  std::string id;
  bool running = false;
};

struct Queue {
  std::vector<std::string> messages;
};

struct Connection {
  std::string id;
  Listener listener;
  Queue queue;
};

struct Channel {
  std::string id;
  int retry_timeout_ms = 5000;
  std::vector<Connection> connections;
};

// Each repository keeps its own key space in the one storage: "listener:CONN", "queue:CONN",
// "connection:CHANNEL:CONN", "channel:CHANNEL".
class ListenerRepository {
 public:
  explicit ListenerRepository(cairn::KvView& storage) : storage_(storage) {}
  void persist(const std::string& connection_id, const Listener& listener) {
    storage_.upsert("listener:" + connection_id,
                    cairn::Value::Map{{"id", listener.id}, {"running", listener.running}});
  }
  Listener load(const std::string& connection_id) {
    cairn::Value v = storage_.fetch_one("listener:" + connection_id);
    return Listener{v.find("id")->as_string(), v.find("running")->as_bool()};
  }
  void remove(const std::string& connection_id) { storage_.remove("listener:" + connection_id); }

 private:
  cairn::KvView& storage_;
};

class QueueRepository {
 public:
  explicit QueueRepository(cairn::KvView& storage) : storage_(storage) {}
  void persist(const std::string& connection_id, const Queue& queue) {
    cairn::Value::List messages(queue.messages.begin(), queue.messages.end());
    storage_.upsert("queue:" + connection_id, cairn::Value::Map{{"messages", messages}});
  }
  Queue load(const std::string& connection_id) {
    Queue queue;
    cairn::Value stored = storage_.fetch_one("queue:" + connection_id);
    for (const cairn::Value& m : stored.find("messages")->as_list())
      queue.messages.push_back(m.as_string());
    return queue;
  }
  void remove(const std::string& connection_id) { storage_.remove("queue:" + connection_id); }

 private:
  cairn::KvView& storage_;
};

class ConnectionRepository {
 public:
  ConnectionRepository(cairn::KvView& storage, ListenerRepository& listeners,
                       QueueRepository& queues)
      : storage_(storage), listeners_(listeners), queues_(queues) {}

  void persist(const std::string& channel_id, const Connection& connection) {
    storage_.upsert(key(channel_id, connection.id), cairn::Value::Map{{"id", connection.id}});
    listeners_.persist(connection.id, connection.listener);
    queues_.persist(connection.id, connection.queue);
  }
  Connection load_one(const std::string& channel_id, const std::string& connection_id) {
    cairn::Value v = storage_.fetch_one(key(channel_id, connection_id));
    return build(v.find("id")->as_string());
  }
  std::vector<Connection> load_all(const std::string& channel_id) {
    std::vector<Connection> out;
    for (const auto& [k, v] : storage_.fetch_by_prefix("connection:" + channel_id))
      out.push_back(build(v.find("id")->as_string()));
    return out;
  }
  // Deletes the channel's connections while walking them.
  std::size_t remove_all(const std::string& channel_id) {
    std::size_t n = 0;
    cairn::KvCursor cursor = storage_.scan_prefix("connection:" + channel_id, 2);
    while (auto entry = cursor.next()) {
      std::string id = entry->second.find("id")->as_string();
      storage_.remove(entry->first);
      listeners_.remove(id);
      queues_.remove(id);
      ++n;
    }
    return n;
  }

 private:
  static std::string key(const std::string& channel_id, const std::string& connection_id) {
    return "connection:" + channel_id + ":" + connection_id;
  }
  Connection build(const std::string& id) {
    return Connection{id, listeners_.load(id), queues_.load(id)};
  }
  cairn::KvView& storage_;
  ListenerRepository& listeners_;
  QueueRepository& queues_;
};

class ChannelRepository {
 public:
  ChannelRepository(cairn::KvView& storage, ConnectionRepository& connections)
      : storage_(storage), connections_(connections) {}

  void persist(const Channel& channel) {
    storage_.upsert(
        "channel:" + channel.id,
        cairn::Value::Map{{"id", channel.id}, {"retry_timeout_ms", channel.retry_timeout_ms}});
    for (const Connection& c : channel.connections)
      connections_.persist(channel.id, c);
  }
  Channel load_one(const std::string& channel_id) {
    return build(storage_.fetch_one("channel:" + channel_id));
  }
  std::vector<Channel> load_all() {
    std::vector<Channel> out;
    for (const auto& [k, v] : storage_.fetch_by_prefix("channel"))
      out.push_back(build(v));
    return out;
  }
  void remove(const std::string& channel_id) {
    connections_.remove_all(channel_id);
    storage_.remove("channel:" + channel_id);
  }

 private:
  Channel build(const cairn::Value& v) {
    Channel channel{
        v.find("id")->as_string(), static_cast<int>(v.find("retry_timeout_ms")->as_int()), {}};
    channel.connections = connections_.load_all(channel.id);
    return channel;
  }
  cairn::KvView& storage_;
  ConnectionRepository& connections_;
};

// The repositories wired together over one store.
struct Persistence {
  explicit Persistence(cairn::Store& store)
      : storage(store, "sse"),
        listeners(storage),
        queues(storage),
        connections(storage, listeners, queues),
        channels(storage, connections) {}
  cairn::KvView storage;
  ListenerRepository listeners;
  QueueRepository queues;
  ConnectionRepository connections;
  ChannelRepository channels;
};

}  // namespace sse

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

struct TempDir {
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/channels-kv-XXXXXX";
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
    std::string path = dir.path + "/sse.cairn";
    {
      auto store = cairn::FileStore::open(path);
      sse::Persistence db(*store);
      using Messages = std::vector<std::string>;
      sse::Channel a{"a", 3000, {}};
      a.connections.push_back({"c1", {"l1", true}, {Messages{"hello", "world"}}});
      a.connections.push_back({"c2", {"l2", false}, {Messages{}}});
      db.channels.persist(a);
      sse::Channel a1{"a1", 5000, {}};
      a1.connections.push_back({"c3", {"l3", true}, {Messages{"other"}}});
      db.channels.persist(a1);

      auto loaded = db.channels.load_one("a");
      expect(loaded.retry_timeout_ms == 3000 && loaded.connections.size() == 2,
             "load_one(\"a\") builds the channel with its connections");
      expect(db.connections.load_all("a").size() == 2,
             "connections of \"a\" do not include those of \"a1\" (the ':' separator)");
      auto c1 = db.connections.load_one("a", "c1");
      expect(c1.listener.running && c1.queue.messages == std::vector<std::string>{"hello", "world"},
             "load_one(channel, connection) with its listener and queue");
      bool not_found = false;
      try {
        db.connections.load_one("a", "nope");
      } catch (const cairn::NotFound&) {
        not_found = true;
      }
      expect(not_found, "a missing connection is NotFound (eric-sse's ItemNotFound)");
    }
    {
      auto store = cairn::FileStore::open(path);  // another run of the program
      sse::Persistence db(*store);
      auto all = db.channels.load_all();
      expect(all.size() == 2 && all[0].id == "a" && all[1].id == "a1",
             "load_all() after reopening the file finds both channels");
      expect(all[1].connections.size() == 1 &&
                 all[1].connections[0].queue.messages == std::vector<std::string>{"other"},
             "... with their connections and queues");
      db.channels.remove("a");  // deletes its connections while iterating over them
      expect(db.channels.load_all().size() == 1, "removing a channel while iterating works");
      expect(!db.storage.fetch("listener:c1") && db.storage.fetch("listener:c3"),
             "... and takes only its own listeners");
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  if (failures != 0) std::printf("%d check(s) failed\n", failures);
  return failures == 0 ? 0 : 1;
}
