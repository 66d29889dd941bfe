// `cairn dump` and `cairn restore`: the dump format (dump.h).
#include "cli/dump.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <istream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/json.h"
#include "cairn/value.h"
#include "core/json_scan.h"
#include "store/file_format.h"
#include "store/file_index.h"
#include "store/store_util.h"

namespace cairn::cli {

namespace {

using Json = nlohmann::json;

// Oids loaded per round trip while dumping.
constexpr std::uint64_t load_batch = 4096;

bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

bool is_utf8(std::string_view text) {
  if (is_ascii(text)) return true;
  try {
    static_cast<void>(Json(std::string(text)).dump());
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

// Whether cairn's JSON form carries `value` exactly, so that restoring it gives the same Value:
// JSON strings hold only UTF-8 (to_json replaces other bytes), a time must read back as the
// same instant from its text (years past 9999 use an expanded year), and {"$double":"nan"}
// holds only the one NaN.
bool json_exact(const Value& value) {
  switch (value.kind()) {
    case Kind::string:
      return is_utf8(value.as_string());
    case Kind::list:
      return std::all_of(value.as_list().begin(), value.as_list().end(), json_exact);
    case Kind::map:
      return std::all_of(value.as_map().begin(), value.as_map().end(), [](const auto& entry) {
        return is_utf8(entry.first) && json_exact(entry.second);
      });
    case Kind::ref:
      return is_utf8(value.as_ref().type);
    case Kind::floating:
      // JSON writes every NaN as {"$double":"nan"}, which reads back as the quiet NaN: one with
      // another sign or payload is kept only as raw bytes.
      return !std::isnan(value.as_double()) ||
             std::bit_cast<std::uint64_t>(value.as_double()) ==
                 std::bit_cast<std::uint64_t>(std::numeric_limits<double>::quiet_NaN());
    case Kind::timestamp:
      try {
        return Timestamp::parse(value.as_timestamp().str()) == value.as_timestamp();
      } catch (const Error&) {
        return false;
      }
    default:
      return true;
  }
}

// A type or key as a JSON member value: a JSON string when it is valid UTF-8, which JSON strings
// hold exactly, else {"$bytes":"BASE64"}, which holds any bytes.
std::string text_json(std::string_view text) {
  if (is_utf8(text)) return Json(std::string(text)).dump();
  return to_json(Value(Bytes{std::string(text)}));
}

// The data as "fields" when it decodes to a Value that JSON carries exactly and that encodes
// back to the same bytes, else as "raw" bytes, so that restoring a dump always gives back the
// same data. (Other MessagePack writers' forms decode too: an int in a wider form than needed,
// a float 32, a map out of key order, a timestamp with nanoseconds below the microsecond.)
std::string data_member(std::string_view data) {
  try {
    Value value = decode(data);
    if (json_exact(value) && encode(value) == data) return ",\"fields\":" + to_json(value);
  } catch (const Corruption&) {
    // Not a codec Value: written as raw bytes.
  }
  return ",\"raw\":" + to_json(Value(Bytes{std::string(data)}));
}

// Refuses a line that nests deeper than any dump line can (an object holding a Value of the
// deepest nesting allowed), before anything parses or walks it recursively. Returns its member
// separators, for check_unique_members.
std::size_t check_nesting(std::string_view line) {
  constexpr std::size_t limit = max_value_depth * 2 + 2;  // a tagged value adds a level
  std::size_t separators = 0;
  if (scan_json_nesting(line, separators) > limit) {
    throw InvalidArgument(fmt::format("JSON nests deeper than the limit of {}", max_value_depth));
  }
  return separators;
}

Json parse_line(const std::string& line) {
  std::size_t separators = check_nesting(line);
  check_json_text(line);
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 35: what": keep the what.
    std::string_view what = e.what();
    std::size_t colon = what.find(": ");
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
    throw InvalidArgument(fmt::format("invalid JSON at byte {}: {}", e.byte, what));
  } catch (const Json::exception& e) {  // out_of_range for numbers like 1e400
    throw InvalidArgument(fmt::format("invalid JSON: {}", e.what()));
  }
  check_unique_members(separators, j);
  if (!j.is_object()) throw InvalidArgument("expected a JSON object");
  return j;
}

void allow_only(const Json& j, std::initializer_list<std::string_view> names) {
  for (const auto& [name, value] : j.items()) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      throw InvalidArgument(fmt::format("unknown member \"{}\"", name));
    }
  }
}

std::uint64_t unsigned_member(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) throw InvalidArgument(fmt::format("\"{}\" is missing", name));
  if (!it->is_number_unsigned()) {
    throw InvalidArgument(fmt::format("\"{}\" must be a non-negative integer", name));
  }
  return it->get<std::uint64_t>();
}

// A "type" or "key" member: a JSON string, or {"$bytes":"BASE64"} for bytes that are not UTF-8.
std::string text_member(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->size() == 1 && it->contains("$bytes")) {
    try {
      return std::move(from_json(it->dump()).as_bytes().data);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("\"{}\": {}", name, e.what()));
    }
  }
  throw InvalidArgument(fmt::format("\"{}\" must be a string or {{\"$bytes\": \"BASE64\"}}", name));
}

