// POSIX file calls with errors as IoError (file_io.h).
#include "store/file_io.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cairn/error.h"

namespace cairn::fileio {

void Fd::reset() {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

void throw_errno(std::string_view what, const std::string& path) {
  int err = errno;
  throw IoError(fmt::format("{} {}: {}", what, path, std::strerror(err)));
}

Mapping::Mapping(int fd, std::uint64_t size, const std::string& path, bool shared)
    : size_(static_cast<std::size_t>(size)) {
  if (size_ == 0) return;
  addr_ = ::mmap(nullptr, size_, PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
  if (addr_ == MAP_FAILED) {
    addr_ = nullptr;
    throw_errno("cannot map", path);
  }
  if (!shared) ::madvise(addr_, size_, MADV_SEQUENTIAL);
}

Mapping::~Mapping() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
}

bool database_exists(const std::string& path) {
  if (path.empty()) throw InvalidArgument("the database path is empty");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    throw_errno("cannot open", path);
  }
  if (S_ISREG(st.st_mode)) return true;
  throw IoError(fmt::format(
      "cannot open {}: {}", path,
      S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file, so not a database"));
}

std::string resolve_links(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  for (int hops = 0; hops < 40; ++hops) {
    std::error_code ec;
    if (!fs::is_symlink(p, ec)) return p.string();
    fs::path target = fs::read_symlink(p, ec);
    if (ec) return p.string();
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  return path;  // a loop: opening it reports the kernel's ELOOP
}

void lock_database_file(int fd, bool exclusive, const std::string& path) {
  if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return;
  if (errno != EWOULDBLOCK) throw_errno("cannot lock", path);
  throw Busy(fmt::format(
      "{}: database is in use by another process, which opened it under another name (a hard "
      "link)",
      path));
}

Fd open_file(const std::string& path, int flags, const std::string& what) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(what, path);
  return Fd(fd);
}

std::uint64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat", path);
  return static_cast<std::uint64_t>(st.st_size);
}

Fd create_replacement(int like, const std::string& like_path, const std::string& path) {
  struct stat st {};
  if (::fstat(like, &st) != 0) throw_errno("cannot stat", like_path);
  if (st.st_nlink > 1) {
    throw InvalidArgument(fmt::format(
        "{} has {} hard links: it would be replaced by a new file under this name only, the "
        "others keeping the old one; remove the other links first",
        like_path, st.st_nlink));
  }
  // Made anew, never through a link left at `path`, and readable by no one else until it has
  // the original's mode (a file opened meanwhile would stay readable through its descriptor).
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", path);
  int raw = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (raw < 0) throw_errno("cannot create", path);
  Fd fd(raw);
  try {
    // Before any data is written: the copy is never readable by more than the original.
    if (::fchmod(fd.get(), st.st_mode & 07777) != 0) throw_errno("cannot set the mode of", path);
    struct stat made {};
    if (::fstat(fd.get(), &made) != 0) throw_errno("cannot stat", path);
    if ((made.st_uid != st.st_uid || made.st_gid != st.st_gid) &&
        ::fchown(fd.get(), st.st_uid, st.st_gid) != 0) {
      throw_errno(fmt::format("cannot give the owner and group of {} to", like_path), path);
    }
  } catch (...) {
    ::unlink(path.c_str());
    throw;
  }
  return fd;
}

void pread_all(int fd, char* out, std::size_t n, std::uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot read", path);
    }
    if (got == 0) {
      throw Corruption(fmt::format("{}: unexpected end of file at offset {}", path, offset));
    }
    out += got;
    n -= static_cast<std::size_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
}

void pwrite_all(int fd, std::string_view bytes, std::uint64_t offset, const std::string& path) {
  while (!bytes.empty()) {
    ssize_t put = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write", path);
    }
    bytes.remove_prefix(static_cast<std::size_t>(put));
    offset += static_cast<std::uint64_t>(put);
  }
}

void truncate_file(int fd, std::uint64_t size, const std::string& path) {
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) throw_errno("cannot truncate", path);
}

void sync_data(int fd, const std::string& path) {
  if (::fdatasync(fd) != 0) throw_errno("fdatasync failed on", path);
}

void sync_parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = ".";
  Fd dir = open_file(parent.string(), O_RDONLY | O_DIRECTORY, "cannot open directory");
  if (::fsync(dir.get()) != 0) throw_errno("fsync failed on directory", parent.string());
}

}  // namespace cairn::fileio
