// Running queries (include/cairn/query.h): pick an index for one condition if one applies, read
// the candidates it names (or every record of the type) in oid order, keep those that meet
// every condition, then sort and cut.
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "cairn/codec.h"
#include "cairn/error.h"
#include "cairn/query.h"
#include "records/index_key.h"

namespace cairn {

QueryOp parse_query_op(std::string_view op) {
  if (op == "==" || op == "=") return QueryOp::eq;
  if (op == "!=") return QueryOp::ne;
  if (op == "<") return QueryOp::lt;
  if (op == "<=") return QueryOp::le;
  if (op == ">") return QueryOp::gt;
  if (op == ">=") return QueryOp::ge;
  if (op == "in") return QueryOp::in;
  if (op == "not in") return QueryOp::not_in;
  throw InvalidArgument("unknown query operator \"" + std::string(op) +
                        "\" (use ==, !=, <, <=, >, >=, in, not in)");
}

std::string_view to_string(QueryOp op) {
  switch (op) {
    case QueryOp::eq:
      return "==";
    case QueryOp::ne:
      return "!=";
    case QueryOp::lt:
      return "<";
    case QueryOp::le:
      return "<=";
    case QueryOp::gt:
      return ">";
    case QueryOp::ge:
      return ">=";
    case QueryOp::in:
      return "in";
    case QueryOp::not_in:
      return "not in";
  }
  return "?";
}

namespace detail {

namespace {

const Value& field_value(const Value::Map& state, const FieldSpec& field) {
  auto it = state.find(field.name);
  return it != state.end() ? it->second : field.default_value;
}

bool is_range(QueryOp op) {
  return op == QueryOp::lt || op == QueryOp::le || op == QueryOp::gt || op == QueryOp::ge;
}

// Where the candidates come from.
struct Source {
  const QueryCondition* condition = nullptr;  // nullptr: scan the type
  const QueryCondition* upper = nullptr;      // a range's upper bound on the same field, if any
};

Source choose_source(const QuerySpec& query) {
  Source source;
  int best = 0;  // 3 ==, 2 in, 1 range
  for (const QueryCondition& c : query.conditions) {
    if (!c.field->indexed) continue;
    int rank = 0;
    if (c.op == QueryOp::eq && indexable(c.value)) {
      rank = 3;
    } else if (c.op == QueryOp::in &&
               std::all_of(c.value.as_list().begin(), c.value.as_list().end(),
                           [](const Value& v) { return indexable(v); })) {
      rank = 2;
    } else if (is_range(c.op) && indexable(c.value) && !c.value.is_null()) {
      rank = 1;
    }
    if (rank > best) {
      best = rank;
      source.condition = &c;
    }
  }
  if (best == 1 && (source.condition->op == QueryOp::gt || source.condition->op == QueryOp::ge)) {
    for (const QueryCondition& c : query.conditions) {
      if (c.field == source.condition->field && (c.op == QueryOp::lt || c.op == QueryOp::le) &&
          c.value.kind() == source.condition->value.kind()) {
        source.upper = &c;
        break;
      }
    }
  }
  return source;
}

// Reads index entries of `type` with keys starting with `prefix`, after `after`, until `stop`
// says a value part is past the range; appends the records' oids.
void scan_index(Store& store, const std::string& type, const std::string& prefix, std::string after,
                const std::function<bool(std::string_view)>& past, std::size_t page,
                std::vector<Oid>& out, std::size_t want) {
  for (;;) {
    std::vector<ScanEntry> entries = store.scan_keys(type, prefix, after, page);
    for (const ScanEntry& e : entries) {
      auto split = split_index_key(e.key);
      if (!split) continue;
      if (past && past(split->first)) return;
      out.push_back(split->second);
    }
    if (entries.size() < page || out.size() >= want) return;
    after = entries.back().key;
    page = std::min<std::size_t>(page * 4, 4096);
  }
}

// Candidates in ascending oid order, a batch at a time: next() fills `batch`, false at the end.
class Candidates {
 public:
  Candidates(Store& store, const TypeSpec& spec, const Source& source, std::size_t page)
      : store_(store), spec_(spec), source_(source), page_(page) {}

