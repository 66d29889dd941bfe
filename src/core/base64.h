// Base64 (RFC 4648, standard alphabet, with padding), for the JSON forms of bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cairn::detail {

std::string base64_encode(std::string_view bytes);

// The bytes, or nullopt unless `text` is base64 as base64_encode writes it: a multiple of four
// characters, padding only at the end, and the bits padding leaves over zero (else "YQ==" and
// "YR==" would both be "a", and a value would not come back as the text that gave it).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace cairn::detail
