// Frames and bodies of the wire protocol, byte for byte as docs/protocol.md gives them.
#include "net/protocol.h"

#include <gtest/gtest.h>

#include "cairn/error.h"
#include "support/served_store.h"

namespace cairn::net {
namespace {

std::string hex(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    if (!out.empty()) out += ' ';
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

TEST(Protocol, TheDocumentedExampleFramesAreWhatTheCodeWrites) {
  Writer request;
  request.array(1);
  write_oids(request, std::vector<Oid>{Oid(0)});
  std::string frame;
  append_frame(frame, Kind::request, static_cast<std::uint16_t>(Op::load), 7, request.bytes());
  EXPECT_EQ(hex(frame), "00 00 00 03 01 01 00 02 00 00 00 07 c6 1f 6d f8 e1 5b 96 8c 91 91 00");

  Writer response;
  response.array(2).u64(0);
  write_objects(response, std::vector<StoredObject>{StoredObject{Oid(0), 0, "", "", ""}});
  frame.clear();
  append_frame(frame, Kind::response, static_cast<std::uint16_t>(Op::load), 7, response.bytes());
  EXPECT_EQ(hex(frame),
            "00 00 00 05 01 02 00 02 00 00 00 07 29 81 55 fb 0e a9 13 28 92 00 91 91 00");
}

// docs/protocol.md §4.2: the request is wrapped in a one-element body, as the client sends it
// and the server reads it.
TEST(Protocol, TheDocumentedCommitBodyIsWhatTheClientWritesAndTheServerReads) {
  CommitRequest request;
  request.writes.push_back(WriteOp{Oid(1), "", "", std::string("\x01", 1)});
  Writer w;
  w.array(1);
  write_commit_request(w, request);
  EXPECT_EQ(hex(w.bytes()), "91 93 90 91 94 01 a0 a0 c4 01 01 90");

  std::string documented("\x91\x93\x90\x91\x94\x01\xa0\xa0\xc4\x01\x01\x90", 12);
  Body body(documented);
  CommitRequest read = read_commit_request(body.reader().array());
  EXPECT_TRUE(read.reads.empty());
  ASSERT_EQ(read.writes.size(), 1u);
  EXPECT_EQ(read.writes[0].oid, Oid(1));
  EXPECT_EQ(read.writes[0].data, std::string("\x01", 1));
  EXPECT_TRUE(read.deletes.empty());
  EXPECT_TRUE(read.appends.empty());
}

TEST(Protocol, TheDocumentedExampleIsWhatALiveServerAnswers) {
  testing::TestServer server(make_memory_store());
  auto client = server.connect();
  Oid root[] = {Oid(0)};
  LoadResult result = client->load(root);
  ASSERT_EQ(result.objects.size(), 1u);
  EXPECT_FALSE(result.objects[0].exists());
  EXPECT_EQ(result.csn, 0u);
}

TEST(Protocol, HeadersAreCheckedBeforeBodiesAreRead) {
  std::string frame;
  append_frame(frame, Kind::push, 1, 0, Writer().array(0).bytes());
  FrameHeader h = parse_header(frame, 100);
  EXPECT_EQ(h.kind, Kind::push);
  EXPECT_EQ(h.body_size, 1u);
  EXPECT_NO_THROW(check_body(h, std::string_view(frame).substr(header_size)));

  EXPECT_THROW(parse_header(frame, 0), ProtocolError) << "body over the limit";
  std::string bad_version = frame;
  bad_version[4] = 2;
  EXPECT_THROW(parse_header(bad_version, 100), ProtocolError);
  std::string bad_kind = frame;
  bad_kind[5] = 5;
  EXPECT_THROW(parse_header(bad_kind, 100), ProtocolError);
  EXPECT_THROW(parse_header(frame.substr(0, header_size - 1), 100), ProtocolError);
  std::string flipped = frame;
  flipped.back() ^= 1;
  EXPECT_THROW(check_body(h, std::string_view(flipped).substr(header_size)), ProtocolError);
}

TEST(Protocol, BodiesOfTheWrongShapeAreProtocolErrors) {
  EXPECT_THROW(Body("\x01"), ProtocolError) << "not an array";
  EXPECT_THROW(Body("\x92\x01"), ProtocolError) << "truncated";
  EXPECT_THROW(Body(std::string("\x91\x01\x01", 3)), ProtocolError) << "trailing bytes";
  // An array header claiming 2^32-1 elements in a 5-byte body is refused, not allocated.
  EXPECT_THROW(Body(std::string("\xdd\xff\xff\xff\xff", 5)), ProtocolError);
  Body body(Writer().array(2).str("x").u64(1).bytes());
  Reader r = body.reader();
  EXPECT_THROW(r.u64(), ProtocolError) << "a str read as a uint";
  Reader again = body.reader();
  again.str();
  again.u64();
  EXPECT_THROW(again.u64(), ProtocolError) << "read past the end";
}

TEST(Protocol, CommitRequestsAndErrorsRoundTrip) {
  CommitRequest request;
  request.reads = {ReadCheck{Oid(3), 9}, ReadCheck{Oid(4), 0}};
  request.writes = {WriteOp{Oid(5), "T", "k", std::string("\0\xff", 2)}};
  request.deletes = {Oid(6)};
  Writer w;
  write_commit_request(w, request);
  Body body(w.bytes());
  CommitRequest back = read_commit_request(body.reader());
  ASSERT_EQ(back.reads.size(), 2u);
  EXPECT_EQ(back.reads[0].oid, Oid(3));
  EXPECT_EQ(back.reads[0].version, 9u);
  ASSERT_EQ(back.writes.size(), 1u);
  EXPECT_EQ(back.writes[0].type, "T");
  EXPECT_EQ(back.writes[0].key, "k");
  EXPECT_EQ(back.writes[0].data, std::string("\0\xff", 2));
  EXPECT_EQ(back.deletes, std::vector<Oid>{Oid(6)});

  std::vector<Oid> oids{Oid(3)};
  try {
    throw_error_body(error_body(ErrorCode::conflict, "changed", oids));
    FAIL();
  } catch (const ConflictError& e) {
    EXPECT_EQ(e.oids(), oids);
    EXPECT_STREQ(e.what(), "changed");
  }
  EXPECT_THROW(throw_error_body(error_body(ErrorCode::auth, "no")), AuthError);
}

}  // namespace
}  // namespace cairn::net
