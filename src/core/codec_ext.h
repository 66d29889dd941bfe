// MessagePack extension type numbers used by the codec (docs/file-format.md, "Value encoding").
#pragma once

#include <cstdint>

namespace cairn::ext {

inline constexpr std::int8_t ref = 1;         // 8-byte big-endian oid, then the type name
inline constexpr std::int8_t uuid = 2;        // 16 bytes
inline constexpr std::int8_t decimal = 3;     // ASCII text -?[0-9]+(.[0-9]+)?
inline constexpr std::int8_t timestamp = -1;  // MessagePack's standard timestamp

}  // namespace cairn::ext
