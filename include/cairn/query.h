// Queries over records (record.h):
//
//   auto rows = User::find()
//                   .where("house_name", "Gryffindor")        // ==
//                   .where("age", ">=", 18)                  // == != < <= > >=
//                   .where("tag", "in", {"a", "b"})          // in, not in
//                   .order_by("-name")                       // descending; stable
//                   .limit(10)
//                   .all();
//
// Every condition must hold (they are joined by AND). A query is answered from a secondary index
// when one of its conditions is on an indexed field, and by scanning the type otherwise; either
// way every condition is checked on the stored record, so an index only narrows the search.
//
// Comparisons: == and != use the total order of Value (value.h); <, <=, > and >= only match
// values of the same kind as the query value (a null or a text never matches `age >= 18`).
// Query values are converted to the field's kind where that is exact (TypeSpec::coerce).
// Without order_by, results come in oid order (the order records were first saved); order_by
// sorts stably on top of that, so ties keep oid order. Records already loaded from the
// repository are returned as the same objects, read again (as list() does).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/record.h"
#include "cairn/store.h"
#include "cairn/value.h"

namespace cairn {

enum class QueryOp : std::uint8_t { eq, ne, lt, le, gt, ge, in, not_in };

// "==" (or "="), "!=", "<", "<=", ">", ">=", "in", "not in"; InvalidArgument otherwise.
QueryOp parse_query_op(std::string_view op);
std::string_view to_string(QueryOp op);

namespace detail {

struct QueryCondition {
  const FieldSpec* field;
  QueryOp op;
  Value value;  // coerced to the field's kind; a list for in / not in
};

struct QueryOrder {
  const FieldSpec* field;
  bool descending;
};

struct QuerySpec {
  std::vector<QueryCondition> conditions;
  std::vector<QueryOrder> order;
  std::size_t offset = 0;
  std::size_t limit = std::numeric_limits<std::size_t>::max();
};

// How a query was answered (for tests and the bench).
struct QueryPlan {
  std::string index;           // the indexed field used, "" = a scan of the type
  std::size_t candidates = 0;  // records read from the store
};

QueryCondition make_condition(const TypeSpec& spec, std::string_view field, QueryOp op,
                              Value value);
QueryOrder make_order(const TypeSpec& spec, std::string_view field);
// Whether `state` (a stored record's fields) meets the condition.
bool matches(const QueryCondition& condition, const Value::Map& state);
// The matching records in result order.
std::vector<RecordRow> run_query(Store& store, const TypeSpec& spec, const QuerySpec& query,
                                 QueryPlan* plan = nullptr);

}  // namespace detail

template <typename T>
class Query {
 public:
  // REQUIRES: `repository` is not null.
  explicit Query(std::shared_ptr<Repository> repository) : repo_(std::move(repository)) {}

  // field == value.
  Query& where(std::string_view field, Value value) {
    return where(field, QueryOp::eq, std::move(value));
  }
  Query& where(std::string_view field, std::string_view op, Value value) {
    return where(field, parse_query_op(op), std::move(value));
  }
  Query& where(std::string_view field, std::string_view op, std::initializer_list<Value> values) {
    return where(field, parse_query_op(op), Value(Value::List(values)));
  }
  // Throws InvalidArgument naming the type and field for an unknown field or a value that
  // cannot be compared with it.
  Query& where(std::string_view field, QueryOp op, Value value) {
    spec_.conditions.push_back(
        detail::make_condition(Record<T>::spec(), field, op, std::move(value)));
    return *this;
  }
  // "name" ascending, "-name" descending; later calls break ties of earlier ones.
  Query& order_by(std::string_view field) {
    spec_.order.push_back(detail::make_order(Record<T>::spec(), field));
    return *this;
  }
  Query& limit(std::size_t n) {
    spec_.limit = n;
    return *this;
  }
  Query& offset(std::size_t n) {
    spec_.offset = n;
    return *this;
  }

  std::vector<std::shared_ptr<T>> all(detail::QueryPlan* plan = nullptr) const {
    std::vector<std::shared_ptr<T>> out;
    for (const detail::RecordRow& row :
         detail::run_query(repo_->store(), Record<T>::spec(), spec_, plan)) {
      out.push_back(Record<T>::materialize(repo_, row));
    }
    return out;
  }
  // The oids of the results, in result order, without making record objects.
  std::vector<Oid> oids(detail::QueryPlan* plan = nullptr) const {
    std::vector<Oid> out;
    for (const detail::RecordRow& row :
         detail::run_query(repo_->store(), Record<T>::spec(), spec_, plan)) {
      out.push_back(row.oid);
    }
    return out;
  }
  // The first result, or nullptr.
  std::shared_ptr<T> first() const {
    Query one = *this;
    one.spec_.limit = 1;
    auto rows = one.all();
    return rows.empty() ? nullptr : rows.front();
  }
  // How many records match (offset and limit apply), without making record objects.
  std::size_t count() const {
    return detail::run_query(repo_->store(), Record<T>::spec(), spec_).size();
  }

 private:
  std::shared_ptr<Repository> repo_;
  detail::QuerySpec spec_;
};

template <typename T>
Query<T> Record<T>::find(std::shared_ptr<Repository> repository) {
  return Query<T>(repository ? std::move(repository) : type_repository());
}

}  // namespace cairn
