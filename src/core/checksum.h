// Checksums: xxHash3-64 over bytes, used for every record on disk and on the wire.
#pragma once

#include <cstdint>
#include <string_view>

#include <xxhash.h>

namespace cairn {

inline std::uint64_t checksum64(std::string_view bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

}  // namespace cairn
