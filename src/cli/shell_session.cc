// The commands of `cairn shell` (shell_session.h): paths, their resolution through maps, lists
// and references, and the commands over a Connection.
#include "cli/shell_session.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "cairn/error.h"
#include "cairn/file_store.h"
#include "cairn/json.h"
#include "cairn/value.h"
#include "core/json_scan.h"

namespace cairn::cli {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

// "a string", "an int", "null": a value's kind for messages.
std::string kind_phrase(const Value& v) {
  if (v.is_null()) return "null";
  std::string_view name = to_string(v.kind());
  bool vowel = std::string_view("aeiou").find(name.front()) != std::string_view::npos;
  return fmt::format("{} {}", vowel ? "an" : "a", name);
}

// Messages keep to one line whatever a lower layer put in them.
std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

// ---- paths ----

struct Path {
  std::vector<std::string> segments;
  bool trailing_slash = false;  // follow a reference at the end
};

std::string escape_segment(std::string_view segment) {
  std::string out;
  for (char c : segment) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// The path made of the first `n` segments, as the user would type it.
std::string path_prefix(const Path& path, std::size_t n) {
  if (n == 0) return "/";
  std::string out;
  for (std::size_t i = 0; i < n; ++i)
    out += "/" + escape_segment(path.segments[i]);
  return out;
}

std::string path_text(const Path& path) {
  std::string out = path_prefix(path, path.segments.size());
  if (path.trailing_slash && !path.segments.empty()) out += "/";
  return out;
}

std::string unescape_segment(std::string_view text, std::string_view segment) {
  std::string out;
  for (std::size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '~') {
      out += segment[i];
      continue;
    }
    char next = i + 1 < segment.size() ? segment[i + 1] : '\0';
    if (next != '0' && next != '1') {
      throw InvalidArgument(
          fmt::format("path {}: \"~\" must be followed by 0 (for ~) or 1 (for /)", text));
    }
    out += next == '0' ? '~' : '/';
    ++i;
  }
  return out;
}

Path parse_path(std::string_view text) {
  if (!text.starts_with('/')) {
    throw InvalidArgument(fmt::format("path \"{}\" does not start with /", text));
  }
  Path path;
  std::string_view rest = text.substr(1);
  if (rest.empty()) return path;
  if (rest.ends_with('/')) {
    path.trailing_slash = true;
    rest.remove_suffix(1);
  }
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view segment = rest.substr(0, slash);
    if (segment.empty()) throw InvalidArgument(fmt::format("path {} has an empty segment", text));
    path.segments.push_back(unescape_segment(text, segment));
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  return path;
}

// A list index: decimal digits. Throws InvalidArgument naming `where` otherwise.
std::size_t parse_index(const std::string& segment, std::string_view where) {
  std::size_t index = 0;
  const char* end = segment.data() + segment.size();
  auto [ptr, ec] = std::from_chars(segment.data(), end, index);
  if (segment.empty() || ec != std::errc() || ptr != end ||
      (segment.size() > 1 && segment[0] == '0')) {
    throw InvalidArgument(
        fmt::format("{} is a list: \"{}\" is not an index (0, 1, 2...)", where, segment));
  }
  return index;
}

// ---- resolution ----

// One step from a value to an element of it.
using Step = std::variant<std::string, std::size_t>;

// Where a value lives: an object, and the steps from its state to the value.
struct Location {
  Object holder;
  std::vector<Step> steps;       // empty: the value is the object's whole state
  const Value* value = nullptr;  // valid until the next write
};

// Moves `loc` into the object the Ref at `loc` names. `where` is the path of the Ref.
void enter(Connection& conn, Location& loc, std::string_view where) {
  try {
    Object next = conn.get(loc.value->as_ref());
    const Value& state = next.get();
    loc.holder = std::move(next);
    loc.steps.clear();
    loc.value = &state;
  } catch (const NotFound& e) {
    throw NotFound(fmt::format("{}: {}", where, e.what()));
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("{}: {}", where, e.what()));
  }
}

