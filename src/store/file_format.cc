// Encoders and decoders of the FileStore's format (file_format.h, docs/file-format.md §2).
#include "store/file_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "cairn/error.h"
#include "cairn/store.h"
#include "core/checksum.h"

namespace cairn::logfmt {

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

namespace {

std::uint16_t get_u16(const char* p) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(p[0]) |
                                    (static_cast<unsigned char>(p[1]) << 8));
}

bool all_zero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

}  // namespace

std::string encode_file_header(const FileHeader& header) {
  std::string out(file_magic);
  put_u32(out, header.version);
  put_u32(out, static_cast<std::uint32_t>(file_header_size));
  put_u64(out, header.created_micros);
  out.push_back(static_cast<char>(header.fsync));
  out.append(7, '\0');
  out.append(reinterpret_cast<const char*>(header.database_id.data()), 16);
  out.append(8, '\0');
  put_u64(out, checksum64(out));
  return out;
}

FileHeader decode_file_header(std::string_view bytes) {
  if (bytes.size() < file_header_size) {
    throw Corruption(
        fmt::format("file header: {} bytes, expected {}", bytes.size(), file_header_size));
  }
  if (bytes.substr(0, 8) != file_magic) {
    throw Corruption("not a cairn database (bad magic at offset 0)");
  }
  if (get_u64(bytes.data() + 56) != checksum64(bytes.substr(0, 56))) {
    throw Corruption("file header checksum mismatch at offset 0");
  }
  FileHeader header;
  header.version = get_u32(bytes.data() + 8);
  if (header.version < format_version_first || header.version > format_version) {
    throw Corruption(
        fmt::format("unsupported format version {} (this cairn reads versions {} to {})",
                    header.version, format_version_first, format_version));
  }
  if (get_u32(bytes.data() + 12) != file_header_size) {
    throw Corruption("file header: unexpected header size");
  }
  header.created_micros = get_u64(bytes.data() + 16);
  header.fsync = static_cast<std::uint8_t>(bytes[24]);
  if (header.fsync > 2) throw Corruption("file header: unknown fsync policy");
  std::memcpy(header.database_id.data(), bytes.data() + 32, 16);
  return header;
}

std::string encode_txn_header(const TxnHeader& header) {
  std::string out(txn_magic);
  out.push_back(static_cast<char>(header.kind));
  out.append(3, '\0');
  put_u64(out, header.body_length);
  put_u64(out, header.csn);
  put_u32(out, header.count);
  put_u32(out, static_cast<std::uint32_t>(checksum64(out)));
  return out;
}

std::optional<TxnHeader> decode_txn_header(std::string_view bytes) {
  if (bytes.size() < txn_header_size) return std::nullopt;
  if (bytes.substr(0, 4) != txn_magic || !all_zero(bytes.substr(5, 3))) return std::nullopt;
  if (get_u32(bytes.data() + 28) != static_cast<std::uint32_t>(checksum64(bytes.substr(0, 28)))) {
    return std::nullopt;
  }
  auto kind = static_cast<std::uint8_t>(bytes[4]);
  if (kind < 1 || kind > 5) return std::nullopt;
  TxnHeader header;
  header.kind = static_cast<TxnKind>(kind);
  header.body_length = get_u64(bytes.data() + 8);
  header.csn = get_u64(bytes.data() + 16);
  header.count = get_u32(bytes.data() + 24);
  return header;
}

namespace {

std::string encode_mark(TxnKind kind, std::uint64_t mark) {
  std::string frame = encode_txn_header({kind, 8, 0, 0});
  std::string body;
  put_u64(body, mark);
  frame += body;
  put_u64(frame, checksum64(body));
  return frame;
}

}  // namespace

std::string encode_oid_mark(std::uint64_t next) {
  return encode_mark(TxnKind::oids, next);
}

std::string encode_fence_mark(std::uint64_t mark) {
  return encode_mark(TxnKind::fences, mark);
}