void parse_header(const std::string& line, Dump& dump) {
  Json j = parse_line(line);
  auto format = j.find("format");
  if (format == j.end() || !format->is_string() || *format != dump_format_name) {
    throw InvalidArgument(
        fmt::format("not a cairn dump: the first line must be the header "
                    "{{\"format\":\"{}\",\"version\":{},...}}",
                    dump_format_name, dump_format_version));
  }
  allow_only(j, {"format", "version", "next_oid", "csn", "fence_mark"});
  dump.version = unsigned_member(j, "version");
  if (dump.version < dump_format_oldest_version || dump.version > dump_format_version) {
    throw InvalidArgument(
        fmt::format("dump version {} is not supported (this cairn reads {} to {})", dump.version,
                    dump_format_oldest_version, dump_format_version));
  }
  dump.next_oid = unsigned_member(j, "next_oid");
  if (dump.next_oid > file_store_max_oid) {
    throw InvalidArgument(
        fmt::format("\"next_oid\" {} is past the largest oid a database file "
                    "holds ({})",
                    dump.next_oid, file_store_max_oid));
  }
  dump.csn = unsigned_member(j, "csn");
  if (dump.version >= dump_format_fence_version) {
    dump.fence_mark = unsigned_member(j, "fence_mark");
    if (dump.fence_mark == 0) {
      // docs/file-format.md 2.2: 1 <= mark <= 2^62 (a database that never locked has 1).
      throw InvalidArgument("\"fence_mark\" 0 is below the smallest, 1");
    }
    if (dump.fence_mark > logfmt::max_fence_mark) {
      throw InvalidArgument(fmt::format("\"fence_mark\" {} is past the largest, {}",
                                        dump.fence_mark, logfmt::max_fence_mark));
    }
  } else if (j.contains("fence_mark")) {
    throw InvalidArgument(fmt::format("a dump of version {} has no \"fence_mark\"", dump.version));
  }
}

// The trailer's object count, after checking the rest of the trailer.
std::uint64_t parse_trailer(const Json& j) {
  allow_only(j, {"end", "objects"});
  auto end = j.find("end");
  if (!end->is_string() || *end != dump_format_name) {
    throw InvalidArgument(fmt::format("the trailer's \"end\" must be \"{}\"", dump_format_name));
  }
  return unsigned_member(j, "objects");
}

