// libFuzzer target: decoding arbitrary bytes never crashes or reads out of bounds, and whatever
// decodes re-encodes to bytes that decode to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cairn/codec.h"
#include "cairn/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  cairn::Value value;
  try {
    value = cairn::decode(bytes);
  } catch (const cairn::Corruption&) {
    return 0;  // refusing bad input is the expected outcome
  }
  std::string again = cairn::encode(value);
  if (!(cairn::decode(again) == value)) std::abort();
  return 0;
}
