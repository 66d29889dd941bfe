// Big-endian integers in byte buffers: the byte order of MessagePack and of the wire protocol.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cairn {

// Writes the low `n` bytes of `v` at `p`, most significant first.
inline void put_be(char* p, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

// Reads `n` (<= 8) bytes at `p` as a big-endian unsigned integer.
inline std::uint64_t get_be(const char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i)
    v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace cairn