  bool next(std::vector<Oid>& batch) {
    batch.clear();
    if (done_) return false;
    const QueryCondition* c = source_.condition;
    if (c == nullptr) {
      std::vector<ScanEntry> entries = store_.scan_type(spec_.name, after_oid_, page_);
      for (const ScanEntry& e : entries)
        batch.push_back(e.oid);
      if (entries.size() < page_) done_ = true;
      if (!entries.empty()) after_oid_ = entries.back().oid;
      page_ = std::min<std::size_t>(page_ * 4, 4096);
      return !batch.empty();
    }
    std::string type = spec_.index_type(*c->field);
    if (c->op == QueryOp::eq) {
      // One value: its entries are in oid order already.
      std::string prefix = index_value(c->value) + '\0';
      std::vector<ScanEntry> entries = store_.scan_keys(type, prefix, after_key_, page_);
      for (const ScanEntry& e : entries) {
        if (auto split = split_index_key(e.key)) batch.push_back(split->second);
      }
      if (entries.size() < page_) done_ = true;
      if (!entries.empty()) after_key_ = entries.back().key;
      page_ = std::min<std::size_t>(page_ * 4, 4096);
      return !batch.empty() || !done_;
    }
    done_ = true;
    if (c->op == QueryOp::in) {
      for (const Value& v : c->value.as_list()) {
        scan_index(store_, type, index_value(v) + '\0', "", nullptr, 1024, batch, SIZE_MAX);
      }
    } else {
      std::string kind(1, index_kind_prefix(c->value.kind()));
      std::string bound = index_value(c->value);
      if (c->op == QueryOp::gt || c->op == QueryOp::ge) {
        std::function<bool(std::string_view)> past;
        if (source_.upper) {
          std::string upper = index_value(source_.upper->value);
          past = [upper](std::string_view value) { return value > upper; };
        }
        // After every entry of the bound itself for >, unless the bound was cut short (then
        // longer values cut to the same text may still be greater).
        std::string after = bound;
        if (c->op == QueryOp::gt && bound.size() < max_index_value_bytes) after += '\1';
        scan_index(store_, type, kind, after, past, 1024, batch, SIZE_MAX);
      } else {
        scan_index(
            store_, type, kind, "", [&](std::string_view value) { return value > bound; }, 1024,
            batch, SIZE_MAX);
      }
    }
    std::sort(batch.begin(), batch.end());
    batch.erase(std::unique(batch.begin(), batch.end()), batch.end());
    return !batch.empty();
  }