[[noreturn]] void throw_not_reference(const Value& v, std::string_view where) {
  throw InvalidArgument(
      fmt::format("{} is {}, not a reference: a trailing / follows one", where, kind_phrase(v)));
}

[[noreturn]] void throw_not_container(const Value& v, std::string_view where) {
  throw InvalidArgument(fmt::format("{} is {}, not a map or list", where, kind_phrase(v)));
}

// The element of `container` (at `where`) that `segment` names, or nullptr if it has none; sets
// `step` to reach it.
const Value* child(const Value& container, const std::string& segment, std::string_view where,
                   Step& step) {
  if (container.is_map()) {
    step = segment;
    return container.find(segment);
  }
  if (container.is_list()) {
    std::size_t index = parse_index(segment, where);
    step = index;
    const Value::List& list = container.as_list();
    return index < list.size() ? &list[index] : nullptr;
  }
  throw_not_container(container, where);
}

[[noreturn]] void throw_missing(const Value& container, const std::string& segment,
                                std::string_view where) {
  if (container.is_list()) {
    throw NotFound(fmt::format("{} has no index {} (its size is {})", where, segment,
                               container.as_list().size()));
  }
  throw NotFound(fmt::format("{} has no key \"{}\"", where, segment));
}

// At the end of a PATH written with a trailing /: the object the reference there names, which
// must be a reference.
void follow_slash(Connection& conn, Location& loc, const Path& path) {
  std::string at = path_prefix(path, path.segments.size());
  if (!loc.value->is_ref()) throw_not_reference(*loc.value, at);
  enter(conn, loc, at);
}

// The value the first `n` segments of `path` name, following references on the way and, with
// `follow_end`, a reference at the end.
Location resolve(Connection& conn, const Path& path, std::size_t n, bool follow_end) {
  Location loc;
  loc.holder = conn.get(Oid::root());
  loc.value = &loc.holder.get();
  for (std::size_t i = 0; i < n; ++i) {
    std::string where = path_prefix(path, i);
    if (loc.value->is_ref()) enter(conn, loc, where);
    Step step;
    const Value* next = child(*loc.value, path.segments[i], where, step);
    if (next == nullptr) throw_missing(*loc.value, path.segments[i], where);
    loc.steps.push_back(std::move(step));
    loc.value = next;
  }
  if (follow_end && loc.value->is_ref()) enter(conn, loc, path_prefix(path, n));
  return loc;
}

// The value at `loc`, for changing: marks its object changed.
Value& mutable_value(Location& loc) {
  Value* v = &loc.holder.mutate();
  for (const Step& step : loc.steps) {
    if (const std::string* key = std::get_if<std::string>(&step)) {
      v = &v->as_map().find(*key)->second;
    } else {
      v = &v->as_list()[std::get<std::size_t>(step)];
    }
  }
  loc.value = v;
  return *v;
}

// What a write to a PATH changes, found without changing anything.
struct Target {
  Location container;  // the map or list that holds the element; or, if whole_object, the object
  bool whole_object = false;
  std::string key;        // in a map
  std::size_t index = 0;  // in a list
  bool append = false;    // in a list: `-`
};

Target locate_for_write(Connection& conn, const Path& path, bool allow_append) {
  Target target;
  if (path.segments.empty()) {
    target.container = resolve(conn, path, 0, true);
    target.whole_object = true;
    return target;
  }
  std::size_t last = path.segments.size() - 1;
  target.container = resolve(conn, path, last, true);
  const Value& container = *target.container.value;
  const std::string& segment = path.segments[last];
  std::string where = path_prefix(path, last);
  if (container.is_map()) {
    target.key = segment;
  } else if (container.is_list()) {
    if (segment == "-" && allow_append) {
      target.append = true;
    } else {
      target.index = parse_index(segment, where);
      if (target.index >= container.as_list().size()) throw_missing(container, segment, where);
    }
  } else {
    throw_not_container(container, where);
  }
  if (path.trailing_slash) {
    // The object a reference names, replaced whole: anything else at the end is refused, rather
    // than written over as if the / were not there.
    if (target.append) {
      throw InvalidArgument(fmt::format("{}: - appends to a list; a trailing / follows a reference",
                                        path_text(path)));
    }
    Step step;
    const Value* existing = child(container, segment, where, step);
    if (existing == nullptr) throw_missing(container, segment, where);
    Location object = target.container;
    object.steps.push_back(std::move(step));
    object.value = existing;
    follow_slash(conn, object, path);
    target = Target{};
    target.container = std::move(object);
    target.whole_object = true;
  }
  return target;
}

