// Names of error codes, as shown to users and written in protocol docs.
#include "cairn/error.h"

namespace cairn {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::internal:
      return "internal";
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::conflict:
      return "conflict";
    case ErrorCode::corruption:
      return "corruption";
    case ErrorCode::io:
      return "io";
    case ErrorCode::protocol:
      return "protocol";
    case ErrorCode::auth:
      return "auth";
    case ErrorCode::lock_timeout:
      return "lock_timeout";
    case ErrorCode::unsupported:
      return "unsupported";
    case ErrorCode::busy:
      return "busy";
    case ErrorCode::lock_lost:
      return "lock_lost";
  }
  return "unknown";
}

}  // namespace cairn
