// RedisStore: the store contract kept in a Redis server, in the layout docs/redis-layout.md
// describes. What `redis://` and `redis+unix://` URLs open.
#pragma once

#include <memory>

#include "cairn/store.h"
#include "cairn/url.h"

namespace cairn {

// Connects to the server `url` names (AUTH with the URL's password, or with the environment
// variable CAIRN_REDIS_PASSWORD when the URL has none; SELECT its db) and keeps every key under
// the URL's `prefix` parameter ("cairn:" by default). Throws IoError if the server cannot be
// reached, AuthError if it refuses the password, ProtocolError for an unexpected reply.
std::unique_ptr<Store> open_redis_store(const StoreUrl& url);

}  // namespace cairn
