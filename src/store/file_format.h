// The FileStore's on-disk format (docs/file-format.md §2): encoders and decoders of the file
// header, transaction frames and object records. Pure functions over bytes, so that the
// decoders can be fuzzed; every integer is little-endian.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cairn/oid.h"

namespace cairn::logfmt {

inline constexpr std::string_view file_magic{"cairndb\0", 8};
// Version 2 adds fence-mark frames (a reader of version 1 would take one for a torn tail or
// corruption). A file is written as version 1 until its first fence mark, so that files that
// never held a lock stay readable by readers of version 1; this code reads both.
inline constexpr std::uint32_t format_version_first = 1;
inline constexpr std::uint32_t format_version_fences = 2;
inline constexpr std::uint32_t format_version = format_version_fences;  // the newest
// Fencing tokens (and so fence marks) stay below this, as CSNs do: beyond any real history.
inline constexpr std::uint64_t max_fence_mark = std::uint64_t{1} << 62;
inline constexpr std::size_t file_header_size = 64;
// Two checkpoint slots follow the header, then two sync slots, then 64 reserved bytes; the log
// starts after them.
inline constexpr std::size_t checkpoint_slots_offset = 64;
inline constexpr std::size_t checkpoint_slot_size = 32;
inline constexpr std::size_t sync_slots_offset = 128;
inline constexpr std::size_t sync_slot_size = 32;
inline constexpr std::size_t reserved_offset = 192;  // 64 bytes, zero
inline constexpr std::size_t log_start = 256;
inline constexpr std::string_view txn_magic{"ctxn", 4};
inline constexpr std::size_t txn_header_size = 32;
inline constexpr std::size_t txn_trailer_size = 8;
inline constexpr std::size_t record_header_size = 24;
inline constexpr std::size_t record_trailer_size = 8;

struct FileHeader {
  std::uint32_t version = format_version_first;
  std::uint64_t created_micros = 0;
  std::uint8_t fsync = 1;  // 0 always, 1 batch, 2 never
  std::array<std::uint8_t, 16> database_id{};
};

std::string encode_file_header(const FileHeader& header);
// Throws Corruption for a wrong magic, version (neither 1 nor 2), size or checksum.
FileHeader decode_file_header(std::string_view bytes);

enum class TxnKind : std::uint8_t {
  commit = 1,      // records of one commit; every record's version is the frame's CSN
  oids = 2,        // no records; the body is 8 bytes: the next oid new_oids() may hand out
  snapshot = 3,    // written by pack: records keep the versions they had
  checkpoint = 4,  // the index as of this frame's position; replay skips it
  fences = 5       // no records; the body is 8 bytes: fencing tokens below it may be in use
};

struct TxnHeader {
  TxnKind kind = TxnKind::commit;
  std::uint64_t body_length = 0;
  std::uint64_t csn = 0;
  std::uint32_t count = 0;  // records in the body
};

std::string encode_txn_header(const TxnHeader& header);
// nullopt if the bytes are not a valid frame header (magic, kind, reserved bytes, checksum).
std::optional<TxnHeader> decode_txn_header(std::string_view bytes);

// A whole oid-mark frame: the oids below `next` are never handed out again.
std::string encode_oid_mark(std::uint64_t next);
// A whole fence-mark frame: every fencing token handed out is below `mark`.
std::string encode_fence_mark(std::uint64_t mark);

// A checkpoint slot: where the newest checkpoint frame is. `sequence` 0 = an empty slot.
struct CheckpointSlot {
  std::uint64_t sequence = 0;
  std::uint64_t offset = 0;  // of the checkpoint frame
  std::uint64_t end = 0;     // offset + the frame's size: where replay resumes
};

std::string encode_checkpoint_slot(const CheckpointSlot& slot);
// nullopt if the 32 bytes are neither all zero (an empty slot) nor a slot with a valid checksum.
std::optional<CheckpointSlot> decode_checkpoint_slot(std::string_view bytes);

// A sync slot: the log was durable up to `end` (a frame boundary). `sequence` 0 = empty.
struct SyncSlot {
  std::uint64_t sequence = 0;
  std::uint64_t end = 0;
};

std::string encode_sync_slot(const SyncSlot& slot);
// nullopt if the 32 bytes are neither all zero nor a slot with a valid checksum.
std::optional<SyncSlot> decode_sync_slot(std::string_view bytes);

enum class RecordOp : std::uint8_t { write = 1, remove = 2 };

struct RecordView {
  Oid oid;
  std::uint64_t version = 0;
  RecordOp op = RecordOp::write;
  std::string_view type;
  std::string_view key;
  std::string_view data;
  std::size_t size = 0;  // bytes of the whole record, checksum included
};

std::size_t record_size(std::size_t type, std::size_t key, std::size_t data);
// Appends one record to `out`.
void append_record(std::string& out, Oid oid, std::uint64_t version, RecordOp op,
                   std::string_view type, std::string_view key, std::string_view data);
// Decodes the record at the start of `bytes` (which may run on past it). nullopt if it is
// truncated, malformed, or its checksum fails.
std::optional<RecordView> decode_record(std::string_view bytes);

void put_u32(std::string& out, std::uint32_t v);
void put_u64(std::string& out, std::uint64_t v);
std::uint32_t get_u32(const char* p);
std::uint64_t get_u64(const char* p);

}  // namespace cairn::logfmt
