// Values as JSON: every kind round-trips, tags are exact, and bad input is a clear error.
#include "cairn/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cairn/codec.h"
#include "cairn/error.h"

namespace cairn {
namespace {

TEST(Json, EveryKindRoundTrips) {
  std::vector<Value> values = {Value(),
                               true,
                               0,
                               -7,
                               std::numeric_limits<std::int64_t>::min(),
                               std::numeric_limits<std::int64_t>::max(),
                               1.0,
                               -0.5,
                               1e300,
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity(),
                               Decimal("1.10"),
                               "",
                               "héllo \"quoted\"\n",
                               Bytes{},
                               Bytes{"a"},
                               Bytes{"ab"},
                               Bytes{std::string("\0\xff\x10", 3)},
                               Value::List{},
                               Value::Map{},
                               Value::Map{{"$ref", 1}, {"plain", Value::List{1, "x"}}},
                               Ref{Oid(9), ""},
                               Ref{Oid(9), "schema.User"},
                               Timestamp{1'764'000'000'123'456},
                               Timestamp{-1},
                               Uuid::parse("970773fa-4de1-11e5-86f4-6c4008a70392")};
  for (const Value& v : values) {
    std::string text = to_json(v);
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    Value back = from_json(text);
    EXPECT_EQ(back.kind(), v.kind()) << text;
    EXPECT_EQ(back, v) << text;
  }
  EXPECT_TRUE(std::isnan(from_json(to_json(std::nan(""))).as_double()));
}

TEST(Json, TagsAreTheDocumentedForms) {
  EXPECT_EQ(to_json(Value::Map{{"b", 1}, {"a", Value::List{true, Value()}}}),
            R"({"a":[true,null],"b":1})");
  EXPECT_EQ(to_json(Ref{Oid(5), ""}), R"({"$ref":5})");
  EXPECT_EQ(to_json(Ref{Oid(5), "T"}), R"({"$ref":5,"$type":"T"})");
  EXPECT_EQ(to_json(Bytes{"hi!"}), R"({"$bytes":"aGkh"})");
  EXPECT_EQ(to_json(Decimal("1.10")), R"({"$decimal":"1.10"})");
  EXPECT_EQ(to_json(Timestamp{0}), R"({"$time":"1970-01-01T00:00:00.000000Z"})");
  EXPECT_EQ(to_json(Value::Map{{"$x", 1}}), R"({"$map":{"$x":1}})");
  EXPECT_EQ(to_json(1.0), "1.0") << "a double must stay a double";
  EXPECT_EQ(from_json("1").kind(), Kind::integer);
  EXPECT_EQ(from_json("1.0").kind(), Kind::floating);
  EXPECT_EQ(from_json(R"({"$time":"2026-11-25T10:00:00+01:00"})"),
            Value(Timestamp::parse("2026-11-25T09:00:00Z")));
}

TEST(Json, BytesComeBackAsTheirCanonicalBase64) {
  for (std::string bytes : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                            std::string("\xff\xfe"), std::string("\0", 1)}) {
    std::string text = to_json(Bytes{bytes});
    EXPECT_EQ(from_json(text), Value(Bytes{bytes})) << text;
  }
  EXPECT_EQ(from_json(R"({"$bytes":"YQ=="})"), Value(Bytes{"a"}));
  EXPECT_EQ(from_json(R"({"$bytes":"YWI="})"), Value(Bytes{"ab"}));
}

TEST(Json, BadInputIsInvalidArgument) {
  for (const char* bad :
       {"", "{", "[1,]", "nul", R"({"$bytes":"a"})", R"({"$bytes":"a=bc"})", R"({"$bytes":1})",
        R"({"$ref":-1})", R"({"$ref":"1"})", R"({"$ref":1,"x":2})",
        // With $type, other keys were dropped silently, and $type with them.
        R"({"$ref":1,"$type":"T","x":2})", R"({"$ref":1,"$type":"T","$bytes":""})",
        R"({"$time":"yesterday"})", R"({"$uuid":"nope"})", R"({"$decimal":"1e5"})",
        R"({"$double":"big"})", R"({"$wat":1})", R"({"$bytes":"","$time":"x"})",
        R"({"a":1,"$b":2})", "18446744073709551615", "1e400", "[-1e999]",
        // Padding whose left-over bits are not zero: an encoder writes "YQ==" and "YWI=".
        R"({"$bytes":"YR=="})", R"({"$bytes":"YWJ="})", R"({"$bytes":"AAAAYf=="})"}) {
    EXPECT_THROW(from_json(bad), InvalidArgument) << bad;
  }
}

// nlohmann keeps the last of members with one name; the codec refuses such a map as corrupt,
// and so does the JSON form, rather than drop a value silently.
TEST(Json, AMemberNamedTwiceIsRefused) {
  for (const char* text : {R"({"a":1,"a":2})", R"([1,{"x":{"b":true,"b":true}}])",
                           R"({"$map":{"k":1,"k":2}})", R"({"a":1,"b":{"a":1},"b":2})"}) {
    EXPECT_THROW(from_json(text), InvalidArgument) << text;
  }
  // Colons inside strings are not member separators.
  EXPECT_EQ(from_json(R"({"a:b":"c:d","e":[":",{"f:":1}]})"),
            Value(Value::Map{{"a:b", "c:d"}, {"e", Value::List{":", Value::Map{{"f:", 1}}}}}));
  EXPECT_EQ(from_json(R"({"a":{"a":{"a":1}}})"),
            Value(Value::Map{{"a", Value::Map{{"a", Value::Map{{"a", 1}}}}}}));
}

// An integer literal outside int64 used to become a rounded double past 2^64 (or below -2^63)
// while 2^63..2^64-1 was refused: now every one is refused, naming it. Floats stay floats.
TEST(Json, IntegersOutsideInt64AreRefusedNotRounded) {
  for (const char* bad : {"-9223372036854775809", "18446744073709551616",
                          "[1, 99999999999999999999999]", R"({"a": [-18446744073709551617]})"}) {
    try {
      from_json(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("does not fit in int64"), std::string::npos) << e.what();
    }
  }
  // 2^63 .. 2^64 - 1 parse exactly: refused as integers, taken as oids.
  EXPECT_THROW(from_json("9223372036854775808"), InvalidArgument);
  EXPECT_EQ(from_json(R"({"$ref": 18446744073709551615})"),
            Value(Ref{Oid(std::numeric_limits<std::uint64_t>::max()), ""}));
  EXPECT_EQ(from_json("9223372036854775807"), Value(std::numeric_limits<std::int64_t>::max()));
  EXPECT_EQ(from_json("-9223372036854775808"), Value(std::numeric_limits<std::int64_t>::min()));
  EXPECT_EQ(from_json("18446744073709551616.0"), Value(18446744073709551616.0));
  EXPECT_EQ(from_json("-1e19"), Value(-1e19));
  EXPECT_EQ(from_json("1E+19"), Value(1e19));
  EXPECT_EQ(from_json(R"(["99999999999999999999", 1])"),
            Value(Value::List{"99999999999999999999", 1}));
  EXPECT_EQ(from_json(R"({"n": true, "m": null, "x": -0})"),
            Value(Value::Map{{"n", true}, {"m", Value()}, {"x", 0}}));
}

TEST(Json, NestingIsLimitedLikeTheCodec) {
  auto nested = [](std::size_t depth) {
    return std::string(depth, '[') + "1" + std::string(depth, ']');
  };
  EXPECT_NO_THROW(encode(from_json(nested(max_value_depth))));
  EXPECT_THROW(from_json(nested(max_value_depth + 1)), InvalidArgument);
  EXPECT_THROW(from_json(nested(100'000)), InvalidArgument);
}

}  // namespace
}  // namespace cairn
