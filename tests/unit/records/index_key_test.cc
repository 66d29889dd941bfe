// Index keys keep the order of Values: sorting keys bytewise sorts the values they encode.
#include "records/index_key.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cairn::testing {
namespace {

Value random_scalar(std::mt19937_64& rng) {
  auto pick = [&](std::uint64_t n) { return rng() % n; };
  static const std::vector<std::string> decimals = {
      "0",     "0.0", "-0",   "1",    "1.0", "1.10",  "1.5",           "1.55", "-1",  "-1.5",
      "-1.55", "10",  "9.99", "0.05", "0.5", "-0.05", "123456789.123", "-99",  "100", "0.001"};
  switch (pick(11)) {
    case 0:
      return Value();
    case 1:
      return pick(2) == 0;
    case 2: {
      static const std::int64_t edges[] = {std::numeric_limits<std::int64_t>::min(), -1, 0, 1,
                                           std::numeric_limits<std::int64_t>::max()};
      return pick(3) == 0 ? Value(edges[pick(5)])
                          : Value(static_cast<std::int64_t>(pick(2000)) - 1000);
    }
    case 3: {
      static const double specials[] = {std::nan(""),
                                        -0.0,
                                        0.0,
                                        std::numeric_limits<double>::infinity(),
                                        -std::numeric_limits<double>::infinity(),
                                        1e-300,
                                        -1e300};
      return pick(3) == 0 ? Value(specials[pick(7)])
                          : Value((static_cast<double>(pick(20000)) - 10000) / 7);
    }
    case 4:
      return Value(Decimal(decimals[pick(decimals.size())]));
    case 5: {
      std::string s;
      for (std::uint64_t i = 0, n = pick(6); i < n; ++i)
        s += "\0\1ab\xc3\xa9z"[pick(7)];
      return Value(s);
    }
    case 6: {
      std::string s;
      for (std::uint64_t i = 0, n = pick(5); i < n; ++i)
        s += static_cast<char>(pick(256));
      return Value(Bytes{s});
    }
    case 7:
      return Value(Ref{Oid(pick(5)), pick(2) == 0 ? "" : "t.A"});
    case 8:
      return Value(Timestamp{static_cast<std::int64_t>(pick(1000)) - 500});
    case 9: {
      Uuid u;
      for (auto& b : u.bytes)
        b = static_cast<std::uint8_t>(pick(3));
      return Value(u);
    }
    default:
      return Value(std::string(pick(3), 'a'));
  }
}

TEST(IndexKey, OrderOfKeysIsTheOrderOfValuesThenOids) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20'000; ++round) {
    Value a = random_scalar(rng);
    Value b = random_scalar(rng);
    Oid oa(rng() % 4), ob(rng() % 4);
    std::string ka = *detail::index_key(a, oa);
    std::string kb = *detail::index_key(b, ob);
    auto by_value = a <=> b;
    auto expected = by_value != 0 ? by_value : oa <=> ob;
    auto got = ka <=> kb;
    ASSERT_EQ(got < 0, expected < 0) << to_string(a.kind()) << " vs " << to_string(b.kind());
    ASSERT_EQ(got == 0, expected == 0) << to_string(a.kind()) << " vs " << to_string(b.kind());
  }
}

TEST(IndexKey, SplitsBackIntoValueAndOid) {
  std::string key = *detail::index_key(Value(std::string("a\0b", 3)), Oid(0xabcdef));
  auto split = detail::split_index_key(key);
  ASSERT_TRUE(split);
  EXPECT_EQ(split->second, Oid(0xabcdef));
  EXPECT_EQ(split->first, detail::index_value(Value(std::string("a\0b", 3))));
  EXPECT_FALSE(detail::split_index_key("short"));
}

TEST(IndexKey, ListsAndMapsHaveNoEntries) {
  EXPECT_FALSE(detail::index_key(Value(Value::List{1}), Oid(1)));
  EXPECT_FALSE(detail::index_key(Value(Value::Map{}), Oid(1)));
}

TEST(IndexKey, LongValuesAreCutAtTheLimitAndKeepTheirOrder) {
  std::string base(2000, 'x');
  std::string lo = *detail::index_key(Value(base + "a"), Oid(2));
  std::string hi = *detail::index_key(Value(base + "b"), Oid(1));
  EXPECT_LE(lo.size(), detail::max_index_value_bytes + 17);
  // Cut to the same value part: they now order by oid, never against the values' order.
  EXPECT_EQ(detail::split_index_key(lo)->first, detail::split_index_key(hi)->first);
  EXPECT_LE(*detail::index_key(Value(std::string(10, 'x')), Oid(9)), lo);
}

}  // namespace
}  // namespace cairn::testing
