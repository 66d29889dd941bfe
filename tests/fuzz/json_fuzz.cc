// libFuzzer target: parsing arbitrary text as JSON values never crashes, and whatever parses
// prints to JSON that parses back to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cairn/error.h"
#include "cairn/json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  cairn::Value value;
  try {
    value = cairn::from_json(text);
  } catch (const cairn::InvalidArgument&) {
    return 0;  // refusing bad input is the expected outcome
  }
  if (!(cairn::from_json(cairn::to_json(value)) == value)) std::abort();
  return 0;
}