void assign(Target& target, Value value) {
  Value& container = mutable_value(target.container);
  if (target.whole_object) {
    container = std::move(value);
  } else if (container.is_map()) {
    container.as_map().insert_or_assign(target.key, std::move(value));
  } else if (target.append) {
    container.as_list().push_back(std::move(value));
  } else {
    container.as_list()[target.index] = std::move(value);
  }
}

// Refuses a value with a reference to an object that does not exist (or has another type than
// the reference names): `cairn check` would report it as dangling.
void check_refs(Connection& conn, const Value& value) {
  if (value.is_ref()) {
    const Ref& ref = value.as_ref();
    Object object = conn.get(ref);  // checks the type the reference names, if it names one
    if (!object.exists()) {
      // The root is there before its first commit, as the untyped map the shell makes it.
      if (!ref.oid.is_root()) throw NotFound(fmt::format("{} names no object", to_json(value)));
      if (!ref.type.empty()) {
        throw InvalidArgument(
            fmt::format("object 0 has type \"\"; the reference expects \"{}\"", ref.type));
      }
    }
  } else if (value.is_list()) {
    for (const Value& v : value.as_list())
      check_refs(conn, v);
  } else if (value.is_map()) {
    for (const auto& [key, v] : value.as_map())
      check_refs(conn, v);
  }
}

// ---- arguments ----

std::string_view next_word(std::string_view& rest) {
  rest = trim(rest);
  std::size_t end = 0;
  while (end < rest.size() && !is_space(rest[end]))
    ++end;
  std::string_view word = rest.substr(0, end);
  rest = trim(rest.substr(end));
  return word;
}

// The PATH argument: a word, or a JSON string (which may hold spaces).
Path next_path(std::string_view& rest, std::string_view command) {
  rest = trim(rest);
  if (rest.empty()) throw InvalidArgument(fmt::format("{} needs a PATH", command));
  if (!rest.starts_with('"')) return parse_path(next_word(rest));
  std::size_t i = 1;
  for (bool escaped = false; i < rest.size(); ++i) {
    if (escaped) {
      escaped = false;
    } else if (rest[i] == '\\') {
      escaped = true;
    } else if (rest[i] == '"') {
      break;
    }
  }
  if (i == rest.size())
    throw InvalidArgument(fmt::format("{}: the quoted PATH has no end", command));
  std::string text = from_json(rest.substr(0, i + 1)).as_string();
  rest = trim(rest.substr(i + 1));
  return parse_path(text);
}

void no_more(std::string_view rest, std::string_view usage) {
  if (!rest.empty()) throw InvalidArgument(fmt::format("usage: {}", usage));
}

Value parse_json(std::string_view text) {
  try {
    return from_json(text);
  } catch (const InvalidArgument& e) {
    std::string_view message = e.what();
    if (message.starts_with("invalid JSON")) throw;
    throw InvalidArgument(fmt::format("invalid JSON value: {}", message));
  }
}

