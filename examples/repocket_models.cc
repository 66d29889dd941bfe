// repocket's tutorial in C++: the User, Project and Build models with every field kind, create,
// get by id, attribute access by name, delete returning a count, filter with two conditions that
// both count (repocket honoured only the last), order_by("-name"), the self-describing JSON form
// of a record, and appending to a byte stream. Run by the test suite: exits nonzero if anything
// is not as the tutorial says.
//
// With no argument the records live in memory; with a store URL they live there, e.g.
//   example_repocket_models redis://127.0.0.1:6379
// after which `redis-cli --raw HGETALL cairn:repocket.User:40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8`
// shows Ron's fields as plain text (docs/redis-layout.md).
#include <cairn/json.h>
#include <cairn/record.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace models {

struct User : cairn::Record<User> {
  std::string name;
  std::string house_name;
  cairn::Bytes email;
  cairn::Bytes password;
  cairn::Value metadata;  // JSON: any value tree
  static void describe(cairn::Schema<User>& s) {
    s.index("house_name");
    s.field("name").required();
  }
};
CAIRN_TYPE(User, "repocket.User", name, house_name, email, password, metadata);

struct Project : cairn::Record<Project> {
  std::string name;
  cairn::Bytes git_uri;
  cairn::Value metadata;
};
CAIRN_TYPE(Project, "repocket.Project", name, git_uri, metadata);

struct Build : cairn::Record<Build> {
  cairn::Uuid token;                         // AutoUUID
  cairn::Pointer<Project> project;           // Pointer(Project)
  cairn::Timestamp started_at;               // DateTime(auto_now=True)
  std::optional<cairn::Timestamp> ended_at;  // DateTime(null=True)
  cairn::Decimal cost;                       // Decimal
  double duration = 0;                       // Float
  std::int64_t exit_code = 0;                // Integer
  bool passed = false;                       // a bool
  std::vector<std::string> tags;             // a list
  std::map<std::string, std::string> env;    // a map
  cairn::StreamField stdout_log;             // ByteStream
  cairn::StreamField stderr_log;             // ByteStream
  static void describe(cairn::Schema<Build>& s) {
    s.field("token").auto_uuid();
    s.field("started_at").auto_now();
  }
};
CAIRN_TYPE(Build, "repocket.Build", token, project, started_at, ended_at, cost, duration, exit_code,
           passed, tags, env, stdout_log, stderr_log);

}  // namespace models

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

std::vector<std::string> names(const std::vector<std::shared_ptr<models::User>>& users) {
  std::vector<std::string> out;
  for (const auto& u : users)
    out.push_back(u->name);
  return out;
}