DumpObject parse_object(const Json& j, std::uint64_t next_oid) {
  allow_only(j, {"oid", "type", "key", "generation", "fields", "raw"});
  DumpObject object;
  object.oid = Oid(unsigned_member(j, "oid"));
  if (!object.oid.is_root() && object.oid.value() >= next_oid) {
    throw InvalidArgument(
        fmt::format("oid {} is not below the header's next_oid {}", object.oid.value(), next_oid));
  }
  object.type = text_member(j, "type");
  object.key = text_member(j, "key");
  if (j.contains("generation")) unsigned_member(j, "generation");
  if (object.type.size() > max_type_length) {
    throw InvalidArgument(fmt::format("\"type\" is longer than {} bytes", max_type_length));
  }
  if (object.key.size() > max_key_length) {
    throw InvalidArgument(fmt::format("\"key\" is longer than {} bytes", max_key_length));
  }

  auto fields = j.find("fields");
  auto raw = j.find("raw");
  if ((fields == j.end()) == (raw == j.end())) {
    throw InvalidArgument("expected exactly one of \"fields\" and \"raw\"");
  }
  try {
    if (fields != j.end()) {
      object.data = encode(from_json(fields->dump()));
    } else {
      Value bytes = from_json(raw->dump());
      if (!bytes.is_bytes()) throw InvalidArgument("must be {\"$bytes\": \"BASE64\"}");
      object.data = std::move(bytes.as_bytes().data);
    }
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(
        fmt::format("\"{}\": {}", fields != j.end() ? "fields" : "raw", e.what()));
  }
  if (object.data.size() > max_object_bytes) {
    throw InvalidArgument(fmt::format("the object's data is {} bytes, over the limit of {}",
                                      object.data.size(), max_object_bytes));
  }
  return object;
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

std::string dump_object_line(const StoredObject& object) {
  std::string line = fmt::format("{{\"oid\":{}", object.oid.value());
  if (!object.type.empty()) line += ",\"type\":" + text_json(object.type);
  if (!object.key.empty()) line += ",\"key\":" + text_json(object.key);
  line += fmt::format(",\"generation\":{}", object.version);
  line += data_member(object.data);
  line += '}';
  return line;
}

std::uint64_t write_dump(FileStore& store, std::ostream& out) {
  FileStoreInfo info = store.info();
  // nlohmann::json orders members by name; write the header in the documented order instead.
  out << fmt::format(
      "{{\"format\":{},\"version\":{},\"next_oid\":{},\"csn\":{},\"fence_mark\":{}}}\n",
      Json(std::string(dump_format_name)).dump(), dump_format_version, info.next_oid, info.last_csn,
      info.fence_mark);
  std::uint64_t written = 0;
  // Live oids from the index, not every oid below next_oid: a database may have handed out
  // billions of oids and kept a few objects.
  for (Oid from = Oid::root();;) {
    std::vector<Oid> batch = store.live_oids(from, load_batch);
    if (batch.empty()) break;
    from = Oid(batch.back().value() + 1);
    LoadResult loaded = store.load(batch);
    for (const StoredObject& object : loaded.objects) {
      if (!object.exists()) continue;
      out << dump_object_line(object) << '\n';
      ++written;
    }
    if (!out) break;
  }
  // Written only once every object is: a dump without it was cut short, and restore says so.
  if (out) {
    out << fmt::format("{{\"end\":{},\"objects\":{}}}\n",
                       Json(std::string(dump_format_name)).dump(), written);
  }
  out.flush();
  if (!out) throw IoError("writing the dump failed");
  return written;
}

Dump read_dump(std::istream& in) {
  Dump dump;
  bool have_header = false;
  std::optional<std::uint64_t> trailer_line;
  std::unordered_map<std::uint64_t, std::uint64_t> line_of_oid;
  std::map<std::pair<std::string, std::string>, std::uint64_t, std::less<>> line_of_key;
  std::string line;
  std::uint64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (is_blank(line)) continue;
    try {
      if (!have_header) {
        parse_header(line, dump);
        have_header = true;
        continue;
      }
      if (trailer_line) {
        throw InvalidArgument(
            fmt::format("a line after the trailer line (line {})", *trailer_line));
      }
      Json j = parse_line(line);
      if (dump.version >= 2 && j.contains("end")) {
        std::uint64_t objects = parse_trailer(j);
        if (objects != dump.objects.size()) {
          throw InvalidArgument(fmt::format(
              "the trailer counts {} object{} but the dump holds {}: it is not the whole dump",
              objects, objects == 1 ? "" : "s", dump.objects.size()));
        }
        trailer_line = number;
        continue;
      }
      DumpObject object = parse_object(j, dump.next_oid);
      if (auto [it, fresh] = line_of_oid.emplace(object.oid.value(), number); !fresh) {
        throw InvalidArgument(
            fmt::format("oid {} is also on line {}", object.oid.value(), it->second));
      }
      if (!object.key.empty()) {
        auto [it, fresh] = line_of_key.emplace(std::pair(object.type, object.key), number);
        if (!fresh) {
          throw InvalidArgument(fmt::format("type {} key {} is also on line {}",
                                            text_json(object.type), text_json(object.key),
                                            it->second));
        }
      }
      dump.objects.push_back(std::move(object));
    } catch (const Error& e) {
      throw InvalidArgument(fmt::format("line {}: {}", number, e.what()));
    }
  }
  if (in.bad()) throw IoError("reading the dump failed");
  if (!have_header) throw InvalidArgument("the input is empty; expected the output of cairn dump");
  if (dump.version >= 2 && !trailer_line) {
    throw InvalidArgument(
        fmt::format("the dump ends without its trailer line: it was cut short after {} object{}",
                    dump.objects.size(), dump.objects.size() == 1 ? "" : "s"));
  }
  return dump;
}

std::vector<std::string> dangling_references(const Dump& dump) {
  std::unordered_set<Oid> held;
  for (const DumpObject& object : dump.objects)
    held.insert(object.oid);
  std::vector<std::string> out;
  for (const DumpObject& object : dump.objects) {
    try {
      for_each_ref(object.data, object.oid, [&](Oid target) {
        if (!held.contains(target)) {
          out.push_back(
              fmt::format("object {} refers to object {}", object.oid.value(), target.value()));
        }
      });
    } catch (const Corruption&) {
      // "raw" data that does not decode: restored byte for byte, and it holds no reference.
    }
  }
  return out;
}

std::uint64_t restore_dump(FileStore& store, Dump dump) {
  FileStoreInfo info = store.info();
  if (info.objects != 0) {
    throw InvalidArgument(
        fmt::format("{} is not empty ({} object{}); restore needs an empty database", info.path,
                    info.objects, info.objects == 1 ? "" : "s"));
  }
  // Every oid below the store's next oid is allocated, so allocating up to the dump's next_oid
  // makes every oid of the dump writable (read_dump checked they are below it) and keeps the
  // oids the dumped database had handed out from being handed out again.
  std::uint64_t next = info.next_oid;
  while (next < dump.next_oid) {
    auto count = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(dump.next_oid - next, std::numeric_limits<std::uint32_t>::max()));
    Oid first = store.new_oids(count);
    next = std::max(next, first.value() + count);
  }
  // Before the objects: a restored database that could hand out a token the dumped one had
  // handed out would let a stale lock holder pass a fencing check.
  store.raise_fence_mark(dump.fence_mark);
  if (dump.objects.empty()) return 0;
  CommitRequest request;
  request.writes.reserve(dump.objects.size());
  for (DumpObject& object : dump.objects) {
    request.writes.push_back(
        WriteOp{object.oid, std::move(object.type), std::move(object.key), std::move(object.data)});
  }
  store.commit(request);
  return request.writes.size();
}

}  // namespace cairn::cli