constexpr std::string_view help_text =
    "get PATH         print the value at PATH as one line of JSON\n"
    "set PATH JSON    store a JSON value at PATH: a map key, a list index, or - to append\n"
    "new PATH [JSON]  create a persistent map object (from a JSON object; {} if none) and store "
    "a reference to it at PATH\n"
    "del PATH         remove the key or list element at PATH\n"
    "ls [PATH]        list the keys of the map at PATH (default /), or the indexes of a list, one "
    "a line (a key that is empty, starts with \" or holds a control character as a JSON "
    "string)\n"
    "commit           commit the changes; prints \"committed N\" with the commit's CSN\n"
    "abort            drop uncommitted changes and see the newest commits\n"
    "sync             see other commits, keeping uncommitted changes (a conflict aborts)\n"
    "info             describe the store and this session\n"
    "help             list the commands\n"
    "quit, exit       leave; uncommitted changes are dropped\n"
    "PATH: / is the root; /users/harry/name walks map keys, list indexes and references; a "
    "trailing / follows a reference at the end; ~1 is / and ~0 is ~ inside a key\n";

}  // namespace

namespace {

// Where the JSON argument of the command starting at `from` begins: after `set PATH` or
// `new PATH`. npos for every other command, which takes no JSON.
std::size_t json_start(std::string_view line, std::size_t from) {
  std::size_t i = from;
  auto skip_spaces = [&] {
    while (i < line.size() && is_space(line[i]))
      ++i;
  };
  skip_spaces();
  std::size_t word = i;
  while (i < line.size() && !is_space(line[i]) && line[i] != ';')
    ++i;
  std::string_view command = line.substr(word, i - word);
  if (command != "set" && command != "new") return std::string_view::npos;
  skip_spaces();
  if (i < line.size() && line[i] == '"') {  // a quoted path: a JSON string
    for (++i; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] == '\\') ++i;
    }
    return std::min(i + 1, line.size());
  }
  while (i < line.size() && !is_space(line[i]) && line[i] != ';')
    ++i;
  return i;
}

}  // namespace

std::vector<std::string> CommandSplitter::feed(std::string_view line) {
  std::vector<std::string> out;
  auto emit = [&out](std::string_view piece) {
    piece = trim(piece);
    if (!piece.empty() && !piece.starts_with('#')) out.emplace_back(piece);
  };
  if (pending_.empty() && trim(line).starts_with('#')) return out;  // a comment line
  // Only this line is scanned (the depth carries over), so a long value costs linear time. Only
  // brackets of a set's or new's JSON value count, so a stray one in a path or another command
  // cannot swallow the lines after it.
  std::size_t begin = 0;  // of this line's part of the command being read
  std::size_t json_from = pending_.empty() ? json_start(line, 0) : 0;
  bool fresh = pending_.empty();  // nothing of the current command read yet
  std::size_t end = line.size();
  // The scan skips strings (one ends with its line: JSON strings hold no newline). A string
  // opens anywhere in a set's or new's JSON value, but elsewhere only where a word begins (a
  // quoted path): a quote inside a plain word is part of it (a key holding `"`), and must not
  // hide the separators after it.
  JsonStringScan string;
  for (std::size_t i = 0; i < end; ++i) {
    char c = line[i];
    if (string.in_string) {
      string.step(c);
      continue;
    }
    if (c == '"' && (i >= json_from || i == begin || is_space(line[i - 1]))) {
      string.in_string = true;
      fresh = false;
      continue;
    }
    if (depth_ == 0 && c == ';') {
      pending_ += line.substr(begin, i - begin);
      emit(pending_);
      pending_.clear();
      begin = i + 1;
      fresh = true;
      json_from = json_start(line, begin);
      continue;
    }
    if (fresh && depth_ == 0 && c == '#') {  // a comment to the end of the line
      end = i;
      break;
    }
    if (!is_space(c)) fresh = false;
    if (i >= json_from && (c == '[' || c == '{')) {
      ++depth_;
    } else if (i >= json_from && (c == ']' || c == '}') && depth_ > 0) {
      --depth_;
    }
  }
  pending_ += line.substr(begin, end - begin);
  if (depth_ > 0) {  // the value goes on
    pending_ += '\n';
    return out;
  }
  emit(pending_);
  pending_.clear();
  return out;
}

std::vector<std::string> CommandSplitter::finish() {
  std::vector<std::string> out;
  std::string_view rest = trim(pending_);
  if (!rest.empty()) out.emplace_back(rest);
  reset();
  return out;
}

