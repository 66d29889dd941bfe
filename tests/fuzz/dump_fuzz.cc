// libFuzzer target: reading arbitrary text as a dump never crashes (it is read or refused with
// InvalidArgument), and an object of any type, key and data, written as a dump line between a
// header and a trailer, reads back as the same type and key bytes and the same data.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cli/dump.h"

namespace {

void read_any(std::string_view text) {
  std::istringstream in{std::string(text)};
  try {
    static_cast<void>(cairn::cli::read_dump(in));
  } catch (const cairn::InvalidArgument&) {
    // refusing bad input is the expected outcome
  }
}

// The input as an object: a byte giving the type's length, one giving the key's, then the
// type's bytes, the key's bytes and the data.
void round_trip(std::string_view input) {
  if (input.size() < 2) return;
  auto take = [&input](std::size_t n) {
    n = std::min(n, input.size());
    std::string part(input.substr(0, n));
    input.remove_prefix(n);
    return part;
  };
  std::size_t type_size = static_cast<unsigned char>(input[0]);
  std::size_t key_size = static_cast<unsigned char>(input[1]);
  input.remove_prefix(2);
  cairn::StoredObject object;
  object.oid = cairn::Oid(1);
  object.version = 1;
  object.type = take(type_size);
  object.key = take(key_size);
  object.data = std::string(input);

  std::istringstream in(
      std::string(R"({"format":"cairn-dump","version":3,"next_oid":2,"csn":1,"fence_mark":1})") +
      "\n" + cairn::cli::dump_object_line(object) + "\n" + R"({"end":"cairn-dump","objects":1})" +
      "\n");
  cairn::cli::Dump dump = cairn::cli::read_dump(in);  // a dump line is never refused
  if (dump.objects.size() != 1) std::abort();
  const cairn::cli::DumpObject& back = dump.objects[0];
  if (back.oid != object.oid || back.type != object.type || back.key != object.key) std::abort();
  // Data written as "fields" comes back encoded afresh: the same Value, perhaps other bytes.
  if (back.data != object.data && cairn::encode(cairn::decode(object.data)) != back.data) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  read_any(input);
  round_trip(input);
  return 0;
}
