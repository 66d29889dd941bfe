// Fuzz target: the FileStore's decoders over arbitrary bytes, as a whole database file. They
// must never crash or read out of bounds; bad input is Corruption or a reported problem.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cairn/error.h"
#include "store/file_format.h"
#include "store/file_index.h"
#include "store/file_replay.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    cairn::logfmt::decode_file_header(bytes);
  } catch (const cairn::Corruption&) {
  }
  (void)cairn::logfmt::decode_txn_header(bytes);
  (void)cairn::logfmt::decode_record(bytes);
  // The input as a checkpoint body (entries, then a fence mark or not), its entry count taken
  // from its first byte.
  if (!bytes.empty()) {
    cairn::FileIndex index;
    (void)index.decode_checkpoint(bytes.substr(1), static_cast<std::uint8_t>(bytes[0]));
  }
  // The input as the log after a valid header, in both modes.
  std::string file(cairn::logfmt::log_start, '\0');
  file.append(bytes);
  for (bool check : {true, false}) {
    cairn::FileIndex index;
    try {
      // Strict (every byte durable) and lenient (nothing known durable).
      cairn::replay_log(file, "fuzz", index, check, check ? file.size() : cairn::logfmt::log_start);
    } catch (const cairn::Corruption&) {
    } catch (const cairn::InvalidArgument&) {
    }
  }
  return 0;
}
