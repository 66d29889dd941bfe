// The MessagePack codec: round trips of every kind and edge value, the exact bytes of the
// documented encodings, and refusal of malformed input.
#include "cairn/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "cairn/error.h"

namespace cairn {
namespace {

Value round_trip(const Value& v) {
  return decode(encode(v));
}

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes)
    out += {digits[c >> 4], digits[c & 15]};
  return out;
}

Value nested(std::size_t depth) {
  Value v = 1;
  for (std::size_t i = 0; i < depth; ++i)
    v = Value::List{std::move(v)};
  return v;
}

TEST(Codec, RoundTripsEveryKind) {
  Uuid u = Uuid::parse("970773fa-4de1-11e5-86f4-6c4008a70392");
  std::vector<Value> values = {
      Value(),
      true,
      false,
      0,
      -1,
      127,
      128,
      -33,
      std::numeric_limits<std::int64_t>::max(),
      std::numeric_limits<std::int64_t>::min(),
      0.5,
      -0.0,
      std::numeric_limits<double>::infinity(),
      std::numeric_limits<double>::denorm_min(),
      Decimal("1.10"),
      Decimal("-123456789012345678901234567890.000000001"),
      "",
      "Harry Potter ⚡",
      Bytes{},
      Bytes{std::string("\0\1\2\xff", 4)},
      Value::List{},
      Value::Map{},
      Value::List{1, "two", Value::List{3.0}},
      Value::Map{{"", 1}, {"name", "x"}, {"nested", Value::Map{{"k", Value::List{}}}}},
      Ref{Oid(0), ""},
      Ref{Oid(std::numeric_limits<std::uint64_t>::max()), "schema.User"},
      Timestamp{0},
      Timestamp{-1},
      Timestamp{1'764'000'000'123'456},
      Timestamp{std::numeric_limits<std::int64_t>::max() / 2},
      Timestamp{std::numeric_limits<std::int64_t>::min() / 2},
      u,
  };
  for (const Value& v : values) {
    Value back = round_trip(v);
    EXPECT_EQ(back.kind(), v.kind()) << to_string(v.kind());
    EXPECT_EQ(back, v) << "kind " << to_string(v.kind()) << " bytes " << hex(encode(v));
  }
  EXPECT_TRUE(std::signbit(round_trip(-0.0).as_double())) << "-0.0 lost its sign";
  EXPECT_EQ(round_trip(Decimal("1.10")).as_decimal().str(), "1.10") << "decimal text not kept";
}

TEST(Codec, NaNRoundTrips) {
  Value back = round_trip(std::numeric_limits<double>::quiet_NaN());
  ASSERT_TRUE(back.is_double());
  EXPECT_TRUE(std::isnan(back.as_double()));
}

TEST(Codec, SixteenMebibytesOfBytesRoundTrip) {
  std::string big(16 * 1024 * 1024, '\0');
  std::mt19937 rng(7);
  for (auto& c : big)
    c = static_cast<char>(rng());
  Value back = round_trip(Bytes{big});
  EXPECT_EQ(back.as_bytes().data, big);
  Value text = round_trip(std::string(16 * 1024 * 1024, 'a'));
  EXPECT_EQ(text.as_string().size(), 16u * 1024 * 1024);
}

TEST(Codec, NestingUpToTheLimitRoundTripsAndDeeperIsRefused) {
  EXPECT_EQ(round_trip(nested(max_value_depth)), nested(max_value_depth));
  EXPECT_THROW(encode(nested(max_value_depth + 1)), InvalidArgument);
  // Hand-made bytes one level too deep: 0x91 is a one-element array.
  std::string deep(max_value_depth + 1, '\x91');
  deep += '\x01';
  EXPECT_THROW(decode(deep), Corruption);
  // A million levels: refused cleanly, not a stack overflow.
  std::string very_deep(1'000'000, '\x91');
  very_deep += '\x01';
  EXPECT_THROW(decode(very_deep), Corruption);
}

TEST(Codec, EncodingsAreTheDocumentedBytes) {
  // docs/file-format.md, "Value encoding", gives these exact bytes.
  EXPECT_EQ(hex(encode(Value())), "c0");
  EXPECT_EQ(hex(encode(true)), "c3");
  EXPECT_EQ(hex(encode(5)), "05");
  EXPECT_EQ(hex(encode(-1)), "ff");
  EXPECT_EQ(hex(encode(1.5)), "cb3ff8000000000000");
  EXPECT_EQ(hex(encode("hi")), "a26869");
  EXPECT_EQ(hex(encode(Bytes{"hi"})), "c4026869");
  EXPECT_EQ(hex(encode(Value::List{1, 2})), "920102");
  EXPECT_EQ(hex(encode(Value::Map{{"b", 2}, {"a", 1}})), "82a16101a16202") << "keys sorted";
  EXPECT_EQ(hex(encode(Ref{Oid(5), "T"})),
            "c70901"
            "0000000000000005"
            "54");
  EXPECT_EQ(hex(encode(Ref{Oid(5), ""})), "d7010000000000000005");
  EXPECT_EQ(hex(encode(Uuid::parse("00010203-0405-0607-0809-0a0b0c0d0e0f"))),
            "d802000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(hex(encode(Decimal("1.10"))),
            "d603"
            "312e3130");
  EXPECT_EQ(hex(encode(Timestamp{1'000'000})), "d6ff00000001");             // timestamp 32
  EXPECT_EQ(hex(encode(Timestamp{1'000'001})), "d7ff00000fa000000001");     // timestamp 64
  EXPECT_EQ(hex(encode(Timestamp{-1})), "c70cff3b9ac618ffffffffffffffff");  // timestamp 96
}

TEST(Codec, DecodesWhatOtherWritersProduce) {
  // Unsigned and float32 forms that cairn never writes but other MessagePack writers do.
  EXPECT_EQ(decode(std::string("\xcc\x80", 2)), Value(128));
  EXPECT_EQ(decode(std::string("\xca\x3f\xc0\x00\x00", 5)), Value(1.5));
  // A timestamp 96 with a positive seconds field.
  EXPECT_EQ(decode(std::string("\xc7\x0c\xff\x00\x00\x03\xe8\x00\x00\x00\x00\x00\x00\x00\x01", 15)),
            Value(Timestamp{1'000'001}));
}

// What encode writes, decode reads: the extreme timestamps used to be refused as out of range.
TEST(Codec, EveryTimestampReadsBackAndOnePastTheRangeIsRefused) {
  for (std::int64_t micros : {std::numeric_limits<std::int64_t>::min(),
                              std::numeric_limits<std::int64_t>::max(), std::int64_t{0}}) {
    EXPECT_EQ(decode(encode(Timestamp{micros})), Value(Timestamp{micros})) << micros;
  }
  // Seconds 9223372036854 with 775808 µs, and -9223372036855 with 224191 µs: one µs past each end.
  EXPECT_THROW(
      decode(std::string("\xc7\x0c\xff\x2e\x3d\xe4\x00\x00\x00\x08\x63\x7b\xd0\x5a\xf6", 15)),
      Corruption);
  EXPECT_THROW(
      decode(std::string("\xc7\x0c\xff\x0d\x5c\xe2\x18\xff\xff\xf7\x9c\x84\x2f\xa5\x09", 15)),
      Corruption);
}

TEST(Codec, MalformedInputIsCorruptionNamingAnOffset) {
  std::vector<std::string> bad = {
      "",                                                      // nothing
      std::string("\xc1", 1),                                  // never-used byte
      std::string("\x92\x01", 2),                              // array missing an element
      std::string("\xa5hi", 3),                                // string shorter than its length
      std::string("\x01\x02", 2),                              // trailing byte
      std::string("\x81\x01\x02", 3),                          // map key not a string
      std::string("\x81\x91\x01\x02", 4),                      // map key is an array
      std::string("\x82\xa1k\x01\xa1k\x02", 8),                // duplicate key
      std::string("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9),  // uint64 beyond int64
      std::string("\xd4\x07\x00", 3),                          // unknown extension type 7
      std::string("\xd4\x01\x00", 3),                          // ref shorter than 8 bytes
      std::string("\xd4\x02\x00", 3),                          // uuid not 16 bytes
      std::string("\xc7\x02\x03"
                  "1.",
                  5),  // decimal without fraction digits
      std::string("\xd7\xff\xff\xff\xff\xff\x00\x00\x00\x00", 10),  // nanoseconds >= 1e9
      std::string("\xdd\xff\xff\xff\xff", 5),  // array claiming 2^32-1 elements
  };
  for (const std::string& b : bad) {
    try {
      decode(b);
      ADD_FAILURE() << "accepted " << hex(b);
    } catch (const Corruption& e) {
      EXPECT_NE(std::string(e.what()).find("byte"), std::string::npos) << e.what();
    }
  }
}

TEST(Codec, TruncationAtEveryByteIsRefused) {
  Value v = Value::Map{{"list", Value::List{1, "two", 3.5, Bytes{"xyz"}}},
                       {"ref", Ref{Oid(42), "T"}},
                       {"when", Timestamp{1'764'000'000'123'456}},
                       {"dec", Decimal("9.99")}};
  std::string bytes = encode(v);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(decode(std::string_view(bytes).substr(0, n)), Corruption) << "length " << n;
  }
  EXPECT_EQ(decode(bytes), v);
}

TEST(Codec, EncodeAppendsAndLeavesOutputIntactOnError) {
  std::string out = "prefix";
  encode(Value(1), out);
  EXPECT_EQ(out, std::string("prefix\x01"));
  EXPECT_THROW(encode(nested(max_value_depth + 1), out), InvalidArgument);
  EXPECT_EQ(out, std::string("prefix\x01"));
}

}  // namespace
}  // namespace cairn