void CommandSplitter::reset() {
  pending_.clear();
  depth_ = 0;
}

std::vector<std::string> split_commands(std::string_view text) {
  CommandSplitter splitter;
  std::vector<std::string> commands;
  auto take = [&commands](std::vector<std::string> more) {
    for (std::string& command : more)
      commands.push_back(std::move(command));
  };
  for (std::size_t pos = 0;;) {
    std::size_t eol = std::min(text.find('\n', pos), text.size());
    take(splitter.feed(text.substr(pos, eol - pos)));
    if (eol == text.size()) break;
    pos = eol + 1;
  }
  take(splitter.finish());
  return commands;
}

std::string shell_help() {
  return std::string(help_text);
}

ShellSession::ShellSession(Database& db, std::string store_name)
    : db_(db), conn_(db.connect()), store_name_(std::move(store_name)) {}

ShellSession::Outcome ShellSession::run(std::string_view command, std::ostream& out,
                                        std::ostream& err) {
  std::string message;
  try {
    bool go_on = execute(command, out);
    out.flush();
    return go_on ? Outcome::ok : Outcome::quit;
  } catch (const ConflictError& e) {
    // The connection has aborted and synced: nothing of this transaction is left.
    std::string oids;
    for (Oid oid : e.oids())
      oids += (oids.empty() ? "" : ", ") + oid.str();
    // Why, as the error says it (another commit changed them; or the server was started again
    // and cannot check what was read before): after its "... on oids N: ".
    std::string_view why = e.what();
    if (std::size_t on = why.find("on oids "); on != std::string_view::npos) {
      if (std::size_t colon = why.find(": ", on); colon != std::string_view::npos) {
        why.remove_prefix(colon + 2);
      }
    }
    message = one_line(fmt::format(
        "conflict on oids {}: {}; this transaction was aborted and the shell now reads csn {}",
        oids, why, conn_.snapshot_csn()));
  } catch (const Error& e) {
    message = one_line(e.what());
  }
  out.flush();
  err << "error: " << message << "\n";
  err.flush();
  return Outcome::failed;
}

bool ShellSession::execute(std::string_view command, std::ostream& out) {
  std::string_view rest = command;
  std::string_view verb = next_word(rest);
  if (verb == "get") {
    get(rest, out);
  } else if (verb == "set") {
    set(rest);
  } else if (verb == "new") {
    create(rest);
  } else if (verb == "del") {
    del(rest);
  } else if (verb == "ls") {
    ls(rest, out);
  } else if (verb == "commit") {
    no_more(rest, "commit");
    std::uint64_t csn = conn_.commit();
    out << "committed " << csn << "\n";
  } else if (verb == "abort") {
    no_more(rest, "abort");
    conn_.abort();
  } else if (verb == "sync") {
    no_more(rest, "sync");
    conn_.sync();
  } else if (verb == "info") {
    no_more(rest, "info");
    info(out);
  } else if (verb == "help") {
    no_more(rest, "help");
    out << help_text;
  } else if (verb == "quit" || verb == "exit") {
    no_more(rest, verb);
    return false;
  } else if (!verb.empty()) {
    throw InvalidArgument(
        fmt::format("unknown command \"{}\"; help lists the commands", one_line(verb)));
  }
  return true;
}

void ShellSession::get(std::string_view args, std::ostream& out) {
  Path path = next_path(args, "get");
  no_more(args, "get PATH");
  Location loc = resolve(conn_, path, path.segments.size(), false);
  if (path.trailing_slash) follow_slash(conn_, loc, path);
  out << to_json(*loc.value) << "\n";
}

void ShellSession::set(std::string_view args) {
  Path path = next_path(args, "set");
  if (args.empty()) throw InvalidArgument("usage: set PATH JSON");
  Value value = parse_json(args);
  Target target = locate_for_write(conn_, path, true);
  if (target.whole_object && target.container.holder.oid().is_root() && !value.is_map()) {
    throw InvalidArgument(
        fmt::format("the root is a map: / takes a JSON object, not {}", kind_phrase(value)));
  }
  check_refs(conn_, value);
  assign(target, std::move(value));
}

