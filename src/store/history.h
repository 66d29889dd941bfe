// CommitHistory: which oids recent commits changed, for Store::changes_since(). Bounded: the
// oldest commits are forgotten first, and a question about forgotten history is answered with
// Changes::complete = false. Not thread-safe: the store guards it with its own lock.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "cairn/store.h"

namespace cairn {

class CommitHistory {
 public:
  // `csn`: the store's last CSN when history starts (nothing before it is known).
  explicit CommitHistory(std::uint64_t csn = 0) : floor_(csn) {}

  void remember(std::uint64_t csn, std::vector<Oid> oids);
  // The oids changed after `csn`, given the store's current CSN `current`.
  Changes since(std::uint64_t csn, std::uint64_t current) const;
  // Forgets everything (after a pack rewrote the store): changes_since(c < csn) is incomplete.
  void reset(std::uint64_t csn);

  static constexpr std::size_t max_commits = 65536;
  static constexpr std::size_t max_oids = 1 << 20;

 private:
  std::deque<std::pair<std::uint64_t, std::vector<Oid>>> entries_;
  std::size_t oids_ = 0;
  std::uint64_t floor_;  // since(csn) is complete for csn >= this
};

}  // namespace cairn