 private:
  Store& store_;
  const TypeSpec& spec_;
  Source source_;
  std::size_t page_;
  bool done_ = false;
  Oid after_oid_;
  std::string after_key_;
};

}  // namespace

QueryCondition make_condition(const TypeSpec& spec, std::string_view field, QueryOp op,
                              Value value) {
  const FieldSpec& f = spec.at(field);
  bool matching = op == QueryOp::eq || op == QueryOp::in;
  if (op == QueryOp::in || op == QueryOp::not_in) {
    if (!value.is_list()) {
      throw InvalidArgument(spec.name + "." + f.name + ": \"" + std::string(to_string(op)) +
                            "\" takes a list of values");
    }
    Value::List items;
    for (Value& item : value.as_list()) {
      Value coerced = spec.coerce(f, std::move(item));
      if (matching) spec.check_matchable(f, coerced);
      items.push_back(std::move(coerced));
    }
    return QueryCondition{&f, op, Value(std::move(items))};
  }
  Value coerced = spec.coerce(f, std::move(value));
  if (matching) spec.check_matchable(f, coerced);
  return QueryCondition{&f, op, std::move(coerced)};
}

QueryOrder make_order(const TypeSpec& spec, std::string_view field) {
  bool descending = !field.empty() && field.front() == '-';
  if (descending) field.remove_prefix(1);
  return QueryOrder{&spec.at(field), descending};
}

bool matches(const QueryCondition& c, const Value::Map& state) {
  const Value& v = field_value(state, *c.field);
  switch (c.op) {
    case QueryOp::eq:
      return v == c.value;
    case QueryOp::ne:
      return v != c.value;
    case QueryOp::lt:
      return v.kind() == c.value.kind() && v < c.value;
    case QueryOp::le:
      return v.kind() == c.value.kind() && v <= c.value;
    case QueryOp::gt:
      return v.kind() == c.value.kind() && v > c.value;
    case QueryOp::ge:
      return v.kind() == c.value.kind() && v >= c.value;
    case QueryOp::in:
      return std::find(c.value.as_list().begin(), c.value.as_list().end(), v) !=
             c.value.as_list().end();
    case QueryOp::not_in:
      return std::find(c.value.as_list().begin(), c.value.as_list().end(), v) ==
             c.value.as_list().end();
  }
  return false;
}

std::vector<RecordRow> run_query(Store& store, const TypeSpec& spec, const QuerySpec& query,
                                 QueryPlan* plan) {
  Source source = choose_source(query);
  if (plan) {
    plan->index = source.condition ? source.condition->field->name : "";
    plan->candidates = 0;
  }
  // Without sorting, results are in candidate (oid) order, so reading can stop once enough
  // have matched.
  const bool sorted = !query.order.empty();
  const std::size_t wanted =
      query.limit > SIZE_MAX - query.offset ? SIZE_MAX : query.offset + query.limit;
  std::size_t page = sorted ? 1024 : std::clamp<std::size_t>(wanted, 16, 1024);
  Candidates candidates(store, spec, source, page);
  std::vector<RecordRow> rows;
  std::vector<Oid> batch;
  while ((sorted || rows.size() < wanted) && candidates.next(batch)) {
    if (batch.empty()) continue;
    LoadResult loaded = store.load(batch);
    if (plan) plan->candidates += batch.size();
    for (StoredObject& object : loaded.objects) {
      if (!object.exists() || object.type != spec.name) continue;
      Value state = decode(object.data);
      if (!state.is_map()) continue;
      const Value::Map& map = state.as_map();
      const Value* gen = state.find("$gen");
      if ((gen && gen->is_int() ? gen->as_int() : 0) != spec.generation) continue;
      if (!std::all_of(query.conditions.begin(), query.conditions.end(),
                       [&](const QueryCondition& c) { return matches(c, map); })) {
        continue;
      }
      rows.push_back(RecordRow{object.oid, std::move(object.key), std::move(state.as_map())});
      if (!sorted && rows.size() >= wanted) break;
    }
  }
  if (query.offset >= rows.size()) return {};
  if (!sorted) {
    rows.erase(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(query.offset));
    if (rows.size() > query.limit) rows.resize(query.limit);
    return rows;
  }
  // Sort positions by keys looked up once per row; stable, so ties keep oid order.
  const std::size_t width = query.order.size();
  std::vector<const Value*> keys(rows.size() * width);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (std::size_t k = 0; k < width; ++k)
      keys[i * width + k] = &field_value(rows[i].state, *query.order[k].field);
  }
  std::vector<std::size_t> order(rows.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    for (std::size_t k = 0; k < width; ++k) {
      auto c = *keys[a * width + k] <=> *keys[b * width + k];
      if (c != 0) return query.order[k].descending ? c > 0 : c < 0;
    }
    return false;
  });
  std::vector<RecordRow> out;
  std::size_t end = query.offset + std::min(query.limit, rows.size() - query.offset);
  out.reserve(end - query.offset);
  for (std::size_t i = query.offset; i < end; ++i)
    out.push_back(std::move(rows[order[i]]));
  return out;
}

}  // namespace detail

}  // namespace cairn
