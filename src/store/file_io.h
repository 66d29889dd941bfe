// Thin RAII wrappers over the POSIX file calls the FileStore makes, each turning a failure into
// IoError with the path and the system's reason.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace cairn::fileio {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// A read-only mapping of the first `size` bytes of a file (none for size 0). `shared` maps
// MAP_SHARED, so that what is written to the file later shows through (a mapping may reach past
// the end of the file; only bytes below it may be read).
class Mapping {
 public:
  Mapping(int fd, std::uint64_t size, const std::string& path, bool shared = false);
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();
  std::string_view bytes() const { return {static_cast<const char*>(addr_), size_}; }
  const char* data() const { return static_cast<const char*>(addr_); }
  std::size_t size() const { return size_; }

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

[[noreturn]] void throw_errno(std::string_view what, const std::string& path);
// Whether a database file is at `path`. Refuses, before anything (a lock file, a temporary) is
// made beside it, what cannot be one: an empty path (InvalidArgument), and anything but a regular
// file (IoError): a directory, a device, or a FIFO, whose open would block until a writer came.
bool database_exists(const std::string& path);
// The file a database path names: `path` itself, or, while it is a symbolic link, what the link
// points to (relative to the link's directory). The lock file, the temporary files and the
// renames of creation and pack go beside that file, so that every name of the database shares
// them and a rename never replaces the link. A link that points nowhere names where the
// database would be created. (Up to 40 links, as the kernel allows; then the path as it is.)
std::string resolve_links(const std::string& path);
// Locks the open database file itself with flock: exclusively for the writer, shared for
// readers. A hard link gives a file two names and so two lock files beside it; this lock is on
// the file. Busy if another process has it.
void lock_database_file(int fd, bool exclusive, const std::string& path);
Fd open_file(const std::string& path, int flags, const std::string& what);
std::uint64_t file_size(int fd, const std::string& path);
// Creates `path` anew (removing any file or link there) for a replacement of the open file
// `like`: mode 0600 at first, then its permission bits and owner, so that renaming it into place
// changes neither and no one else could open it meanwhile. Throws
// InvalidArgument if `like` has other hard links (the rename would leave them at the old file),
// IoError if the owner cannot be kept (only its owner or root may give a file away).
Fd create_replacement(int like, const std::string& like_path, const std::string& path);
void pread_all(int fd, char* out, std::size_t n, std::uint64_t offset, const std::string& path);
void pwrite_all(int fd, std::string_view bytes, std::uint64_t offset, const std::string& path);
void truncate_file(int fd, std::uint64_t size, const std::string& path);
void sync_data(int fd, const std::string& path);
// fsyncs the directory holding `path`, so that a file created or renamed there stays.
void sync_parent_dir(const std::string& path);

}  // namespace cairn::fileio
