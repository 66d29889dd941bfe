// libFuzzer target: the hash form of objects in Redis (store/redis_hash.h). A person with
// redis-cli can put anything in a hash, so rebuilding an object from one must only ever return
// or throw cairn::Error. The first byte picks what is fuzzed:
//   even: the rest is a hash, as length-prefixed strings (a u8 length, then that many bytes),
//         alternately field name and value. What rebuilds without `_raw` is the encoding of a
//         Value exactly as encode() writes it, whenever it decodes at all.
//   odd:  the rest is an object's data. The fields data_fields() writes for it, read back in
//         any order (the second byte shuffles them), rebuild exactly the same bytes.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "store/redis_hash.h"

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// The reply HGETALL would give for `fields`, in their order. Points into `fields`.
class FakeReply {
 public:
  explicit FakeReply(Fields& fields) {
    strings_.reserve(2 * fields.size());
    for (auto& [name, value] : fields) {
      strings_.push_back(string_reply(name));
      strings_.push_back(string_reply(value));
    }
    for (redisReply& r : strings_)
      pointers_.push_back(&r);
    array_.type = REDIS_REPLY_ARRAY;
    array_.elements = pointers_.size();
    array_.element = pointers_.data();
  }
  FakeReply(const FakeReply&) = delete;
  FakeReply& operator=(const FakeReply&) = delete;

  const redisReply* get() const { return &array_; }

 private:
  static redisReply string_reply(std::string& s) {
    redisReply r{};
    r.type = REDIS_REPLY_STRING;
    r.str = s.data();
    r.len = s.size();
    return r;
  }

  std::vector<redisReply> strings_;
  std::vector<redisReply*> pointers_;
  redisReply array_{};
};

void fuzz_hash(std::string_view input, bool check_oid) {
  Fields fields;
  std::optional<std::string> name;
  while (!input.empty()) {
    std::size_t n = std::min<std::size_t>(static_cast<unsigned char>(input[0]), input.size() - 1);
    std::string part(input.substr(1, n));
    input.remove_prefix(1 + n);
    if (name) {
      fields.emplace_back(std::move(*name), std::move(part));
      name.reset();
    } else {
      name = std::move(part);
    }
  }
  FakeReply reply(fields);
  bool blob = false;
  std::optional<cairn::StoredObject> object;
  try {
    object = cairn::redis::object_from_hash(cairn::Oid(7), reply.get(), check_oid, blob);
  } catch (const cairn::Error&) {
    return;  // refusing a malformed hash is the expected outcome
  }
  if (!object || blob) return;
  bool raw = std::any_of(fields.begin(), fields.end(), [](const auto& f) {
    return f.first == "_raw" || f.first == cairn::redis::bytes_field;
  });
  if (raw) return;
  cairn::Value value;
  try {
    value = cairn::decode(object->data);
  } catch (const cairn::Error&) {
    return;  // e.g. a field name that is not UTF-8: refused when the data is used
  }
  if (cairn::encode(value) != object->data) std::abort();
}

void fuzz_round_trip(std::string_view input) {
  if (input.empty()) return;
  auto seed = static_cast<unsigned char>(input[0]);
  std::string data(input.substr(1));
  Fields fields = cairn::redis::data_fields(data);
  fields.emplace_back("_version", "3");
  fields.emplace_back("_type", "T");
  fields.emplace_back("_key", "k");
  std::minstd_rand shuffle(seed + 1u);
  std::shuffle(fields.begin(), fields.end(), shuffle);
  FakeReply reply(fields);
  bool blob = false;
  std::optional<cairn::StoredObject> object =
      cairn::redis::object_from_hash(cairn::Oid(7), reply.get(), false, blob);
  if (!object || blob || object->data != data || object->version != 3 || object->type != "T" ||
      object->key != "k") {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(bytes) + 1, size - 1);
  if ((bytes[0] & 1) == 0) {
    fuzz_hash(input, (bytes[0] & 2) != 0);
  } else {
    fuzz_round_trip(input);
  }
  return 0;
}
