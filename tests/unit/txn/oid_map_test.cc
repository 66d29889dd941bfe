// OidMap (src/txn/oid_map.h) against std::unordered_map: the same random inserts, finds and
// erasures, including runs of neighbouring oids and erasures that must shift entries back
// across the end of the table.
#include "txn/oid_map.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <unordered_map>

namespace cairn::detail {
namespace {

using Map = OidMap<std::shared_ptr<int>>;

void expect_same(Map& map, const std::unordered_map<std::uint64_t, int>& model) {
  ASSERT_EQ(map.size(), model.size());
  for (const auto& [oid, value] : model) {
    std::shared_ptr<int>* found = map.find(Oid(oid));
    ASSERT_NE(found, nullptr) << "oid " << oid;
    EXPECT_EQ(**found, value) << "oid " << oid;
  }
  std::size_t visited = 0;
  map.for_each([&](Oid oid, std::shared_ptr<int>& value) {
    ++visited;
    auto it = model.find(oid.value());
    ASSERT_NE(it, model.end()) << "oid " << oid.value();
    EXPECT_EQ(*value, it->second);
  });
  EXPECT_EQ(visited, model.size());
}

TEST(OidMap, FindsWhatWasInsertedAndNothingElse) {
  Map map;
  EXPECT_EQ(map.find(Oid(0)), nullptr);
  map.insert(Oid(0), std::make_shared<int>(10));
  map.insert(Oid(7), std::make_shared<int>(70));
  EXPECT_EQ(map.size(), 2u);
  ASSERT_NE(map.find(Oid(0)), nullptr);
  EXPECT_EQ(**map.find(Oid(0)), 10);
  EXPECT_EQ(**map.find(Oid(7)), 70);
  EXPECT_EQ(map.find(Oid(8)), nullptr);
  EXPECT_TRUE(map.erase(Oid(0)));
  EXPECT_FALSE(map.erase(Oid(0)));
  EXPECT_EQ(map.find(Oid(0)), nullptr);
  EXPECT_EQ(**map.find(Oid(7)), 70);
}

TEST(OidMap, MatchesUnorderedMapUnderRandomInsertsAndErasures) {
  for (std::uint64_t range : {40ull, 1000ull, 1ull << 40}) {
    std::mt19937_64 rng(range);
    Map map;
    std::unordered_map<std::uint64_t, int> model;
    for (int step = 0; step < 20000; ++step) {
      std::uint64_t oid = rng() % range;
      int value = step;
      if (rng() % 3 != 0) {
        if (map.find(Oid(oid)) == nullptr) {
          map.insert(Oid(oid), std::make_shared<int>(value));
          model[oid] = value;
        }
      } else {
        EXPECT_EQ(map.erase(Oid(oid)), model.erase(oid) == 1) << "oid " << oid;
      }
      if (step % 997 == 0) expect_same(map, model);
    }
    expect_same(map, model);
  }
}

TEST(OidMap, EraseIfCallsEachEntryOnceAndKeepsTheRestFindable) {
  Map map;
  std::unordered_map<std::uint64_t, int> model;
  for (std::uint64_t oid = 1; oid <= 5000; ++oid) {
    map.insert(Oid(oid), std::make_shared<int>(static_cast<int>(oid)));
    model[oid] = static_cast<int>(oid);
  }
  std::unordered_map<std::uint64_t, int> calls;
  std::size_t erased = map.erase_if([&](Oid oid, const std::shared_ptr<int>&) {
    ++calls[oid.value()];
    return oid.value() % 10 != 0;  // keep one in ten: the table shrinks
  });
  EXPECT_EQ(erased, 4500u);
  EXPECT_EQ(calls.size(), 5000u);
  for (const auto& [oid, n] : calls)
    EXPECT_EQ(n, 1) << "oid " << oid;
  std::erase_if(model, [](const auto& entry) { return entry.first % 10 != 0; });
  expect_same(map, model);
  // Still usable after shrinking.
  map.insert(Oid(3), std::make_shared<int>(3));
  model[3] = 3;
  expect_same(map, model);
}

TEST(OidMap, ValuesAreReleasedWhenErased) {
  Map map;
  auto value = std::make_shared<int>(1);
  map.insert(Oid(42), value);
  EXPECT_EQ(value.use_count(), 2);
  map.erase(Oid(42));
  EXPECT_EQ(value.use_count(), 1);
  map.insert(Oid(43), value);
  map.erase_if([](Oid, const std::shared_ptr<int>&) { return true; });
  EXPECT_EQ(value.use_count(), 1);
  EXPECT_TRUE(map.empty());
}

}  // namespace
}  // namespace cairn::detail
