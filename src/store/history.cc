// Recent commit history (history.h).
#include "store/history.h"

#include <algorithm>
#include <unordered_set>

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
  auto first = std::upper_bound(entries_.begin(), entries_.end(), csn,
                                [](std::uint64_t c, const auto& entry) { return c < entry.first; });
  std::unordered_set<Oid> seen;
  for (auto it = first; it != entries_.end(); ++it) {
    for (Oid oid : it->second) {
      if (seen.insert(oid).second) out.oids.push_back(oid);
    }
  }
  return out;
}

void CommitHistory::reset(std::uint64_t csn) {
  entries_.clear();
  oids_ = 0;
  floor_ = csn;
}

}  // namespace cairn
