// cairn's one error model: every failure at the public API is an exception derived from
// cairn::Error, carrying a code (stable across the wire protocol) and a message a user can act on.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/oid.h"

namespace cairn {

// Stable numeric codes: they travel in protocol error frames, so values never change meaning.
enum class ErrorCode : std::uint16_t {
  internal = 1,          // a bug in cairn or an unexpected state
  invalid_argument = 2,  // the caller passed something malformed or out of range
  not_found = 3,         // the named object, key or resource does not exist
  conflict = 4,          // optimistic concurrency: something read has changed since
  corruption = 5,        // stored or received bytes fail a checksum or do not decode
  io = 6,                // the operating system refused a read, write, sync or open
  protocol = 7,          // a peer broke the wire protocol
  auth = 8,              // missing or wrong credentials
  lock_timeout = 9,      // a lock could not be taken in the time allowed
  unsupported = 10,      // the feature or backend is not available in this build
  busy = 11,             // the resource is held by someone else (e.g. a database file in use)
  lock_lost = 12,        // a commit's lock is no longer held under the fencing token it names
};

std::string_view to_string(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  explicit Error(const std::string& message) : Error(ErrorCode::internal, message) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

#define CAIRN_DEFINE_ERROR(Name, Code)                                             \
  class Name : public Error {                                                      \
   public:                                                                         \
    explicit Name(const std::string& message) : Error(ErrorCode::Code, message) {} \
  };

CAIRN_DEFINE_ERROR(InvalidArgument, invalid_argument)
CAIRN_DEFINE_ERROR(NotFound, not_found)
CAIRN_DEFINE_ERROR(Corruption, corruption)
CAIRN_DEFINE_ERROR(IoError, io)
CAIRN_DEFINE_ERROR(ProtocolError, protocol)
CAIRN_DEFINE_ERROR(AuthError, auth)
CAIRN_DEFINE_ERROR(LockTimeout, lock_timeout)
CAIRN_DEFINE_ERROR(Unsupported, unsupported)
CAIRN_DEFINE_ERROR(Busy, busy)
// A commit named a lock (CommitRequest::locks) that is no longer held under the fencing token it
// gave: it expired, or was released, or someone else has taken it since. Nothing was applied.
// Not a conflict: running the transaction again under the same token fails again.
CAIRN_DEFINE_ERROR(LockLost, lock_lost)

#undef CAIRN_DEFINE_ERROR

// A commit lost an optimistic-concurrency race: the objects named in oids() changed (or a
// unique key was taken) after the transaction read them. Retrying the transaction is safe.
class ConflictError : public Error {
 public:
  ConflictError(const std::string& message, std::vector<Oid> oids)
      : Error(ErrorCode::conflict, message), oids_(std::move(oids)) {}
  const std::vector<Oid>& oids() const noexcept { return oids_; }

 private:
  std::vector<Oid> oids_;
};

}  // namespace cairn
