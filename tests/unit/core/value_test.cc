// Value and its scalar kinds: construction, accessors, text forms and the total order.
#include "cairn/value.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cairn/error.h"

namespace cairn {
namespace {

TEST(Value, KindsAndAccessors) {
  EXPECT_TRUE(Value().is_null());
  EXPECT_TRUE(Value(nullptr).is_null());
  EXPECT_EQ(Value(true).kind(), Kind::boolean);
  EXPECT_EQ(Value(7).as_int(), 7);
  EXPECT_EQ(Value(std::uint32_t{7}).as_int(), 7);
  EXPECT_EQ(Value(2.5).as_double(), 2.5);
  EXPECT_EQ(Value("s").as_string(), "s");
  EXPECT_EQ(Value(std::string_view("sv")).as_string(), "sv");
  EXPECT_EQ(Value(Bytes{"b"}).as_bytes().data, "b");
  EXPECT_EQ(Value(Oid(3)).as_ref().oid, Oid(3));
  EXPECT_EQ(Value(Timestamp{5}).as_timestamp().micros, 5);
  Value map = Value::Map{{"a", 1}};
  ASSERT_NE(map.find("a"), nullptr);
  EXPECT_EQ(*map.find("a"), Value(1));
  EXPECT_EQ(map.find("b"), nullptr);
  EXPECT_EQ(Value(1).find("a"), nullptr);
  map.as_map()["b"] = Value::List{};
  map.as_map()["b"].as_list().push_back(2);
  EXPECT_EQ(map.find("b")->as_list().size(), 1u);
}

TEST(Value, WrongKindAccessNamesBothKinds) {
  try {
    (void)Value("text").as_int();
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "expected a int value, found string");
  }
  EXPECT_THROW((void)Value().as_map(), InvalidArgument);
}

TEST(Value, UnsignedBeyondInt64IsRefused) {
  EXPECT_THROW(Value(std::numeric_limits<std::uint64_t>::max()), InvalidArgument);
  EXPECT_EQ(Value(std::uint64_t{INT64_MAX}).as_int(), INT64_MAX);
}

TEST(Value, TotalOrderAcrossAndWithinKinds) {
  std::vector<Value> ascending = {Value(),
                                  false,
                                  true,
                                  std::numeric_limits<std::int64_t>::min(),
                                  -1,
                                  0,
                                  1,
                                  std::numeric_limits<double>::quiet_NaN(),
                                  -std::numeric_limits<double>::infinity(),
                                  -1.5,
                                  0.0,
                                  2.5,
                                  Decimal("-2"),
                                  Decimal("-1.5"),
                                  Decimal("0"),
                                  Decimal("0.01"),
                                  Decimal("10"),
                                  "",
                                  "a",
                                  "ab",
                                  "b",
                                  Bytes{""},
                                  Bytes{"a"},
                                  Value::List{},
                                  Value::List{1},
                                  Value::List{1, 2},
                                  Value::List{2},
                                  Value::Map{},
                                  Value::Map{{"a", 1}},
                                  Value::Map{{"a", 2}},
                                  Value::Map{{"b", 0}},
                                  Ref{Oid(1), ""},
                                  Ref{Oid(2), ""},
                                  Timestamp{-5},
                                  Timestamp{5},
                                  Uuid{},
                                  Uuid::parse("ffffffff-ffff-ffff-ffff-ffffffffffff")};
  for (std::size_t i = 0; i < ascending.size(); ++i) {
    for (std::size_t j = 0; j < ascending.size(); ++j) {
      EXPECT_EQ(ascending[i] <=> ascending[j], i <=> j) << i << " vs " << j;
    }
  }
  EXPECT_EQ(Value(0.0), Value(-0.0));
  EXPECT_EQ(Value(std::nan("1")), Value(std::nan("2")));
}

TEST(Decimal, ValidatesAndComparesNumerically) {
  EXPECT_EQ(Decimal("1.10"), Decimal("1.1"));
  EXPECT_EQ(Decimal("-0.0"), Decimal("0"));
  EXPECT_EQ(Decimal("007"), Decimal("7"));
  EXPECT_LT(Decimal("-10"), Decimal("-9.99"));
  EXPECT_LT(Decimal("9.99"), Decimal("10"));
  EXPECT_LT(Decimal("0.099"), Decimal("0.1"));
  EXPECT_EQ(Decimal("1.10").str(), "1.10");
  for (const char* bad : {"", "-", "1.", ".5", "1e5", "+1", "1.2.3", " 1", "0x10", "1,5"}) {
    EXPECT_THROW(Decimal{bad}, InvalidArgument) << bad;
  }
  EXPECT_NO_THROW(Decimal(std::string(Decimal::max_length, '9')));
  EXPECT_THROW(Decimal(std::string(Decimal::max_length + 1, '9')), InvalidArgument);
}

TEST(Timestamp, FormatsAndParsesRfc3339) {
  EXPECT_EQ(Timestamp{0}.str(), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(Timestamp{-1}.str(), "1969-12-31T23:59:59.999999Z");
  Timestamp t = Timestamp::parse("2026-11-25T10:20:30.123456Z");
  EXPECT_EQ(t.str(), "2026-11-25T10:20:30.123456Z");
  EXPECT_EQ(Timestamp::parse(t.str()), t);
  EXPECT_EQ(Timestamp::parse("2026-11-25T12:20:30.123456+02:00"), t);
  EXPECT_EQ(Timestamp::parse("2026-11-25T10:20:30Z").micros % 1'000'000, 0);
  EXPECT_EQ(Timestamp::parse("2026-11-25T10:20:30.5Z").micros % 1'000'000, 500'000);
  for (const char* bad :
       {"", "2026-11-25", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-25T24:00:00Z",
        "2026-11-25T10:20:30", "2026-11-25T10:20:30.Z", "2026-11-25T10:20:30Zjunk"}) {
    EXPECT_THROW(Timestamp::parse(bad), InvalidArgument) << bad;
  }
}

// A leap second has no POSIX time: it used to become the next minute's first second, moving
// "2016-12-31T23:59:60Z" into 2017.
TEST(Timestamp, ALeapSecondIsRefusedRatherThanMovedToTheNextDay) {
  for (const char* leap : {"2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5Z",
                           "2017-01-01T00:59:60+01:00", "2026-11-25T10:20:60Z"}) {
    try {
      Timestamp t = Timestamp::parse(leap);
      ADD_FAILURE() << leap << " was read as " << t.str();
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("leap second"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(Timestamp::parse("2016-12-31T23:59:59.999999Z").str(), "2016-12-31T23:59:59.999999Z");
}

// Every Timestamp has a text form that reads back: years past 9999 and before 0 used to print
// as "10000-..." and "-001-...", which parse refused, so a value could be shown but not typed
// back (and dump wrote such objects as raw bytes).
TEST(Timestamp, EveryTimestampPrintsAsTextThatParsesBack) {
  EXPECT_EQ(Timestamp::parse("9999-12-31T23:59:59-23:59").str(), "+10000-01-01T23:58:59.000000Z");
  EXPECT_EQ(Timestamp::parse("0000-01-01T00:00:00+00:01").str(), "-0001-12-31T23:59:00.000000Z");
  EXPECT_EQ(Timestamp::parse("0000-01-01T00:00:00Z").str(), "0000-01-01T00:00:00.000000Z");
  EXPECT_EQ(Timestamp::parse("+2026-11-25T10:20:30Z"), Timestamp::parse("2026-11-25T10:20:30Z"));
  EXPECT_EQ(Timestamp::parse("-0001-03-01T00:00:00Z").str(), "-0001-03-01T00:00:00.000000Z");
  EXPECT_EQ(Timestamp::parse("+10000-02-29T00:00:00Z").str(), "+10000-02-29T00:00:00.000000Z");
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(Timestamp{max}.str(), "+294247-01-10T04:00:54.775807Z");
  EXPECT_EQ(Timestamp{min}.str(), "-290308-12-21T19:59:05.224192Z");
  std::mt19937_64 rng(7);
  std::vector<std::int64_t> samples = {min,
                                       min + 1,
                                       max,
                                       max - 1,
                                       0,
                                       -1,
                                       1,
                                       -86'400'000'000,
                                       253'402'300'800'000'000 /* +10000-01-01 */,
                                       -62'167'219'200'000'001 /* just before 0000-01-01 */};
  for (int i = 0; i < 2000; ++i)
    samples.push_back(static_cast<std::int64_t>(rng()));
  for (std::int64_t micros : samples) {
    Timestamp t{micros};
    ASSERT_EQ(Timestamp::parse(t.str()), t) << micros << " " << t.str();
  }
  for (const char* bad :
       {"+294247-01-10T04:00:54.775808Z", "-290308-12-21T19:59:05.224191Z",
        "+999999-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "+123-01-01T00:00:00Z",
        "+1234567-01-01T00:00:00Z", "2025-02-29T00:00:00Z", "+-2026-01-01T00:00:00Z"}) {
    EXPECT_THROW(Timestamp::parse(bad), InvalidArgument) << bad;
  }
  EXPECT_NO_THROW(Timestamp::parse("2024-02-29T00:00:00Z"));
  EXPECT_THROW(Timestamp::parse("1900-02-29T00:00:00Z"), InvalidArgument);
  EXPECT_NO_THROW(Timestamp::parse("2000-02-29T00:00:00Z"));
}

TEST(Uuid, ParsesFormatsAndGeneratesVersion4) {
  const char* text = "970773fa-4de1-11e5-86f4-6c4008a70392";
  EXPECT_EQ(Uuid::parse(text).str(), text);
  EXPECT_EQ(Uuid::parse("970773FA-4DE1-11E5-86F4-6C4008A70392").str(), text);
  for (const char* bad :
       {"", "970773fa4de111e586f46c4008a70392", "970773fa-4de1-11e5-86f4-6c4008a7039g",
        "970773fa-4de1-11e5-86f4_6c4008a70392"}) {
    EXPECT_THROW(Uuid::parse(bad), InvalidArgument) << bad;
  }
  Uuid a = Uuid::random(), b = Uuid::random();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.bytes[6] >> 4, 4);
  EXPECT_EQ(a.bytes[8] >> 6, 2);
}

}  // namespace
}  // namespace cairn