void users() {
  using models::User;
  const cairn::Bytes hashed{"$2b$10$hermione42"};
  auto harry = User::create(
      {{"name", "Harry Potter"},
       {"email", cairn::Bytes{"harry@hogwards.uk"}},
       {"house_name", "Gryffindor"},
       {"password", hashed},
       {"metadata", cairn::Value::Map{{"known_tricks", cairn::Value::List{"Protego", "Expelliarmus",
                                                                          "Wingardium Leviosa",
                                                                          "Expecto Patronum"}}}}},
      {.id = "970773fa-4de1-11e5-86f4-6c4008a70392"});
  User::create({{"name", "Ron Weasley"},
                {"house_name", "Gryffindor"},
                {"email", cairn::Bytes{"ron@hogwards.uk"}},
                {"password", hashed},
                {"metadata", cairn::Value::Map{{"known_tricks",
                                                cairn::Value::List{"Protego", "Expelliarmus"}}}}},
               {.id = "40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8"});
  User::create({{"name", "Hermione Granger"},
                {"house_name", "Gryffindor"},
                {"password", cairn::Bytes{"$2b$10$other"}}});
  User::create({{"name", "Draco Malfoy"}, {"house_name", "Slytherin"}, {"password", hashed}});

  // Retrieving an item by its id
  auto loaded = User::load("970773fa-4de1-11e5-86f4-6c4008a70392", {.cache = false});
  expect(loaded == harry, "objects.get(id=...) gives the record");
  expect(loaded->metadata.find("known_tricks")->as_list().size() == 4, "harry.metadata");
  expect(loaded->id() == "970773fa-4de1-11e5-86f4-6c4008a70392", "harry.id");
  expect(loaded->get("name") == cairn::Value("Harry Potter"), "harry['name']");

  // filter with two conditions: each one narrows the result
  auto both = User::find().where("house_name", "Gryffindor").where("password", hashed).all();
  std::size_t house_only = User::find().where("house_name", "Gryffindor").count();
  std::size_t password_only = User::find().where("password", hashed).count();
  std::printf("     house: %zu, password: %zu, both: %zu\n", house_only, password_only,
              both.size());
  expect(both.size() == 2 && house_only == 3 && password_only == 3,
         "filter(house_name=..., password=...) honours both conditions");
  expect(names(both) == std::vector<std::string>{"Harry Potter", "Ron Weasley"},
         "... Harry and Ron");

  // order_by
  auto ordered = User::find().where("house_name", "Gryffindor").order_by("-name").all();
  expect(
      names(ordered) == std::vector<std::string>{"Ron Weasley", "Hermione Granger", "Harry Potter"},
      "filter(...).order_by('-name')");

  // the per-field self-describing form
  std::string text = harry->to_json();
  std::printf("     %s\n", text.c_str());
  cairn::Value json = cairn::from_json(text);
  expect(*json.find("email") == cairn::Value(cairn::Value::Map{
                                    {"type", "bytes"}, {"value", "aGFycnlAaG9nd2FyZHMudWs="}}),
         "to_json() says each field's type: email is bytes");
  expect(User::from_json(text)->name == "Harry Potter", "from_json() reads it back");

  // Deleting a record
  expect(harry->remove() == 1, "harry.delete() == 1");
  expect(User::find().where("house_name", "Gryffindor").count() == 2, "harry is gone");
  expect(harry->name == "Harry Potter", "the local copy is still usable");

  // Fields are checked: a name is required
  bool refused = false;
  try {
    User::create({{"house_name", "Hufflepuff"}});
  } catch (const cairn::InvalidArgument& e) {
    refused = std::string(e.what()).find("repocket.User.name") != std::string::npos;
  }
  expect(refused, "a user without a name is refused, naming the field");
}

void builds() {
  using models::Build;
  using models::Project;
  auto project = Project::create({{"name", "cairn"},
                                  {"git_uri", cairn::Bytes{"git@github.com:cairn/cairn.git"}},
                                  {"metadata", cairn::Value::Map{{"stars", 42}}}});
  auto build = Build::make([&](Build& b) {
    b.project = project;
    b.cost = cairn::Decimal("0.10");
    b.duration = 12.5;
    b.exit_code = 0;
    b.passed = true;
    b.tags = {"nightly"};
    b.env = {{"CC", "gcc"}};
  });
  build->save();
  expect(build->token != cairn::Uuid{}, "AutoUUID filled at save");
  expect(build->started_at.micros > 0, "DateTime(auto_now) filled at save");

  build->append("stdout_log", "compiling...\n");
  build->append("stdout_log", "linking...\n");
  build->append("stderr_log", "warning: none\n");
  auto again = Build::load(build->id(), {.cache = false});
  expect(again->read("stdout_log") == "compiling...\nlinking...\n", "ByteStream APPEND");
  expect(again->read("stderr_log") == "warning: none\n", "a second stream of the same build");
  expect(again->project->name == "cairn", "build.project points to the project");
  expect(again->cost == cairn::Decimal("0.1") && again->cost.str() == "0.10", "Decimal is exact");
  expect(!again->ended_at, "ended_at is null until set");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: %s [STORE-URL]\n", argv[0]);
    return 2;
  }
  try {
    if (argc == 2)
      cairn::RepositoryRegistry::process().set_default(cairn::Repository::open(argv[1]));
    users();
    builds();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  // The store closes here rather than among the process's static destructors.
  cairn::RepositoryRegistry::process().set_default(nullptr);
  if (failures != 0) std::printf("%d check(s) failed\n", failures);
  return failures == 0 ? 0 : 1;
}
