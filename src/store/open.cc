// cairn::open(url): the one place that maps a URL to a backend.
#include <fmt/format.h>

#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/store.h"
#include "cairn/url.h"
#include "net/remote_store.h"
#include "store/redis_store.h"

namespace cairn {

std::unique_ptr<Store> open(std::string_view url) {
  StoreUrl parsed = parse_store_url(url);
  switch (parsed.scheme) {
    case StoreUrl::Scheme::memory:
      return make_memory_store();
    case StoreUrl::Scheme::file:
      return FileStore::open(parsed.path);
    case StoreUrl::Scheme::redis:
      return open_redis_store(parsed);
    case StoreUrl::Scheme::cairn:
    case StoreUrl::Scheme::cairns:
      return net::open_remote_store(parsed);
  }
  throw Unsupported(
      fmt::format("\"{}\": this build of cairn has no backend for that scheme yet", url));
}

}  // namespace cairn
