// Store URLs: what cairn::open() accepts, parsed into parts (see store.h for the forms).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace cairn {

inline constexpr std::uint16_t default_server_port = 2972;
inline constexpr std::uint16_t default_redis_port = 6379;

struct StoreUrl {
  enum class Scheme { memory, file, redis, cairn, cairns };
  Scheme scheme = Scheme::memory;
  std::string path;  // file: the database path; redis with a unix socket: the socket path
  std::string host;  // redis, cairn, cairns
  std::uint16_t port = 0;
  std::string user;      // the part before '@' (cairn: the token; redis: [user]:password)
  std::string password;  // redis only
  int db = 0;            // redis only
  std::map<std::string, std::string, std::less<>> params;  // after '?', percent-decoded
};

// Throws InvalidArgument naming the problem: unknown scheme, empty path, bad port, bad db...
StoreUrl parse_store_url(std::string_view url);

}  // namespace cairn
