// The README's tour, compiled and run by the test suite so that it stays true.
#include <cairn/cairn.h>

#include <cstdio>

int main() {
  auto store = cairn::open("memory:");
  cairn::KvView kv(*store);
  kv.upsert("channel:1", cairn::Value::Map{{"name", "news"}});
  kv.upsert("channel1:x", "not under channel");
  auto channels = kv.fetch_by_prefix("channel");
  cairn::CommitRequest tx;
  tx.writes.push_back({store->new_oids(1), "User", "harry", cairn::encode("Harry")});
  std::uint64_t csn = store->commit(tx);
  if (channels.size() != 1 || channels[0].first != "channel:1") return 1;
  std::printf("%zu channel(s); committed csn %llu\n", channels.size(),
              static_cast<unsigned long long>(csn));
  return 0;
}
