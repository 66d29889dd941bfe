// Recent commit history (history.h).
#include "store/history.h"

#include <algorithm>
#include <iterator>

namespace cairn {

void CommitHistory::remember(std::uint64_t csn, std::vector<Oid> oids) {
  oids_ += oids.size();
  entries_.emplace_back(csn, std::move(oids));
  while (entries_.size() > max_commits || oids_ > max_oids) {
    floor_ = entries_.front().first;
    oids_ -= entries_.front().second.size();
    entries_.pop_front();
  }
}

Changes CommitHistory::since(std::uint64_t csn, std::uint64_t current) const {
  Changes out;
  out.csn = current;
  if (csn < floor_) {
    out.complete = false;
    return out;
  }
  // Callers mostly ask about the last few commits: walk back from the newest.
  auto first = entries_.end();
  while (first != entries_.begin() && std::prev(first)->first > csn)
    --first;
  if (first == entries_.end()) return out;
  // One commit names each oid once already; several are merged without a hash set (this runs
  // after every commit of every connection).
  if (std::next(first) == entries_.end()) {
    out.oids = first->second;
    return out;
  }
  for (auto it = first; it != entries_.end(); ++it)
    out.oids.insert(out.oids.end(), it->second.begin(), it->second.end());
  std::sort(out.oids.begin(), out.oids.end());
  out.oids.erase(std::unique(out.oids.begin(), out.oids.end()), out.oids.end());
  return out;
}

void CommitHistory::reset(std::uint64_t csn) {
  entries_.clear();
  oids_ = 0;
  floor_ = csn;
}

}  // namespace cairn
