// The tethys "registry objects" walk-through in C++, step by step: repositories per type and per
// instance, save with dependencies to a depth, load with and without the identity cache,
// refresh, list, delete that keeps the local copy, and TTL locks with their timings. Run by the
// test suite: exits nonzero if anything is not as the walk-through says.
//
// The locks differ from tethys on purpose: a blocking lock with a wait_timeout gives up instead
// of taking the lock over, and lock_context never releases a lock it did not take, so the last
// lock() waits for the 5 s lock to expire (about 6 s in) instead of returning at 2 s.
#include <cairn/record.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace tethys {

struct Pipe : cairn::Record<Pipe> {
  std::string name;
};
CAIRN_TYPE(Pipe, "tethys.Pipe", name);

// The "Zero" generation: a later, incompatible Network would say s.generation(1).
struct Network : cairn::Record<Network> {
  std::vector<cairn::Pointer<Pipe>> pipes;
  static void describe(cairn::Schema<Network>& s) { s.generation(0); }

  std::vector<std::string> pipes_list() const {
    std::vector<std::string> ids;
    for (const auto& pipe : pipes)
      ids.push_back(pipe->id());
    return ids;
  }
};
CAIRN_TYPE(Network, "tethys.Network", pipes);

}  // namespace tethys

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

using Clock = std::chrono::steady_clock;

// Seconds since `start` are `want`, give or take 100 ms.
void expect_elapsed(Clock::time_point start, double want, const char* what) {
  double got = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("     %.3f s (want %.1f s)\n", got, want);
  expect(got > want - 0.1 && got < want + 0.1, what);
}

void repositories() {
  using tethys::Network;
  // default: every type uses one in-memory repository (tethys's LocalRepository)
  auto shared = cairn::Repository::memory();
  cairn::RepositoryRegistry::process().set_default(shared);  // ZeroRegistrableObject.REPOSITORY
  auto net = Network::create();
  expect(net->repository() == shared, "the default repository is the one set for all types");

  auto for_networks = cairn::Repository::memory();
  Network::set_type_repository(for_networks);  // ZeroNetwork.REPOSITORY = repo
  expect(Network::create()->repository() == for_networks, "a type's own repository wins");

  auto local = cairn::Repository::memory();  // ZeroNetwork(_repo=LocalRepository())
  auto own = Network::create({}, {.repository = local});
  expect(Network::try_load(own->id()) == nullptr &&
             Network::load(own->id(), {.repository = local}) == own,
         "an instance's repository wins over its type's");
  Network::set_type_repository(nullptr);
  cairn::RepositoryRegistry::process().set_default(nullptr);
}

void save_load_refresh_list_delete() {
  using tethys::Network;
  using tethys::Pipe;
  using List = std::vector<std::string>;

  auto obj = Network::make({}, {.id = "test_net"});
  obj->pipes = {Pipe::make({}, {.id = "test_pipe"})};
  obj->save({.dependencies = true, .depth = 1});  // saves the network and the pipe
  expect(Pipe::try_load("test_pipe") != nullptr, "the pipe was saved as a dependency");
  expect(obj->pipes_list() == List{"test_pipe"}, "obj.pipes_list == [\"test_pipe\"]");

  obj->pipes.clear();
  expect(obj->pipes_list().empty(), "obj.pipes_list == []");

  expect(Network::load("test_net") == obj, "load(\"test_net\") is obj");
  expect(obj->pipes_list().empty(), "... and keeps the local change");

  expect(Network::load("test_net", {.cache = false}) == obj,
         "load(\"test_net\", with_cache=False) is obj");
  expect(obj->pipes_list() == List{"test_pipe"}, "... read again from the repository");

  obj->pipes.clear();
  expect(obj->refresh() == obj, "refresh() is obj");
  expect(obj->pipes_list() == List{"test_pipe"}, "... read again");

  obj->pipes.clear();
  auto all = Network::list();
  expect(all.size() == 1 && all[0] == obj, "list() == [obj]");
  expect(obj->pipes_list() == List{"test_pipe"}, "... read again");

  obj->pipes.clear();
  expect(obj->remove() == 1, "remove() deletes one stored record");
  expect(obj->refresh() == nullptr, "refresh() after the delete is empty");
  expect(obj->pipes_list().empty(), "the local copy is kept as it was");

  obj->save();  // the local copy can be saved again
  expect(obj->refresh() == obj, "saved again, refresh() is obj");
  expect(obj->pipes_list().empty(), "... with what was saved");
}

void locks() {
  auto start = Clock::now();
  auto obj = tethys::Network::create();
  using std::chrono::seconds;

  expect(obj->lock({.ttl = seconds(1)}), "lock(lock_ttl=1) is True");
  expect(obj->lock({.ttl = seconds(5), .blocking = true}), "lock(blocking=True, lock_ttl=5)");
  expect_elapsed(start, 1, "... after the first lock expired, ~1 s");

  expect(!obj->lock({.blocking = true, .wait_timeout = seconds(1)}),
         "lock(blocking=True, wait_timeout=1) gives up: the held lock is never taken over");
  expect_elapsed(start, 2, "... at ~2 s");

  {
    auto lock_ready = obj->lock_context({.ttl = seconds(5), .blocking = false});
    expect(!lock_ready.acquired(), "lock_context(blocking=False) is not ready");
    expect_elapsed(start, 2, "... at ~2 s");
  }  // leaves the lock it did not take alone

  expect(obj->lock({.blocking = true}), "lock(blocking=True) is True");
  expect_elapsed(start, 6, "... once the 5 s lock expired, ~6 s");
  expect(obj->unlock(), "unlock() releases it");
}

}  // namespace

int main() {
  try {
    repositories();
    save_load_refresh_list_delete();
    locks();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  if (failures != 0) std::printf("%d check(s) failed\n", failures);
  return failures == 0 ? 0 : 1;
}