std::string encode_checkpoint_slot(const CheckpointSlot& slot) {
  std::string out;
  put_u64(out, slot.sequence);
  put_u64(out, slot.offset);
  put_u64(out, slot.end);
  put_u32(out, 0);
  put_u32(out, static_cast<std::uint32_t>(checksum64(out)));
  return out;
}

std::optional<CheckpointSlot> decode_checkpoint_slot(std::string_view bytes) {
  if (bytes.size() < checkpoint_slot_size) return std::nullopt;
  bytes = bytes.substr(0, checkpoint_slot_size);
  if (all_zero(bytes)) return CheckpointSlot{};
  if (get_u32(bytes.data() + 28) != static_cast<std::uint32_t>(checksum64(bytes.substr(0, 28))) ||
      get_u32(bytes.data() + 24) != 0) {
    return std::nullopt;
  }
  CheckpointSlot slot{get_u64(bytes.data()), get_u64(bytes.data() + 8), get_u64(bytes.data() + 16)};
  if (slot.sequence == 0 || slot.offset < log_start || slot.end <= slot.offset) return std::nullopt;
  return slot;
}

std::string encode_sync_slot(const SyncSlot& slot) {
  std::string out;
  put_u64(out, slot.sequence);
  put_u64(out, slot.end);
  out.append(12, '\0');
  put_u32(out, static_cast<std::uint32_t>(checksum64(out)));
  return out;
}

std::optional<SyncSlot> decode_sync_slot(std::string_view bytes) {
  if (bytes.size() < sync_slot_size) return std::nullopt;
  bytes = bytes.substr(0, sync_slot_size);
  if (all_zero(bytes)) return SyncSlot{};
  if (get_u32(bytes.data() + 28) != static_cast<std::uint32_t>(checksum64(bytes.substr(0, 28))) ||
      !all_zero(bytes.substr(16, 12))) {
    return std::nullopt;
  }
  SyncSlot slot{get_u64(bytes.data()), get_u64(bytes.data() + 8)};
  if (slot.sequence == 0 || slot.end < log_start) return std::nullopt;
  return slot;
}

std::size_t record_size(std::size_t type, std::size_t key, std::size_t data) {
  return record_header_size + type + key + data + record_trailer_size;
}

void append_record(std::string& out, Oid oid, std::uint64_t version, RecordOp op,
                   std::string_view type, std::string_view key, std::string_view data) {
  std::size_t start = out.size();
  put_u64(out, oid.value());
  put_u64(out, version);
  out.push_back(static_cast<char>(op));
  out.push_back(static_cast<char>(type.size()));
  out.push_back(static_cast<char>(key.size() & 0xff));
  out.push_back(static_cast<char>(key.size() >> 8));
  put_u32(out, static_cast<std::uint32_t>(data.size()));
  out.append(type);
  out.append(key);
  out.append(data);
  put_u64(out, checksum64(std::string_view(out).substr(start)));
}

std::optional<RecordView> decode_record(std::string_view bytes) {
  if (bytes.size() < record_header_size + record_trailer_size) return std::nullopt;
  const char* p = bytes.data();
  RecordView r;
  r.oid = Oid(get_u64(p));
  r.version = get_u64(p + 8);
  auto op = static_cast<std::uint8_t>(p[16]);
  std::size_t type_len = static_cast<unsigned char>(p[17]);
  std::size_t key_len = get_u16(p + 18);
  std::size_t data_len = get_u32(p + 20);
  if ((op != 1 && op != 2) || key_len > max_key_length || data_len > max_object_bytes) {
    return std::nullopt;
  }
  r.op = static_cast<RecordOp>(op);
  std::size_t body = record_header_size + type_len + key_len + data_len;
  if (bytes.size() - record_trailer_size < body) return std::nullopt;
  if (get_u64(p + body) != checksum64(bytes.substr(0, body))) return std::nullopt;
  r.type = bytes.substr(record_header_size, type_len);
  r.key = bytes.substr(record_header_size + type_len, key_len);
  r.data = bytes.substr(record_header_size + type_len + key_len, data_len);
  r.size = body + record_trailer_size;
  if (r.op == RecordOp::remove && body != record_header_size) return std::nullopt;
  return r;
}

}  // namespace cairn::logfmt
