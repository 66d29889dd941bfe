// RedisStore: the store contract kept in Redis, in a layout a person can read with redis-cli
// (docs/redis-layout.md). Every commit is one Lua script that validates the read set and the
// unique keys and only then applies everything, so no partial commit is ever visible. One
// connection per store, guarded by a mutex; waiting for a lock does not hold it. Once someone
// subscribes, a second connection follows the change stream, so that listeners hear of every
// commit to the store, whichever process made it.
#include "store/redis_store.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "cairn/error.h"
#include "cairn/value.h"
#include "store/listeners.h"
#include "store/redis_connection.h"
#include "store/redis_hash.h"
#include "store/redis_ptr.h"
#include "store/store_util.h"

namespace cairn {

namespace {

using ReplyPtr = RedisReplyPtr;
using redis::Args;
using redis::bytes_field;
using redis::data_fields;
using redis::expect_array;
using redis::integer_of;
using redis::object_from_hash;
using redis::opt_string;
using redis::parse_u64;
using redis::reply_str;
using redis::Resend;
using redis::string_of;
using redis::unexpected;

// How many entries the change stream keeps (approximately: XADD MAXLEN ~).
constexpr std::string_view stream_max_len = "100000";
// Objects read or deleted per round trip by pack().
constexpr std::size_t pack_batch = 512;
// Field-value pairs per HSET inside the commit script (Lua's unpack() has a stack limit).
constexpr int hset_chunk = 500;

// ---- Lua scripts (all take numkeys 0 and build their keys from the prefix in ARGV[1]) ----

// ARGV: prefix, stream max length, epoch, seen csn, nreads, (oid, version)*, ndeletes, oid*,
//       nwrites, (oid, type, key, hash key, nfields, (field, value)*)*,
//       [nappends, (oid, bytes)*, [nlocks, (lock name, fencing token)*]]
// The hash key of a write is where its hash goes: `P o:<oid>`, or its readable key `P<type>:<key>`
// (hash_key()), in which case `P o:<oid>` becomes a pointer {_at = hash key}. A write whose one
// field is `_bytes` is a blob: the field's value is its bytes, which go to the string `P b:<oid>`.
// The appends are left out when there are none, so that such commits cost nothing more; so are
// the lock checks (after a count of 0 appends if they have none).
// The epoch is the one the client read when it opened the store (RedisStore::epoch_), the seen
// csn the highest CSN it has seen here (RedisStore::seen_csn_).
// Returns {"epoch", current epoch} (nothing written) if `P epoch` holds another, {"behind",
// current csn} (nothing written) if `P csn` is below the seen csn,
// {"conflict", oid...}, {"same", csn} (nothing to apply), {"ok", csn, changed oid...}, or
// for an append that cannot apply (nothing written): {"absent", oid}, {"not_blob", oid} or
// {"too_big", oid, current data size}; or {"csn_behind", csn} (nothing written) when the CSN
// counter is behind the change stream; or {"lock_lost", n} (nothing written) when the n-th lock
// check (from 1) fails: `P lock:<name>` is gone (released, or expired by its PEXPIRE) or
// `P fence:<name>` holds another token than the one given, which a later lock() took.
constexpr std::string_view commit_script = R"lua(
local p = ARGV[1]
-- Another history (the database flushed or replaced since this client opened it): the reads
-- it validates, and the CSNs it knows, may be numbers that mean other commits here.
local epoch = redis.call('GET', p .. 'epoch') or ''
if epoch ~= ARGV[3] then return {'epoch', epoch} end
-- The CSN counter, read once: checked here, bumped at the end.
local last = redis.call('GET', p .. 'csn') or '0'
if not string.match(last, '^%d+$') or #last > 15 then
  return redis.error_reply('ERR ' .. p .. 'csn is not an integer or out of range')
end
-- Below a CSN this client has seen, and so is the change stream: the database went back (an
-- older copy restored keeps its epoch), and its versions may now name other commits than the
-- ones the client read. (A counter alone set back by hand is refused by the XADD below.)
if tonumber(last) < tonumber(ARGV[4]) and stream_top(p .. 'changes') < tonumber(ARGV[4]) then
  return {'behind', last}
end
local i = 6
-- Where an object's hash is (the key its pointer names, or its own key), and its own key.
local function where(oid)
  local okey = p .. 'o:' .. oid
  return redis.call('HGET', okey, '_at') or okey, okey
end
local conflicts = {'conflict'}
local dead_holders = {}
local nreads = tonumber(ARGV[5])
-- Each redis.call costs more than most commands themselves: read what is at P o:<oid> in one.
for _ = 1, nreads do
  local meta = redis.call('HMGET', p .. 'o:' .. ARGV[i], '_at', '_version')
  local cur = meta[2]
  if meta[1] then cur = redis.call('HGET', meta[1], '_version') end
  if (cur or '0') ~= ARGV[i + 1] then conflicts[#conflicts + 1] = ARGV[i] end
  i = i + 2
end
local released = {}
local deletes = {}
local ndel = tonumber(ARGV[i]); i = i + 1
for _ = 1, ndel do
  deletes[#deletes + 1] = ARGV[i]; released[ARGV[i]] = true; i = i + 1
end
local writes = {}
local nw = tonumber(ARGV[i]); i = i + 1
for _ = 1, nw do
  local w = {oid = ARGV[i], type = ARGV[i + 1], key = ARGV[i + 2], at = ARGV[i + 3],
             n = tonumber(ARGV[i + 4]), first = i + 5}
  i = i + 5 + 2 * w.n
  writes[#writes + 1] = w; released[w.oid] = true
end
local appends = {}
if ARGV[i] then
  local na = tonumber(ARGV[i]); i = i + 1
  for _ = 1, na do
    appends[#appends + 1] = {oid = ARGV[i], bytes = ARGV[i + 1]}; i = i + 2
  end
end
-- Fencing, before anything else can refuse: each lock held now under the token given.
if ARGV[i] then
  local nl = tonumber(ARGV[i]); i = i + 1
  for n = 1, nl do
    if redis.call('EXISTS', p .. 'lock:' .. ARGV[i]) == 0 or
       redis.call('GET', p .. 'fence:' .. ARGV[i]) ~= ARGV[i + 1] then
      return {'lock_lost', tostring(n)}
    end
    i = i + 2
  end
end
for _, w in ipairs(writes) do
  if w.key ~= '' then
    local holder = redis.call('HGET', p .. 'k:' .. w.type, w.key)
    if holder and holder ~= w.oid then
      local gives_up = false
      if released[holder] then
        gives_up = true
        for _, o in ipairs(writes) do
          if o.oid == holder and o.type == w.type and o.key == w.key then gives_up = false end
        end
      end
      -- An entry whose object is gone (its P o:<oid> or its hash deleted by hand) holds the
      -- key for nothing: the write takes it over (dead_holders, below).
      if not gives_up then
        if live(p, holder) then
          conflicts[#conflicts + 1] = w.oid; conflicts[#conflicts + 1] = holder
        else
          dead_holders[#dead_holders + 1] = {oid = holder, type = w.type}
        end
      end
    end
  end
end
if #conflicts > 1 then return conflicts end
-- Each append's object must be a blob with room for the bytes. Checked before anything is
-- written, since Redis keeps what a script wrote before it stopped. A blob written before blobs
-- had their own form sits in `_raw`: the append moves it to `P b:<oid>`.
for _, a in ipairs(appends) do
  a.at = where(a.oid)
  a.bkey = p .. 'b:' .. a.oid
  local meta = redis.call('HMGET', a.at, '_version', '_bytes', '_raw')
  if not meta[1] then return {'absent', a.oid} end
  local size
  if meta[2] then
    size = 1 + redis.call('STRLEN', a.bkey)
  elseif meta[3] and string.byte(meta[3], 1) == 193 then
    a.raw = meta[3]; size = #a.raw
  else
    return {'not_blob', a.oid}
  end
  if size + #a.bytes > @MAX_OBJECT_BYTES@ then
    return {'too_big', a.oid, string.format('%d', size)}
  end
end
if #deletes == 0 and #writes == 0 and #appends == 0 then
  return {'same', last}
end
-- Everything is checked: from here on nothing fails unless a key holds the wrong type.
-- Deletes are reported even of objects already absent: every commit names what it touched.
local changed = {}
for _, oid in ipairs(deletes) do changed[#changed + 1] = oid end
for _, w in ipairs(writes) do changed[#changed + 1] = w.oid end
for _, a in ipairs(appends) do changed[#changed + 1] = a.oid end
for _, h in ipairs(dead_holders) do changed[#changed + 1] = h.oid end
-- The stream entry first: XADD refuses an id at or below the stream's last (a CSN counter
-- deleted or set back by hand), and then nothing is written yet. The counter follows.
local csn = string.format('%d', tonumber(last) + 1)
local added = redis.pcall('XADD', p .. 'changes', 'MAXLEN', '~', ARGV[2], csn .. '-0', 'csn', csn,
                          'oids', table.concat(changed, ' '))
if type(added) == 'table' and added.err then return {'csn_behind', csn} end
redis.call('SET', p .. 'csn', csn)
-- Removes an object: its index entries, its hash, its pointer and a blob's bytes (deleting the
-- string unasked costs less than asking whether there is one). The type and key of an object at
-- a readable key are that key's (P<type>:<key>, the type without ':'), even if its hash is gone.
local function remove(oid)
  local okey = p .. 'o:' .. oid
  -- One call for the pointer or the type and key (every hash the script writes has one or the
  -- other); a hash with neither (edited by hand) is deleted all the same.
  local meta = redis.call('HMGET', okey, '_at', '_type', '_key')
  if not (meta[1] or meta[2] or meta[3]) then
    redis.call('DEL', okey, p .. 'b:' .. oid)
    return
  end
  local at = meta[1] or okey
  local t, k = meta[2] or '', meta[3] or ''
  local colon = at ~= okey and string.find(at, ':', #p + 1, true)
  if colon then
    t, k = string.sub(at, #p + 1, colon - 1), string.sub(at, colon + 1)
  end
  if t ~= '' then redis.call('ZREM', p .. 't:' .. t, oid) end
  if k ~= '' and redis.call('HGET', p .. 'k:' .. t, k) == oid then
    redis.call('HDEL', p .. 'k:' .. t, k)
    redis.call('ZREM', p .. 'ks:' .. t, k)
  end
  redis.call('DEL', okey, at, p .. 'b:' .. oid)
end
-- A dead holder whose key a write takes over goes entirely: else its pointer would lead to the
-- new object's hash at that readable key, and loading, rewriting or deleting the old oid would
-- read or delete the new object. Its readable key is not touched (it may hold another's hash).
for _, h in ipairs(dead_holders) do
  redis.call('DEL', p .. 'o:' .. h.oid, p .. 'b:' .. h.oid)
  if h.type ~= '' then redis.call('ZREM', p .. 't:' .. h.type, h.oid) end
end
for _, oid in ipairs(deletes) do remove(oid) end
-- Removes every rewritten object first, so that keys can move between objects in one commit.
for _, w in ipairs(writes) do remove(w.oid) end
for _, w in ipairs(writes) do
  local okey = p .. 'o:' .. w.oid
  -- The metadata goes in the same HSET as the first fields.
  local args = {w.at, '_version', csn, '_type', w.type, '_key', w.key}
  if w.at ~= okey then
    redis.call('DEL', w.at)
    args[#args + 1] = '_oid'; args[#args + 1] = w.oid
    redis.call('HSET', okey, '_at', w.at)
  end
  local j = 0
  if w.n == 1 and ARGV[w.first] == '_bytes' then
    local bkey = p .. 'b:' .. w.oid
    redis.call('SET', bkey, ARGV[w.first + 1])
    args[#args + 1] = '_bytes'; args[#args + 1] = bkey
    j = 1
  end
  repeat
    local stop = math.min(w.n, j + @CHUNK@)
    while j < stop do
      args[#args + 1] = ARGV[w.first + 2 * j]; args[#args + 1] = ARGV[w.first + 2 * j + 1]
      j = j + 1
    end
    redis.call('HSET', unpack(args))
    args = {w.at}
  until j >= w.n
  if w.type ~= '' then redis.call('ZADD', p .. 't:' .. w.type, w.oid, w.oid) end
  if w.key ~= '' then
    redis.call('HSET', p .. 'k:' .. w.type, w.key, w.oid)
    redis.call('ZADD', p .. 'ks:' .. w.type, 0, w.key)
  end
end
for _, a in ipairs(appends) do
  if a.raw then
    redis.call('SET', a.bkey, string.sub(a.raw, 2) .. a.bytes)
    redis.call('HDEL', a.at, '_raw')
    redis.call('HSET', a.at, '_version', csn, '_bytes', a.bkey)
  else
    redis.call('APPEND', a.bkey, a.bytes)
    redis.call('HSET', a.at, '_version', csn)
  end
end
local out = {'ok', csn}
for _, oid in ipairs(changed) do out[#out + 1] = oid end
return out
)lua";

// ARGV: prefix, what ("data" or "size"), oid*. Returns the current csn, then HGETALL of each
// object's hash (following its pointer if it has one), then, for each of them that is a blob (has
// `_bytes`), in order, its bytes (GET P b:<oid>; nil if missing), or with "size" only their
// length (STRLEN): the same snapshot for all, read in one go.
constexpr std::string_view load_script = R"lua(
local p = ARGV[1]
local op = ARGV[2] == 'size' and 'STRLEN' or 'GET'
local out = {redis.call('GET', p .. 'csn') or '0'}
local blobs = {}
for i = 3, #ARGV do
  local okey = p .. 'o:' .. ARGV[i]
  local h = redis.call('HGETALL', redis.call('HGET', okey, '_at') or okey)
  out[#out + 1] = h
  for j = 1, #h, 2 do
    if h[j] == '_bytes' then
      blobs[#blobs + 1] = redis.call(op, p .. 'b:' .. ARGV[i])
      break
    end
  end
end
for _, b in ipairs(blobs) do out[#out + 1] = b end
return out
)lua";

// Put before the scripts that use it (script_source). Whether object <oid> exists, and its
// key: a hash at P o:<oid> with a _version, or a pointer _at there to a hash with a _version
// whose _oid is <oid>. A hash deleted by hand leaves a pointer to nothing, and its index
// entries: those name no object.
constexpr std::string_view live_function = R"lua(
local function live(p, oid)
  local meta = redis.call('HMGET', p .. 'o:' .. oid, '_at', '_version', '_key')
  if not meta[1] then return meta[2] ~= false, meta[3] end
  local h = redis.call('HMGET', meta[1], '_oid', '_version', '_key')
  return h[1] == oid and h[2] ~= false, h[3]
end
)lua";

// Put before the scripts that use it (script_source). The CSN of the change stream's last entry
// (0 if it has none): what the database's history has reached, whatever `P csn` says.
constexpr std::string_view stream_top_function = R"lua(
local function stream_top(stream)
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #top == 0 then return 0 end
  return tonumber(string.match(top[1][1], '^(%d+)')) or 0
end
)lua";

// ARGV: prefix, type, score lower bound "(after", limit. Returns oid, key, oid, key... of up to
// `limit` live objects (index entries of objects deleted by hand are passed over).
constexpr std::string_view scan_type_script = R"lua(
local p = ARGV[1]
local low = ARGV[3]
local left = tonumber(ARGV[4])
local out = {}
while left > 0 do
  local found = redis.call('ZRANGEBYSCORE', p .. 't:' .. ARGV[2], low, '+inf', 'WITHSCORES',
                          'LIMIT', 0, left)
  if #found == 0 then break end
  for j = 1, #found, 2 do
    local oid = found[j]
    local ok, key = live(p, oid)
    if ok then out[#out + 1] = oid; out[#out + 1] = key or ''; left = left - 1 end
  end
  -- Past the last score read (the store makes each score its member's oid; one edited by hand
  -- is still passed, not read again).
  low = '(' .. found[#found]
end
return out
)lua";

// ARGV: prefix, type, lex lower bound, limit, key prefix. Returns key, oid, key, oid... of up to
// `limit` live objects.
constexpr std::string_view scan_keys_script = R"lua(
local p = ARGV[1]
local low = ARGV[3]
local left = tonumber(ARGV[4])
local prefix = ARGV[5]
local out = {}
while left > 0 do
  local keys = redis.call('ZRANGEBYLEX', p .. 'ks:' .. ARGV[2], low, '+', 'LIMIT', 0, left)
  if #keys == 0 then break end
  for _, k in ipairs(keys) do
    if string.sub(k, 1, #prefix) ~= prefix then return out end
    local oid = redis.call('HGET', p .. 'k:' .. ARGV[2], k)
    if oid and live(p, oid) then out[#out + 1] = k; out[#out + 1] = oid; left = left - 1 end
  end
  low = '(' .. keys[#keys]
end
return out
)lua";

// ARGV: prefix, type, key. Returns the oid of the live object holding the key, or nil.
constexpr std::string_view find_key_script = R"lua(
local p = ARGV[1]
local oid = redis.call('HGET', p .. 'k:' .. ARGV[2], ARGV[3])
if oid and live(p, oid) then return oid end
return false
)lua";

// ARGV: prefix, start id, epoch (as in commit_script). Returns {"epoch", current epoch} if it
// is another; else the current csn, the id of the oldest change ('' if none), then
// the oids field of every change from the start id on.
constexpr std::string_view changes_script = R"lua(
local p = ARGV[1]
local epoch = redis.call('GET', p .. 'epoch') or ''
if epoch ~= ARGV[3] then return {'epoch', epoch} end
local out = {redis.call('GET', p .. 'csn') or '0', ''}
local first = redis.call('XRANGE', p .. 'changes', '-', '+', 'COUNT', 1)
if #first == 0 then return out end
out[2] = first[1][1]
local entries = redis.call('XRANGE', p .. 'changes', ARGV[2], '+')
for _, e in ipairs(entries) do
  local f = e[2]
  for j = 1, #f, 2 do
    if f[j] == 'oids' then out[#out + 1] = f[j + 1] end
  end
end
return out
)lua";

// ARGV: lock key, fence key, owner, ttl ms, epoch key, epoch, csn key, seen csn, stream key (as
// in commit_script). Returns {"token", fencing token, current csn}, nil if held, or, with
// nothing written,
// {"epoch", current epoch} if `P epoch` holds another, {"behind", current csn} if `P csn` is
// below the seen csn: after a flush the fence counters start again, after a restore of an older
// copy they are back where they were, and tokens would repeat. The counter is taken before the
// lock is set, so that a counter broken by hand (INCR fails) leaves no lock.
constexpr std::string_view lock_script = R"lua(
local epoch = redis.call('GET', ARGV[5]) or ''
if epoch ~= ARGV[6] then return {'epoch', epoch} end
local csn = redis.call('GET', ARGV[7]) or '0'
-- Checked before anything is written: the client reads it back, as a commit's.
if not string.match(csn, '^%d+$') or #csn > 15 then
  return redis.error_reply('ERR ' .. ARGV[7] .. ' is not an integer or out of range')
end
if tonumber(csn) < tonumber(ARGV[8]) and stream_top(ARGV[9]) < tonumber(ARGV[8]) then
  return {'behind', csn}
end
if redis.call('EXISTS', ARGV[1]) == 1 then return false end
local token = redis.call('INCR', ARGV[2])
redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
return {'token', token, csn}
)lua";

// ARGV: lock key, owner. Deletes the lock if `owner` holds it; returns 1 if it did.
constexpr std::string_view unlock_script = R"lua(
if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end
return 0
)lua";

// ARGV: lock key, owner, ttl ms. Extends the lock if `owner` holds it; returns 1 if it did.
constexpr std::string_view renew_script = R"lua(
if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('PEXPIRE', ARGV[1], ARGV[3]) end
return 0
)lua";

// ARGV: prefix, (oid, version)*. Deletes each object still at the version pack saw, with a
// blob's bytes.
constexpr std::string_view sweep_script = R"lua(
local p = ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  local okey = p .. 'o:' .. ARGV[i]
  if redis.call('HGET', okey, '_version') == ARGV[i + 1] then
    redis.call('DEL', okey, p .. 'b:' .. ARGV[i]); n = n + 1
  end
end
return n
)lua";

enum ScriptId {
  commit_id,
  load_id,
  scan_type_id,
  scan_keys_id,
  find_key_id,
  changes_id,
  lock_id,
  unlock_id,
  renew_id,
  sweep_id,
  script_count
};

std::string script_source(ScriptId id) {
  switch (id) {
    case commit_id: {
      std::string s = std::string(live_function).append(stream_top_function).append(commit_script);
      s.replace(s.find("@CHUNK@"), 7, std::to_string(hset_chunk));
      constexpr std::string_view max_bytes = "@MAX_OBJECT_BYTES@";
      s.replace(s.find(max_bytes), max_bytes.size(), std::to_string(max_object_bytes));
      return s;
    }
    case load_id:
      return std::string(load_script);
    case scan_type_id:
      return std::string(live_function).append(scan_type_script);
    case scan_keys_id:
      return std::string(live_function).append(scan_keys_script);
    case find_key_id:
      return std::string(live_function).append(find_key_script);
    case changes_id:
      return std::string(changes_script);
    case lock_id:
      return std::string(stream_top_function).append(lock_script);
    case unlock_id:
      return std::string(unlock_script);
    case renew_id:
      return std::string(renew_script);
    case sweep_id:
      return std::string(sweep_script);
    case script_count:
      break;
  }
  throw Error("redis: unknown script");
}

// Appends a blob's bytes, the reply to GET P b:<oid>, to its data (the marker).
void add_blob_bytes(StoredObject& object, const redisReply* r) {
  std::optional<std::string_view> bytes = opt_string(r, "GET blob");
  if (!bytes) {
    throw Corruption(fmt::format(
        "redis object {}: its hash marks a blob, but its bytes are missing", object.oid.value()));
  }
  object.data.reserve(1 + bytes->size());
  object.data.append(*bytes);
}

// The oids of a change stream entry: decimal, separated by single spaces.
std::vector<Oid> split_oids(std::string_view list) {
  std::vector<Oid> out;
  while (!list.empty()) {
    auto space = list.find(' ');
    std::string_view one = list.substr(0, space);
    if (!one.empty()) out.emplace_back(parse_u64(one, "changed oid"));
    list.remove_prefix(space == std::string_view::npos ? list.size() : space + 1);
  }
  return out;
}

std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// The type names whose readable keys would be the store's own keys (`P o:<oid>`, `P t:<type>`,
// `P k:<type>`, `P ks:<type>`, `P lock:<name>`, `P fence:<name>`, `P b:<oid>`).
constexpr std::array<std::string_view, 7> reserved_types = {"o",    "t",     "k", "ks",
                                                            "lock", "fence", "b"};

// Whether an object of `type` with `key` keeps its hash at the readable key `P<type>:<key>`:
// both non-empty, and the type without ':' (so the key name tells type and key apart) and not
// reserved. Any other object keeps it at `P o:<oid>`.
bool has_readable_key(std::string_view type, std::string_view key) {
  return !type.empty() && !key.empty() && type.find(':') == std::string_view::npos &&
         std::find(reserved_types.begin(), reserved_types.end(), type) == reserved_types.end();
}

// The CSN of a change stream entry, from its id "<csn>-0".
std::uint64_t stream_id_csn(std::string_view id) {
  return parse_u64(id.substr(0, id.find('-')), "stream id");
}

// The CSN of the change stream's last entry (0 if it has none), as stream_top_function.
std::uint64_t stream_top_csn(redis::Connection& conn, const std::string& stream_key) {
  ReplyPtr r = conn.run({"XREVRANGE", stream_key, "+", "-", "COUNT", "1"});
  const redisReply* entries = expect_array(r.get(), "XREVRANGE");
  if (entries->elements == 0) return 0;
  const redisReply* entry = expect_array(entries->element[0], "XREVRANGE");
  if (entry->elements < 1) unexpected(entry, "XREVRANGE");
  return stream_id_csn(string_of(entry->element[0], "XREVRANGE"));
}

// How many readable keys a store remembers; past it, each new one evicts an arbitrary other (see
// RedisStore::located_).
constexpr std::size_t max_located = 1 << 16;

// Follows the change stream (`P changes`) on a connection of its own with XREAD BLOCK, and
// hands every entry after `after` to `sink`, in stream (that is, CSN) order. After a failure it
// reconnects with back-off and goes on from the last entry it handed over, so nothing is missed
// unless the stream was trimmed past it in the meantime. Stopped (and joined) when destroyed.
class ChangeFeed {
 public:
  using Sink = std::function<void(std::uint64_t csn, std::vector<Oid> oids)>;

  // `epoch_key` and `epoch`: `P epoch` and what it held when the store opened (RedisStore);
  // `csn_key`: `P csn`. `went_back(csn, after)` is called, once, if the feed finds `P csn` at
  // `csn`, below the `after` it had announced, and the stream behind too.
  using WentBack = std::function<void(std::uint64_t csn, std::uint64_t after)>;
  ChangeFeed(const StoreUrl& url, const std::string& password, redis::ConnectionOptions options,
             std::string stream_key, std::string epoch_key, std::string epoch, std::string csn_key,
             std::uint64_t after, Sink sink, WentBack went_back)
      : conn_(url, password, feed_options(options)),
        stream_key_(std::move(stream_key)),
        epoch_key_(std::move(epoch_key)),
        epoch_(std::move(epoch)),
        csn_key_(std::move(csn_key)),
        after_(after),
        sink_(std::move(sink)),
        on_went_back_(std::move(went_back)),
        thread_([this] { run(); }) {}
  ChangeFeed(const ChangeFeed&) = delete;
  ChangeFeed& operator=(const ChangeFeed&) = delete;

  // False from a failed read until a read succeeds again.
  bool up() const { return up_.load(); }

  ~ChangeFeed() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    conn_.interrupt();
    thread_.join();
  }

 private:
  // How long one XREAD waits for a new entry before asking again.
  static constexpr std::chrono::milliseconds block_time{1'000};

  static redis::ConnectionOptions feed_options(redis::ConnectionOptions o) {
    o.command_timeout += block_time;  // a blocked XREAD is not a server that stopped answering
    return o;
  }

  bool stopping() {
    std::lock_guard lk(mu_);
    return stop_;
  }

  void run() {
    auto backoff = conn_.options().min_backoff;
    while (!stopping()) {
      try {
        read_batch();
        up_ = true;
        backoff = conn_.options().min_backoff;
      } catch (const Error&) {
        // Redis went away or answered nonsense: try again later, from the same entry, after a
        // look at the epoch (Redis may be back without its data).
        up_ = false;
        last_epoch_check_ = {};
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, backoff, [this] { return stop_; });
        backoff = std::min(backoff * 2, conn_.options().max_backoff);
      }
    }
  }

  // Throws Corruption if `P epoch` is gone or another than when the store opened (the database
  // was flushed or replaced), or if `P csn` is below the last CSN this feed handed over (an
  // older copy was restored, which keeps its epoch). Either way the stream's entries (older CSNs
  // than this feed's, until they pass them) belong to another history. The feed then stays
  // down, so that the object layer asks changes_since(), which refuses the same way, instead of
  // trusting a feed gone quiet. It stays down after going back even once the CSNs pass it again.
  void check_epoch() {
    if (!went_back_.empty()) throw Corruption(went_back_);
    ReplyPtr r = conn_.run({"MGET", epoch_key_, csn_key_});
    const redisReply* values = expect_array(r.get(), "MGET epoch csn");
    if (values->elements != 2) unexpected(values, "MGET epoch csn");
    // Absent reads as "" and 0, as in the scripts (commit_script), so that the two agree.
    std::string_view now = opt_string(values->element[0], "MGET epoch").value_or("");
    if (now != epoch_) {
      throw Corruption(fmt::format("{} is {}, was {}: the Redis database was flushed or replaced",
                                   epoch_key_, now.empty() ? "gone" : now, epoch_));
    }
    auto csn_text = opt_string(values->element[1], "MGET csn");
    std::uint64_t csn = csn_text ? parse_u64(*csn_text, "csn") : 0;
    if (csn < after_ &&
        stream_top_csn(conn_, stream_key_) < after_) {  // not only the counter set back by hand
      went_back_ = fmt::format(
          "{} is {}, below {} which this feed had seen: the Redis database went back (an older "
          "copy restored?)",
          csn_key_, csn, after_);
      on_went_back_(csn, after_);
      throw Corruption(went_back_);
    }
    last_epoch_check_ = std::chrono::steady_clock::now();
  }

  void read_batch() {
    // On every idle round (a flush leaves the stream behind this feed's CSN, so it goes quiet),
    // and at least once a block_time while entries keep coming.
    if (std::chrono::steady_clock::now() - last_epoch_check_ >= block_time) check_epoch();
    std::string block = std::to_string(block_time.count());
    std::string from = fmt::format("{}-0", after_);
    ReplyPtr reply =
        conn_.run({"XREAD", "COUNT", "1000", "BLOCK", block, "STREAMS", stream_key_, from});
    if (reply->type == REDIS_REPLY_NIL) {  // nothing new within block_time
      check_epoch();
      return;
    }
    const redisReply* streams = expect_array(reply.get(), "XREAD");
    if (streams->elements != 1) unexpected(streams, "XREAD");
    const redisReply* stream = expect_array(streams->element[0], "XREAD");
    if (stream->elements != 2) unexpected(stream, "XREAD");
    const redisReply* entries = expect_array(stream->element[1], "XREAD");
    for (std::size_t i = 0; i < entries->elements; ++i) {
      const redisReply* entry = expect_array(entries->element[i], "XREAD");
      if (entry->elements != 2) unexpected(entry, "XREAD");
      std::string_view id = string_of(entry->element[0], "XREAD");
      std::uint64_t csn = stream_id_csn(id);
      const redisReply* fields = expect_array(entry->element[1], "XREAD");
      std::vector<Oid> oids;
      for (std::size_t j = 0; j + 1 < fields->elements; j += 2) {
        if (string_of(fields->element[j], "XREAD") == "oids") {
          oids = split_oids(string_of(fields->element[j + 1], "XREAD"));
        }
      }
      if (csn <= after_) continue;
      if (csn > after_ + 1) {
        // The stream holds one entry per CSN: those in between were trimmed while this feed
        // was away, and what they changed is unknown (store.h, CommitListener).
        sink_(csn - 1, {});
      }
      after_ = csn;
      sink_(csn, std::move(oids));
    }
  }

  redis::Connection conn_;
  const std::string stream_key_;
  const std::string epoch_key_;
  const std::string epoch_;
  const std::string csn_key_;
  std::string went_back_;  // why, once `P csn` was found below after_; the feed stays down
  std::chrono::steady_clock::time_point last_epoch_check_{};
  std::uint64_t after_;  // the CSN of the last entry handed to sink_
  Sink sink_;
  WentBack on_went_back_;
  std::atomic<bool> up_{true};
  std::mutex mu_;  // guards stop_
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything above is ready
};

class RedisStore final : public Store {
 public:
  RedisStore(StoreUrl url, std::string password, std::string prefix)
      : url_(std::move(url)),
        password_(std::move(password)),
        prefix_(std::move(prefix)),
        conn_(url_, password_, redis::connection_options(url_)) {
    std::lock_guard lk(mu_);
    for (int id = 0; id < script_count; ++id) {
      std::string source = script_source(static_cast<ScriptId>(id));
      ReplyPtr r = conn_.run({"SCRIPT", "LOAD", source});
      shas_[static_cast<std::size_t>(id)] = string_of(r.get(), "SCRIPT LOAD");
    }
    // The history this store works in: made by the first store to open the database, gone
    // with a flush (and another one then made), another in a copy of another database.
    conn_.run({"SET", key("epoch", ""), Uuid::random().str(), "NX"});
    ReplyPtr r = conn_.run({"GET", key("epoch", "")});
    epoch_ = opt_string(r.get(), "GET epoch").value_or("");
  }
  ~RedisStore() override {
    std::lock_guard lk(feed_mu_);
    feed_.reset();  // before the outbox and listeners it delivers to
  }

  LoadResult load(std::span<const Oid> oids) override;
  std::uint64_t commit(const CommitRequest& request) override;
  Changes changes_since(std::uint64_t csn) override;
  Subscription subscribe(CommitListener listener) override;
  Oid new_oids(std::uint32_t count) override;
  std::vector<ScanEntry> scan_type(std::string_view type, Oid after, std::size_t limit) override;
  std::vector<ScanEntry> scan_keys(std::string_view type, std::string_view prefix,
                                   std::string_view after, std::size_t limit) override;
  std::optional<Oid> find_key(std::string_view type, std::string_view key) override;
  std::optional<std::uint64_t> lock(const LockRequest& request) override;
  bool unlock(std::string_view name, std::string_view owner) override;
  bool renew(std::string_view name, std::string_view owner, std::chrono::milliseconds ttl) override;
  PackStats pack() override;
  bool is_remote() const override { return true; }
  bool hears_commits() const override {
    if (gone_back_.load()) return false;  // and never will: see see_csn
    std::lock_guard feed_lk(feed_mu_);
    return !feed_ || feed_->up();
  }

 private:
  // The reply {"epoch", current} of a script that found `P epoch` changed, thrown.
  // mu_ held. Like going back, this is for good: every later call refuses (check_history).
  [[noreturn]] void throw_other_history(const redisReply* r) {
    std::string now = r->elements > 1 ? std::string(string_of(r->element[1], "epoch")) : "";
    other_history_found(now);
  }
  [[noreturn]] void other_history_found(std::string_view now) {
    lose_history(other_history(now));
    throw Corruption(went_back_);
  }
  // mu_ held: from now on every call refuses with `why` (check_history), or with what was found
  // first, and the store hears no commits.
  void lose_history(std::string why) {
    if (!went_back_.empty()) return;
    gone_back_ = true;
    went_back_ = std::move(why);
  }
  // The message for `P epoch` found to be `now` ("" = gone) instead of epoch_.
  std::string other_history(std::string_view now) const {
    return fmt::format(
        "the Redis data under prefix \"{}\" was flushed or replaced since this store opened it "
        "({}epoch is {}, was {}): the CSNs and versions this store knows may name other commits "
        "there. Nothing was written; open the store again (restart cairn serve)",
        prefix_, prefix_, now.empty() ? "gone" : now, epoch_);
  }

  // Notes a CSN Redis answered with (mu_ held, so that replies are noted in the order Redis
  // ran them). One below a CSN seen before means the database went back: an older copy was
  // restored, which keeps its epoch, so throw_other_history's check cannot tell. The store then
  // refuses every call (check_history), even once the CSNs pass the old ones again.
  void see_csn(std::uint64_t csn) {
    std::uint64_t seen = seen_csn_.load(std::memory_order_relaxed);
    if (csn < seen) [[unlikely]]
      behind(csn, seen);
    raise_seen(csn);
  }
  void raise_seen(std::uint64_t csn) {
    if (csn > seen_csn_.load(std::memory_order_relaxed)) {
      seen_csn_.store(csn, std::memory_order_relaxed);
    }
  }
  // mu_ held: Redis answered `csn`, below `floor`, a CSN this store had seen or been told of.
  // Throws Corruption: the database was flushed or replaced (another epoch), or only the
  // counter was set back by hand (the change stream is not behind), or else it went back.
  [[noreturn]] void behind(std::uint64_t csn, std::uint64_t floor) {
    ReplyPtr r = conn_.run({"GET", key("epoch", "")});
    std::string now(opt_string(r.get(), "GET epoch").value_or(""));
    if (now != epoch_) other_history_found(now);
    if (stream_top() >= floor) throw Corruption(counter_set_back(std::to_string(csn + 1)));
    went_back(csn, floor);
  }
  // The lowest CSN the scripts may find in `P csn`: the highest this store has seen in replies,
  // or its change feed has announced. (Only scripts may use the feed's: they read `P csn` and
  // the stream together, while a reply on the store's connection may predate an announcement.)
  std::uint64_t script_floor() const {
    return std::max(seen_csn_.load(std::memory_order_relaxed),
                    announced_csn_.load(std::memory_order_relaxed));
  }
  // mu_ held: the CSN of the change stream's last entry (0 if none), as stream_top_function.
  std::uint64_t stream_top() { return stream_top_csn(conn_, key("changes", "")); }
  // The message for `P csn` set back by hand below the stream's last entry.
  std::string counter_set_back(std::string_view next) const {
    return fmt::format(
        "{}csn is behind the change stream {}changes (the next CSN, {}, is not above the "
        "stream's last entry): the key was deleted or changed by hand. Nothing was written; set "
        "it to the CSN of the stream's last entry (XREVRANGE {}changes + - COUNT 1)",
        prefix_, prefix_, next, prefix_);
  }
  // mu_ held: from now on every call refuses (check_history) and the store hears no commits.
  void mark_went_back(std::uint64_t csn, std::uint64_t floor) {
    lose_history(fmt::format(
        "the Redis data under prefix \"{}\" went back since this store opened it ({}csn is {}, "
        "below {}, which this store had seen; was an older copy restored?): the CSNs and "
        "versions this store knows may name other commits there. Nothing was written; open the "
        "store again (restart cairn serve)",
        prefix_, prefix_, csn, floor));
  }
  [[noreturn]] void went_back(std::uint64_t csn, std::uint64_t floor) {
    mark_went_back(csn, floor);
    throw Corruption(went_back_);
  }
  // mu_ held: throws the Corruption see_csn found, if it found one.
  void check_history() const {
    if (!went_back_.empty()) [[unlikely]]
      throw Corruption(went_back_);
  }
  // The reply {"behind", current csn} of a script that found `P csn` below `floor` (the
  // script_floor() it was given) and the stream behind too, thrown. mu_ held.
  [[noreturn]] void throw_went_back(const redisReply* r, std::uint64_t floor) {
    if (r->elements < 2) unexpected(r, "script");
    went_back(parse_u64(string_of(r->element[1], "script"), "csn"), floor);
  }

  // What located_ remembers of an object.
  struct Location {
    std::string at;     // the readable key; empty: the hash is at `P o:<oid>`
    bool blob = false;  // the object's data was a blob when last seen
  };

  std::string key(std::string_view kind, std::string_view name) const {
    std::string k;
    k.reserve(prefix_.size() + kind.size() + name.size());
    k.append(prefix_).append(kind).append(name);
    return k;
  }

  // EVALSHA, or EVAL when the server has lost the script (SCRIPT FLUSH, restart). mu_ held.
  // Before a script that must not run twice (Resend::never), call conn_.connect().
  ReplyPtr eval(ScriptId id, const Args& argv, Resend resend = Resend::once) {
    Args args = {"EVALSHA", shas_[static_cast<std::size_t>(id)], "0"};
    args.insert(args.end(), argv.begin(), argv.end());
    ReplyPtr r = conn_.run(args, resend);
    if (r->type == REDIS_REPLY_ERROR && reply_str(r.get()).starts_with("NOSCRIPT")) {
      std::string source = script_source(id);
      args[0] = "EVAL";
      args[1] = source;
      r = conn_.run(args, resend);
    }
    if (r->type == REDIS_REPLY_ERROR) unexpected(r.get(), "script");
    return r;
  }

  // Where the hash of an object with this oid, type and key goes.
  std::string hash_key(Oid oid, std::string_view type, std::string_view k) const {
    if (!has_readable_key(type, k)) return key("o:", oid.str());
    std::string out = key(type, ":");
    out.append(k);
    return out;
  }
  // Remembers where the object's hash is, and whether it is a blob (nullopt: as remembered), or
  // forgets the object when neither needs remembering (it is at `P o:<oid>` and no blob, or gone).
  void learn(Oid oid, std::string_view type, std::string_view k,
             std::optional<bool> blob = std::nullopt) {
    bool readable = has_readable_key(type, k);
    std::string at = readable ? hash_key(oid, type, k) : std::string();
    std::lock_guard lk(located_mu_);
    auto it = located_.find(oid);
    bool is_blob = blob ? *blob : it != located_.end() && it->second.blob;
    remember(oid, it, Location{std::move(at), is_blob});
  }
  // Remembers whether the object is a blob, wherever its hash is.
  void learn_blob(Oid oid, bool blob) {
    std::lock_guard lk(located_mu_);
    auto it = located_.find(oid);
    std::string at = it != located_.end() ? std::move(it->second.at) : std::string();
    remember(oid, it, Location{std::move(at), blob});
  }
  // located_mu_ held; `it` is located_.find(oid).
  void remember(Oid oid, std::unordered_map<Oid, Location>::iterator it, Location where) {
    if (where.at.empty() && !where.blob) {
      if (it != located_.end()) located_.erase(it);
    } else if (it != located_.end()) {
      it->second = std::move(where);
    } else {
      if (located_.size() >= max_located) located_.erase(located_.begin());
      located_.emplace(oid, std::move(where));
    }
  }

  std::uint64_t next_oid();  // mu_ held: one past the last oid any client was given
  // The objects, read by one load script (mu_ held): one consistent snapshot, every pointer
  // followed, blobs with their bytes. Remembers where each keyed one lives and which are blobs.
  LoadResult load_by_script(std::span<const Oid> oids);
  // For pack's sweep over everything (mu_ held): the same, but remembering nothing, and a
  // blob's data is only the marker (pack needs no bytes to follow refs, a blob has none), its
  // size in `sizes`, which holds each object's data size.
  LoadResult load_for_pack(std::span<const Oid> oids, std::vector<std::size_t>& sizes);
  LoadResult run_load_script(std::span<const Oid> oids, bool learn_locations,
                             std::vector<std::size_t>* sizes);
  void start_feed();
  void enqueue(std::uint64_t csn, std::vector<Oid> oids);
  void deliver();

  const StoreUrl url_;
  const std::string password_;
  const std::string prefix_;
  std::mutex mu_;  // guards conn_ and following_
  redis::Connection conn_;
  std::array<std::string, script_count> shas_;
  std::atomic<std::uint64_t> known_next_oid_{1};  // a lower bound of next_oid()
  // Whether the change feed runs. From then on it announces every commit, this store's own
  // included, and commit() announces none; before, commit() announces this store's commits.
  bool following_ = false;

  ListenerRegistry listeners_;
  std::mutex outbox_mu_;                                           // guards the two below
  std::deque<std::pair<std::uint64_t, std::vector<Oid>>> outbox_;  // commits to notify, CSN order
  bool delivering_ = false;

  std::string epoch_;  // `P epoch` when the store opened (the constructor)
  // The highest CSN Redis has answered this store with (written under mu_, read without it to
  // pass to scripts), and why the store refuses every call once a lower one came (see_csn), or
  // once it found the data flushed or replaced (other_history_found).
  std::atomic<std::uint64_t> seen_csn_{0};
  std::atomic<std::uint64_t> announced_csn_{0};  // the last CSN the change feed announced
  std::string went_back_;                        // mu_ held
  // Set with went_back_: from then on the store says it hears no commits, and its change feed's
  // announcements are dropped (they would be of the other history, once its CSNs pass ours).
  std::atomic<bool> gone_back_{false};
  mutable std::mutex feed_mu_;  // guards feed_; taken before mu_
  std::unique_ptr<ChangeFeed> feed_;

  // The readable key of each keyed object this store has seen lately (by its commits, loads,
  // scans and find_key), so that load() can read the hash there directly instead of through
  // the object's pointer, and which objects were blobs, so that load() reads their bytes in the
  // same round trip. Only hints: a load checks the hash's `_oid`, and reads through the pointers
  // when it does not match; it ignores bytes read for an object that is no longer a blob, and
  // reads them in a second round trip for one not known to be. At most max_located entries.
  std::mutex located_mu_;
  std::unordered_map<Oid, Location> located_;
};

// Reads the objects' hashes between two GETs of the CSN, pipelined: if the CSN did not move, no
// commit ran in between (every commit script bumps it), so the hashes are one consistent
// snapshot. Each hash is read where this store last saw it: at the object's readable key if it
// remembers one, else at `P o:<oid>`; and right after the hash of an object it remembers as a
// blob, the blob's bytes (`GET P b:<oid>`). When that was not the object's hash after all (a
// pointer, or a remembered key that now holds something else), or the CSN moved, the load script
// reads everything again, through the pointers, in one atomic step. Redis runs a client's
// pipelined commands back to back, so the CSN nearly always holds still.
//
// Blobs found in the first round that the store did not know of have their bytes read in a
// second, followed by one more GET of the CSN: if it is still the one both GETs of the first round
// read, no commit ran since, so the bytes are the ones of the version the hash gave (an append
// in between would have made the bytes longer than that version's). Else the load script again.
LoadResult RedisStore::load(std::span<const Oid> oids) {
  const std::string csn_key = key("csn", "");
  std::string object_key = key("o:", "");
  std::string bytes_key = key("b:", "");
  // `k` made the key of `oid`: its first `base` bytes (`P o:` or `P b:`), then the oid in decimal.
  auto numbered = [](std::string& k, std::size_t base, Oid oid) -> std::string_view {
    char digits[24];
    char* end = std::to_chars(digits, digits + sizeof digits, oid.value()).ptr;
    k.resize(base);
    k.append(digits, static_cast<std::size_t>(end - digits));
    return k;
  };
  const std::size_t object_base = object_key.size(), bytes_base = bytes_key.size();
  // Per oid: whether its hash is read at a remembered readable key (so its `_oid` must match),
  // and whether its bytes are read right after its hash.
  enum : char { at_readable = 1, with_bytes = 2 };
  std::vector<char> how(oids.size(), 0);
  redis::Pipeline reads;
  // "*2\r\n$7\r\nHGETALL\r\n$..\r\n<key>\r\n" each
  reads.reserve((oids.size() + 2) * (object_base + 48));
  reads.add({"GET", csn_key});
  {
    std::lock_guard lk(located_mu_);
    for (std::size_t i = 0; i < oids.size(); ++i) {
      if (!located_.empty()) {
        if (auto it = located_.find(oids[i]); it != located_.end()) {
          const Location& loc = it->second;
          if (!loc.at.empty()) {
            how[i] = at_readable;
            reads.add({"HGETALL", loc.at});
          } else {
            reads.add({"HGETALL", numbered(object_key, object_base, oids[i])});
          }
          if (loc.blob) {
            how[i] |= with_bytes;
            reads.add({"GET", numbered(bytes_key, bytes_base, oids[i])});
          }
          continue;
        }
      }
      reads.add({"HGETALL", numbered(object_key, object_base, oids[i])});
    }
  }
  reads.add({"GET", csn_key});
  const std::size_t last = reads.size() - 1;
  // Each reply is turned into its object as it arrives (and freed): no throwing before every
  // reply is read, so a failure is kept for later.
  std::uint64_t before = 0, after = 0;
  LoadResult result;
  bool complete = true;
  std::exception_ptr failure;
  std::size_t next = 0;              // the oid whose hash is the next reply
  bool bytes_next = false;           // the next reply is the bytes read after the last hash
  bool last_was_blob = false;        // the last hash was a blob's
  std::vector<std::size_t> unread;   // the blobs whose bytes were not read, by index
  std::vector<Oid> no_longer_blobs;  // read as blobs, found to be something else
  auto sink = [&](std::size_t i, ReplyPtr reply) {
    try {
      if (i == 0) {  // the first reply, or a resend starting over
        result.objects.clear();
        result.objects.reserve(oids.size());
        complete = true;
        failure = nullptr;
        next = 0;
        bytes_next = false;
        unread.clear();
        no_longer_blobs.clear();
      }
      if (i == 0 || i == last) {
        auto csn = opt_string(reply.get(), "GET csn");
        (i == 0 ? before : after) = csn ? parse_u64(*csn, "csn") : 0;
        return;
      }
      if (!complete || failure) return;
      if (bytes_next) {
        bytes_next = false;
        if (last_was_blob) {
          add_blob_bytes(result.objects.back(), reply.get());
        } else {
          no_longer_blobs.push_back(oids[next - 1]);
        }
        return;
      }
      std::size_t j = next++;
      std::optional<StoredObject> object =
          object_from_hash(oids[j], reply.get(), (how[j] & at_readable) != 0, last_was_blob);
      bytes_next = (how[j] & with_bytes) != 0;
      if (!object) {
        complete = false;
        return;
      }
      if (last_was_blob && !bytes_next) unread.push_back(result.objects.size());
      result.objects.push_back(std::move(*object));
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  };
  std::lock_guard lk(mu_);
  check_history();
  conn_.run_each(reads, sink);
  if (before == after) {
    if (failure) std::rethrow_exception(failure);
    for (Oid oid : no_longer_blobs)
      learn_blob(oid, false);
    if (complete && unread.empty()) {
      see_csn(before);
      result.csn = before;
      return result;
    }
    if (complete) {
      redis::Pipeline more;
      for (std::size_t index : unread)
        more.add({"GET", numbered(bytes_key, bytes_base, result.objects[index].oid)});
      more.add({"GET", csn_key});
      std::vector<ReplyPtr> replies = conn_.run_all(more);
      auto csn = opt_string(replies.back().get(), "GET csn");
      if ((csn ? parse_u64(*csn, "csn") : 0) == before) {
        for (std::size_t k = 0; k < unread.size(); ++k) {
          StoredObject& object = result.objects[unread[k]];
          add_blob_bytes(object, replies[k].get());
          learn_blob(object.oid, true);
        }
        see_csn(before);
        result.csn = before;
        return result;
      }
    }
  }
  return load_by_script(oids);
}

LoadResult RedisStore::load_by_script(std::span<const Oid> oids) {
  return run_load_script(oids, true, nullptr);
}

LoadResult RedisStore::load_for_pack(std::span<const Oid> oids, std::vector<std::size_t>& sizes) {
  return run_load_script(oids, false, &sizes);
}

LoadResult RedisStore::run_load_script(std::span<const Oid> oids, bool learn_locations,
                                       std::vector<std::size_t>* sizes) {
  Args args = {prefix_, sizes != nullptr ? "size" : "data"};
  std::vector<std::string> names;
  names.reserve(oids.size());
  for (Oid oid : oids)
    args.push_back(names.emplace_back(oid.str()));
  ReplyPtr reply = eval(load_id, args);
  const redisReply* r = expect_array(reply.get(), "load");
  if (r->elements < oids.size() + 1) unexpected(r, "load");
  LoadResult result;
  result.csn = parse_u64(string_of(r->element[0], "load"), "csn");
  see_csn(result.csn);
  result.objects.reserve(oids.size());
  std::size_t bytes = oids.size() + 1;  // the reply holding the next blob's bytes
  for (std::size_t i = 0; i < oids.size(); ++i) {
    bool blob = false;
    std::optional<StoredObject> object = object_from_hash(oids[i], r->element[i + 1], false, blob);
    if (!object) {
      throw Corruption(
          fmt::format("redis object {}: its pointer leads to another pointer", oids[i].value()));
    }
    if (blob) {
      if (bytes >= r->elements) unexpected(r, "load");
      if (sizes != nullptr) {
        sizes->push_back(1 + integer_of(r->element[bytes++], "load"));
      } else {
        add_blob_bytes(*object, r->element[bytes++]);
      }
    } else if (sizes != nullptr) {
      sizes->push_back(object->data.size());
    }
    if (learn_locations) learn(object->oid, object->type, object->key, blob);
    result.objects.push_back(std::move(*object));
  }
  if (bytes != r->elements) unexpected(r, "load");
  return result;
}

std::uint64_t RedisStore::next_oid() {
  ReplyPtr r = conn_.run({"GET", key("next_oid", "")});
  auto last = opt_string(r.get(), "GET next_oid");
  std::uint64_t next = (last ? parse_u64(*last, "next_oid") : 0) + 1;
  std::uint64_t known = known_next_oid_.load();
  while (known < next && !known_next_oid_.compare_exchange_weak(known, next)) {
  }
  return std::max(known, next);
}

std::uint64_t RedisStore::commit(const CommitRequest& request) {
  // Deletes and appends are checked against the allocated oids as writes are: an object another
  // client created is often deleted or appended to by one that never allocated it.
  std::uint64_t highest = 0;
  for (const WriteOp& w : request.writes)
    highest = std::max(highest, w.oid.value());
  for (Oid oid : request.deletes)
    highest = std::max(highest, oid.value());
  for (const AppendOp& a : request.appends)
    highest = std::max(highest, a.oid.value());
  std::uint64_t known = known_next_oid_.load();
  if (highest >= known) {
    // Another client may have allocated it: ask the server before refusing.
    std::lock_guard lk(mu_);
    known = next_oid();
  }
  validate_commit_shape(request, known);

  std::deque<std::string> strings;  // backing store for the string_views in args
  auto str = [&strings](std::string s) -> std::string_view {
    return strings.emplace_back(std::move(s));
  };
  std::uint64_t floor = script_floor();
  Args args = {prefix_, stream_max_len, epoch_, str(std::to_string(floor)),
               str(std::to_string(request.reads.size()))};
  for (const ReadCheck& r : request.reads) {
    args.push_back(str(r.oid.str()));
    args.push_back(str(std::to_string(r.version)));
  }
  args.push_back(str(std::to_string(request.deletes.size())));
  for (Oid oid : request.deletes)
    args.push_back(str(oid.str()));
  args.push_back(str(std::to_string(request.writes.size())));
  std::vector<std::vector<std::pair<std::string, std::string>>> fields;
  fields.reserve(request.writes.size());
  for (const WriteOp& w : request.writes) {
    args.push_back(str(w.oid.str()));
    args.push_back(w.type);
    args.push_back(w.key);
    args.push_back(str(hash_key(w.oid, w.type, w.key)));
    if (is_blob(w.data)) {
      // Its bytes go to their string as they are: no copy here, none in the hash.
      args.push_back("1");
      args.push_back(bytes_field);
      args.push_back(std::string_view(w.data).substr(1));
      continue;
    }
    const auto& f = fields.emplace_back(data_fields(w.data));
    args.push_back(str(std::to_string(f.size())));
    for (const auto& [name, value] : f) {
      args.push_back(name);
      args.push_back(value);
    }
  }
  if (!request.appends.empty() || !request.locks.empty()) {
    args.push_back(str(std::to_string(request.appends.size())));
    for (const AppendOp& a : request.appends) {
      args.push_back(str(a.oid.str()));
      args.push_back(a.data);
    }
  }
  if (!request.locks.empty()) {
    args.push_back(str(std::to_string(request.locks.size())));
    for (const LockCheck& l : request.locks) {
      args.push_back(l.name);
      args.push_back(str(std::to_string(l.token)));
    }
  }

  std::unique_lock lk(mu_);
  check_history();
  conn_.connect();  // failing here, the commit was not sent
  ReplyPtr reply;
  try {
    reply = eval(commit_id, args, Resend::never);
  } catch (const IoError& e) {
    throw IoError(fmt::format("{} (the commit may or may not have been applied)", e.what()));
  }
  const redisReply* r = expect_array(reply.get(), "commit");
  if (r->elements < 1) unexpected(r, "commit");
  std::string_view status = string_of(r->element[0], "commit");
  if (status == "epoch") throw_other_history(r);  // mu_ still held: it records the finding
  if (status == "behind") throw_went_back(r, floor);
  if (status == "conflict") {
    lk.unlock();
    std::vector<Oid> conflicts;
    for (std::size_t i = 1; i < r->elements; ++i)
      conflicts.emplace_back(parse_u64(string_of(r->element[i], "commit"), "conflict oid"));
    if (conflicts.empty()) unexpected(r, "commit");
    throw_if_conflicts(std::move(conflicts));
  }
  if (status == "absent" || status == "not_blob" || status == "too_big") {
    // An append that cannot apply: the script stopped before writing anything.
    lk.unlock();
    if (r->elements < 2) unexpected(r, "commit");
    Oid oid(parse_u64(string_of(r->element[1], "commit"), "append oid"));
    auto append = std::find_if(request.appends.begin(), request.appends.end(),
                               [oid](const AppendOp& a) { return a.oid == oid; });
    if (append == request.appends.end()) unexpected(r, "commit");
    std::optional<std::size_t> size;
    if (status == "too_big") {
      if (r->elements < 3) unexpected(r, "commit");
      size = parse_u64(string_of(r->element[2], "commit"), "blob size");
    } else if (status == "not_blob") {
      size = 0;
    }
    check_append(oid, size, status == "too_big", append->data.size());
    unexpected(r, "commit");  // the script refused what the same check accepts
  }
  if (status == "lock_lost") {
    lk.unlock();
    if (r->elements < 2) unexpected(r, "commit");
    std::uint64_t n = parse_u64(string_of(r->element[1], "commit"), "lock check");
    if (n == 0 || n > request.locks.size()) unexpected(r, "commit");
    throw_lock_lost(request.locks[n - 1]);
  }
  if (status == "csn_behind") {
    lk.unlock();
    throw Corruption(counter_set_back(
        r->elements > 1 ? std::string(string_of(r->element[1], "commit")) : std::string("?")));
  }
  if (r->elements < 2 || (status != "ok" && status != "same")) unexpected(r, "commit");
  std::uint64_t csn = parse_u64(string_of(r->element[1], "commit"), "csn");
  see_csn(csn);
  if (status == "same") return csn;
  for (const WriteOp& w : request.writes)
    learn(w.oid, w.type, w.key, is_blob(w.data));
  for (Oid oid : request.deletes)
    learn(oid, "", "", false);
  for (const AppendOp& a : request.appends)
    learn_blob(a.oid, true);
  std::vector<Oid> changed;
  changed.reserve(r->elements - 2);
  for (std::size_t i = 2; i < r->elements; ++i)
    changed.emplace_back(parse_u64(string_of(r->element[i], "commit"), "changed oid"));
  if (following_) return csn;  // the change feed announces it
  // Queued while mu_ is held, so the outbox is in CSN order.
  enqueue(csn, std::move(changed));
  lk.unlock();
  deliver();
  return csn;
}

Subscription RedisStore::subscribe(CommitListener listener) {
  Subscription sub = listeners_.add(std::move(listener));
  start_feed();
  return sub;
}

// Starts following the change stream from the current CSN. Reading the CSN and switching
// announcements over to the feed happen under mu_, so each commit is announced exactly once:
// commits before the switch by commit() (their CSNs are at most the one read), later ones by
// the feed, behind them in the outbox.
void RedisStore::start_feed() {
  std::lock_guard feed_lk(feed_mu_);
  if (feed_) return;
  std::lock_guard lk(mu_);
  check_history();
  ReplyPtr r = conn_.run({"GET", key("csn", "")});
  auto current = opt_string(r.get(), "GET csn");
  std::uint64_t csn = current ? parse_u64(*current, "csn") : 0;
  see_csn(csn);
  feed_ = std::make_unique<ChangeFeed>(
      url_, password_, conn_.options(), key("changes", ""), key("epoch", ""), epoch_,
      key("csn", ""), csn,
      [this](std::uint64_t c, std::vector<Oid> oids) {
        if (gone_back_.load()) return;
        announced_csn_.store(c, std::memory_order_relaxed);
        enqueue(c, std::move(oids));
        deliver();
      },
      [this](std::uint64_t c, std::uint64_t after) {
        std::lock_guard hold(mu_);
        mark_went_back(c, after);
      });
  following_ = true;
}

void RedisStore::enqueue(std::uint64_t csn, std::vector<Oid> oids) {
  std::lock_guard out(outbox_mu_);
  outbox_.emplace_back(csn, std::move(oids));
}

// Notifies listeners of queued commits, one thread at a time, in CSN order. The CSNs of this
// store's own commits have gaps (other clients commit too), and so may the feed's (a trimmed
// stream), so each is announced as next in turn.
void RedisStore::deliver() {
  std::unique_lock lk(outbox_mu_);
  if (delivering_) return;  // the delivering thread will reach our commit
  delivering_ = true;
  while (!outbox_.empty()) {
    auto [csn, oids] = std::move(outbox_.front());
    outbox_.pop_front();
    lk.unlock();
    listeners_.start_after(csn - 1);
    listeners_.notify(csn, oids);
    lk.lock();
  }
  delivering_ = false;
}

Changes RedisStore::changes_since(std::uint64_t csn) {
  // "+" (the greatest id) where csn + 1 would wrap to 0 and ask for the whole stream.
  std::string start =
      csn == std::numeric_limits<std::uint64_t>::max() ? "+" : fmt::format("{}-0", csn + 1);
  ReplyPtr reply;
  Changes out;
  {
    std::lock_guard lk(mu_);
    check_history();
    reply = eval(changes_id, {prefix_, start, epoch_});
    const redisReply* r = expect_array(reply.get(), "changes_since");
    if (r->elements < 2) unexpected(r, "changes_since");
    if (string_of(r->element[0], "changes_since") == "epoch") throw_other_history(r);
    out.csn = parse_u64(string_of(r->element[0], "changes_since"), "csn");
    see_csn(out.csn);
    // Asked since a CSN past the newest. One this store answered or announced (its change
    // feed's, which see_csn does not count) means the database went back, or its counter was
    // set back by hand; any other is the caller's mistake, and must not stop the store.
    if (csn > out.csn && csn != std::numeric_limits<std::uint64_t>::max()) {
      if (csn <= script_floor()) behind(out.csn, csn);
      throw InvalidArgument(
          fmt::format("changes_since({}): past the newest CSN, {}, and no CSN this store has seen",
                      csn, out.csn));
    }
  }
  const redisReply* r = reply.get();
  if (csn >= out.csn) return out;
  std::string_view first = string_of(r->element[1], "changes_since");
  std::uint64_t first_csn = first.empty() ? out.csn + 1 : stream_id_csn(first);
  if (first_csn > csn + 1) {
    out.complete = false;
    return out;
  }
  for (std::size_t i = 2; i < r->elements; ++i) {
    for (Oid oid : split_oids(string_of(r->element[i], "changes_since")))
      out.oids.push_back(oid);
  }
  std::sort(out.oids.begin(), out.oids.end());
  out.oids.erase(std::unique(out.oids.begin(), out.oids.end()), out.oids.end());
  return out;
}

Oid RedisStore::new_oids(std::uint32_t count) {
  if (count == 0) throw InvalidArgument("new_oids: count must be at least 1");
  std::string n = std::to_string(count);
  ReplyPtr r;
  {
    std::lock_guard lk(mu_);
    check_history();
    r = conn_.run({"INCRBY", key("next_oid", ""), n});
  }
  if (r->type != REDIS_REPLY_INTEGER || r->integer < static_cast<long long>(count)) {
    unexpected(r.get(), "INCRBY next_oid");
  }
  auto last = static_cast<std::uint64_t>(r->integer);
  std::uint64_t known = known_next_oid_.load();
  while (known < last + 1 && !known_next_oid_.compare_exchange_weak(known, last + 1)) {
  }
  return Oid(last - count + 1);
}

std::vector<ScanEntry> RedisStore::scan_type(std::string_view type, Oid after, std::size_t limit) {
  std::vector<ScanEntry> out;
  if (limit == 0 || type.empty()) return out;
  std::string min = "(" + after.str();
  std::string count = std::to_string(std::min<std::size_t>(limit, 1u << 30));
  ReplyPtr reply;
  {
    std::lock_guard lk(mu_);
    check_history();
    reply = eval(scan_type_id, {prefix_, type, min, count});
  }
  const redisReply* r = expect_array(reply.get(), "scan_type");
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    out.push_back(ScanEntry{Oid(parse_u64(string_of(r->element[i], "scan_type"), "oid")),
                            std::string(string_of(r->element[i + 1], "scan_type"))});
    learn(out.back().oid, type, out.back().key);
  }
  return out;
}

std::vector<ScanEntry> RedisStore::scan_keys(std::string_view type, std::string_view prefix,
                                             std::string_view after, std::size_t limit) {
  std::vector<ScanEntry> out;
  if (limit == 0) return out;
  std::string min;
  if (!after.empty() && after >= prefix) {
    min = "(" + std::string(after);
  } else if (!prefix.empty()) {
    min = "[" + std::string(prefix);
  } else {
    min = "-";
  }
  std::string count = std::to_string(std::min<std::size_t>(limit, 1u << 30));
  ReplyPtr reply;
  {
    std::lock_guard lk(mu_);
    check_history();
    reply = eval(scan_keys_id, {prefix_, type, min, count, prefix});
  }
  const redisReply* r = expect_array(reply.get(), "scan_keys");
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    out.push_back(ScanEntry{Oid(parse_u64(string_of(r->element[i + 1], "scan_keys"), "oid")),
                            std::string(string_of(r->element[i], "scan_keys"))});
    learn(out.back().oid, type, out.back().key);
  }
  return out;
}

std::optional<Oid> RedisStore::find_key(std::string_view type, std::string_view k) {
  ReplyPtr r;
  {
    std::lock_guard lk(mu_);
    check_history();
    r = eval(find_key_id, {prefix_, type, k});
  }
  auto found = opt_string(r.get(), "find_key");
  if (!found) return std::nullopt;
  Oid oid(parse_u64(*found, "oid"));
  learn(oid, type, k);
  return oid;
}

std::optional<std::uint64_t> RedisStore::lock(const LockRequest& request) {
  validate_lock_request(request);
  std::string lock_key = key("lock:", request.name);
  std::string fence_key = key("fence:", request.name);
  std::string ttl = std::to_string(request.ttl.count());
  auto deadline = std::chrono::steady_clock::now() + request.wait;
  std::chrono::milliseconds pause{2};
  for (;;) {
    ReplyPtr r;
    {
      std::lock_guard lk(mu_);
      check_history();
      conn_.connect();
      std::uint64_t floor = script_floor();
      r = eval(lock_id,
               {lock_key, fence_key, request.owner, ttl, key("epoch", ""), epoch_, key("csn", ""),
                std::to_string(floor), key("changes", "")},
               Resend::never);
      if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        std::string_view status = string_of(r->element[0], "lock");
        if (status == "behind") throw_went_back(r.get(), floor);
        if (status == "epoch") throw_other_history(r.get());
        if (status != "token" || r->elements != 3) unexpected(r.get(), "lock");
        // The CSN the token was taken at: a copy restored from before it is caught by the
        // next lock or commit (the script checked the ones before).
        raise_seen(parse_u64(string_of(r->element[2], "lock"), "csn"));
        return static_cast<std::uint64_t>(integer_of(r->element[1], "lock"));
      }
    }
    if (r->type != REDIS_REPLY_NIL) unexpected(r.get(), "lock");
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    // Polls with back-off; the last pause ends exactly at the deadline.
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

bool RedisStore::unlock(std::string_view name, std::string_view owner) {
  ReplyPtr r;
  {
    std::lock_guard lk(mu_);
    check_history();
    conn_.connect();
    r = eval(unlock_id, {key("lock:", name), owner}, Resend::never);
  }
  if (r->type != REDIS_REPLY_INTEGER) unexpected(r.get(), "unlock");
  return r->integer == 1;
}

bool RedisStore::renew(std::string_view name, std::string_view owner,
                       std::chrono::milliseconds ttl) {
  check_lock_ttl(ttl);
  std::string ms = std::to_string(ttl.count());
  ReplyPtr r;
  {
    std::lock_guard lk(mu_);
    check_history();
    r = eval(renew_id, {key("lock:", name), owner, ms});
  }
  if (r->type != REDIS_REPLY_INTEGER) unexpected(r.get(), "renew");
  return r->integer == 1;
}

PackStats RedisStore::pack() {
  std::lock_guard lk(mu_);
  check_history();
  // Every object key, by SCAN (which may report a key twice).
  std::string object_prefix = key("o:", "");
  std::string match = glob_escape(object_prefix) + "*";
  std::vector<Oid> all;
  std::unordered_set<Oid> seen;
  std::string cursor = "0";
  do {
    ReplyPtr r = conn_.run({"SCAN", cursor, "MATCH", match, "COUNT", "1000"});
    expect_array(r.get(), "SCAN");
    if (r->elements != 2) unexpected(r.get(), "SCAN");
    cursor = string_of(r->element[0], "SCAN");
    const redisReply* keys = expect_array(r->element[1], "SCAN");
    for (std::size_t i = 0; i < keys->elements; ++i) {
      std::string_view k = string_of(keys->element[i], "SCAN");
      Oid oid(parse_u64(k.substr(object_prefix.size()), "object key"));
      if (seen.insert(oid).second) all.push_back(oid);
    }
  } while (cursor != "0");

  // A blob's data is read as only its marker (it holds no refs), its size kept on the side.
  std::unordered_map<Oid, StoredObject> objects;
  std::unordered_map<Oid, std::size_t> object_bytes;
  std::vector<std::size_t> sizes;
  PackStats stats;
  for (std::size_t i = 0; i < all.size(); i += pack_batch) {
    auto batch = std::span<const Oid>(all).subspan(i, std::min(pack_batch, all.size() - i));
    sizes.clear();
    LoadResult loaded = load_for_pack(batch, sizes);
    for (std::size_t j = 0; j < loaded.objects.size(); ++j) {
      StoredObject& obj = loaded.objects[j];
      if (!obj.exists()) continue;
      std::size_t bytes = sizes[j] + obj.type.size() + obj.key.size();
      stats.bytes_before += bytes;
      object_bytes.emplace(obj.oid, bytes);
      objects.emplace(obj.oid, std::move(obj));
    }
  }
  stats.objects_before = objects.size();

  std::unordered_set<Oid> live = reachable_from_roots(objects);

  // Deletes the rest, each only if no commit rewrote it since it was read.
  std::vector<std::pair<std::string, std::string>> dead;
  for (const auto& [oid, obj] : objects) {
    if (live.contains(oid)) {
      stats.bytes_after += object_bytes.at(oid);
    } else {
      dead.emplace_back(oid.str(), std::to_string(obj.version));
    }
  }
  std::uint64_t removed = 0;
  for (std::size_t i = 0; i < dead.size(); i += pack_batch) {
    Args args = {prefix_};
    for (std::size_t j = i; j < std::min(dead.size(), i + pack_batch); ++j) {
      args.push_back(dead[j].first);
      args.push_back(dead[j].second);
    }
    conn_.connect();
    ReplyPtr r = eval(sweep_id, args, Resend::never);
    removed += integer_of(r.get(), "pack");
  }
  stats.objects_after = stats.objects_before - removed;
  return stats;
}

}  // namespace

std::unique_ptr<Store> open_redis_store(const StoreUrl& url) {
  std::string password = url.password;
  if (password.empty()) {
    if (const char* env = std::getenv("CAIRN_REDIS_PASSWORD"); env != nullptr) password = env;
  }
  std::string prefix = "cairn:";
  if (auto p = url.params.find("prefix"); p != url.params.end()) prefix = p->second;
  if (prefix.empty()) {
    // Every other prefix would start with it: this store's keys would mix with any other's.
    throw InvalidArgument("a Redis store's prefix must not be empty (the default is cairn:)");
  }
  return std::make_unique<RedisStore>(url, std::move(password), std::move(prefix));
}

}  // namespace cairn