void ShellSession::create(std::string_view args) {
  Path path = next_path(args, "new");
  Value state = args.empty() ? Value(Value::Map{}) : parse_json(args);
  if (!state.is_map()) {
    throw InvalidArgument(
        fmt::format("new makes a map object: it takes a JSON object, not {}", kind_phrase(state)));
  }
  Target target = locate_for_write(conn_, path, true);
  if (target.whole_object) {
    throw InvalidArgument(fmt::format(
        "new stores a reference under a key or index; {} is an object", path_text(path)));
  }
  check_refs(conn_, state);
  Object object = conn_.create(std::move(state));
  assign(target, object.ref());
}

void ShellSession::del(std::string_view args) {
  Path path = next_path(args, "del");
  no_more(args, "del PATH");
  if (path.segments.empty()) throw InvalidArgument("del cannot remove the root");
  if (path.trailing_slash) {
    throw InvalidArgument(fmt::format(
        "del removes a key or list element: write {} without the trailing /", path_text(path)));
  }
  std::size_t last = path.segments.size() - 1;
  Location loc = resolve(conn_, path, last, true);
  const std::string& segment = path.segments[last];
  std::string where = path_prefix(path, last);
  Step step;
  if (child(*loc.value, segment, where, step) == nullptr) {
    throw_missing(*loc.value, segment, where);
  }
  Value& container = mutable_value(loc);
  if (container.is_map()) {
    container.as_map().erase(std::get<std::string>(step));
  } else {
    Value::List& list = container.as_list();
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(std::get<std::size_t>(step)));
  }
}

namespace {

// A key as ls prints it: as it is, unless that would not be one plain line (empty, a control
// character such as a newline, or a leading double quote, which would read as JSON); then as a
// JSON string, whose escapes a PATH in double quotes takes.
std::string listed_key(const std::string& key) {
  bool plain =
      !key.empty() && key.front() != '"' && std::none_of(key.begin(), key.end(), [](char c) {
        auto b = static_cast<unsigned char>(c);
        return b < 0x20 || b == 0x7f;
      });
  return plain ? key : to_json(Value(key));
}

}  // namespace

void ShellSession::ls(std::string_view args, std::ostream& out) {
  Path path = args.empty() ? Path{} : next_path(args, "ls");
  no_more(args, "ls [PATH]");
  Location loc = resolve(conn_, path, path.segments.size(), !path.trailing_slash);
  if (path.trailing_slash) follow_slash(conn_, loc, path);
  if (loc.value->is_map()) {
    for (const auto& [key, value] : loc.value->as_map())
      out << listed_key(key) << "\n";
  } else if (loc.value->is_list()) {
    for (std::size_t i = 0; i < loc.value->as_list().size(); ++i)
      out << i << "\n";
  } else {
    throw_not_container(*loc.value, path_text(path));
  }
}

void ShellSession::info(std::ostream& out) {
  std::uint64_t last_csn = db_.store().load({}).csn;
  out << "store: " << store_name_ << "\n";
  if (auto* file = dynamic_cast<FileStore*>(&db_.store())) {
    FileStoreInfo fi = file->info();
    out << fmt::format(
        "path: {}\n"
        "fsync policy: {}\n"
        "objects: {}\n"
        "file bytes: {}\n"
        "garbage bytes (estimate): {}\n",
        fi.path, to_string(fi.fsync), fi.objects, fi.file_bytes, fi.garbage_bytes);
  }
  out << fmt::format(
      "last csn: {}\n"
      "snapshot csn: {}\n"
      "objects cached: {}\n"
      "uncommitted changes: {}\n",
      last_csn, conn_.snapshot_csn(), conn_.cached_objects(), conn_.has_changes() ? "yes" : "no");
}

}  // namespace cairn::cli
