// The library version.
#pragma once

#include <string_view>

namespace cairn {

inline constexpr std::string_view version = "0.1.0";

}  // namespace cairn
