// Store URL parsing: every accepted form and a clear error for each malformed one.
#include "cairn/url.h"

#include <gtest/gtest.h>

#include "cairn/error.h"

namespace cairn {
namespace {

using Scheme = StoreUrl::Scheme;

TEST(StoreUrl, Memory) {
  EXPECT_EQ(parse_store_url("memory:").scheme, Scheme::memory);
  EXPECT_EQ(parse_store_url("memory://").scheme, Scheme::memory);
  EXPECT_THROW(parse_store_url("memory:foo"), InvalidArgument);
}

TEST(StoreUrl, File) {
  StoreUrl u = parse_store_url("file:./data/demo.cairn");
  EXPECT_EQ(u.scheme, Scheme::file);
  EXPECT_EQ(u.path, "./data/demo.cairn");
  EXPECT_EQ(parse_store_url("file:///var/lib/x.cairn").path, "/var/lib/x.cairn");
  EXPECT_EQ(parse_store_url("file://localhost/var/x.cairn").path, "/var/x.cairn");
  EXPECT_EQ(parse_store_url("file:my%20db.cairn").path, "my db.cairn");
  EXPECT_THROW(parse_store_url("file:"), InvalidArgument);
  EXPECT_THROW(parse_store_url("file://relative"), InvalidArgument);
}

TEST(StoreUrl, Redis) {
  StoreUrl u = parse_store_url("redis://:s3cret@cache.local:6380/2?prefix=app%3A");
  EXPECT_EQ(u.scheme, Scheme::redis);
  EXPECT_EQ(u.host, "cache.local");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
  EXPECT_EQ(u.password, "s3cret");
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.params.at("prefix"), "app:");
  StoreUrl d = parse_store_url("redis://localhost");
  EXPECT_EQ(d.port, default_redis_port);
  EXPECT_EQ(d.db, 0);
  EXPECT_EQ(parse_store_url("redis://bob:pw@[::1]:7000").host, "::1");
  EXPECT_EQ(parse_store_url("redis://bob:pw@[::1]:7000").user, "bob");
  EXPECT_EQ(parse_store_url("redis://pw@h").password, "pw");
  StoreUrl s = parse_store_url("redis+unix:///run/redis.sock?db=3");
  EXPECT_EQ(s.path, "/run/redis.sock");
  EXPECT_EQ(s.db, 3);
  StoreUrl all =
      parse_store_url("redis+unix:///s?db=1&prefix=p:&connect_timeout_ms=100&timeout_ms=200");
  EXPECT_EQ(all.params.size(), 4u);
  for (const char* bad :
       {"redis:", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x", "redis://h/abc",
        "redis://h:", "redis+unix://relative", "redis://[::1", "redis://h?=v",
        "redis://h?prefix=%zz", "redis://h?prefx=a:", "redis://h?prefix=a:&bogus=1",
        "redis://h?db=2", "redis+unix:///run/redis.sock?prefix=a:&timeout=5"}) {
    EXPECT_THROW(parse_store_url(bad), InvalidArgument) << bad;
  }
}

TEST(StoreUrl, ErrorsDoNotShowThePassword) {
  for (const char* bad : {"redis://:s3cret@h?prefx=a:", "redis://bob:s3cret@h:0",
                          "redis+unix://:s3cret@/run/r.sock?x=1", "cairn://s3cret@h/path",
                          "cairn://a@s3cret/c:d%e@127.0.0.1:42957"}) {
    try {
      parse_store_url(bad);
      ADD_FAILURE() << bad;
    } catch (const InvalidArgument& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find("s3cret"), std::string::npos) << msg;
      EXPECT_NE(msg.find("***@"), std::string::npos) << msg;
    }
  }
}

TEST(StoreUrl, CairnServer) {
  StoreUrl u = parse_store_url("cairn://TOKEN@127.0.0.1");
  EXPECT_EQ(u.scheme, Scheme::cairn);
  EXPECT_EQ(u.user, "TOKEN");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, default_server_port);
  StoreUrl t = parse_store_url("cairns://db.example:9000?ca=/etc/ca.pem");
  EXPECT_EQ(t.scheme, Scheme::cairns);
  EXPECT_EQ(t.port, 9000);
  EXPECT_EQ(t.params.at("ca"), "/etc/ca.pem");
  EXPECT_THROW(parse_store_url("cairn://host/path"), InvalidArgument);
  EXPECT_THROW(parse_store_url("cairn:host"), InvalidArgument);
  // "h:1:2" read as host "h:1", port 2, which then failed to resolve; an IPv6 address goes in
  // brackets.
  for (const char* bad : {"cairn://127.0.0.1:2972:5", "cairn://::1", "redis://h:1:2"})
    EXPECT_THROW(parse_store_url(bad), InvalidArgument) << bad;
  EXPECT_EQ(parse_store_url("cairn://[::1]:2972").host, "::1");
}

TEST(StoreUrl, UnknownSchemeNamesTheKnownOnes) {
  try {
    parse_store_url("mongodb://root:root@localhost");
    FAIL();
  } catch (const InvalidArgument& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("unknown scheme \"mongodb\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("redis://"), std::string::npos) << msg;
  }
  EXPECT_THROW(parse_store_url("no-scheme"), InvalidArgument);
  EXPECT_THROW(parse_store_url(":x"), InvalidArgument);
}

}  // namespace
}  // namespace cairn
