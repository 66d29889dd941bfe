// Takes a lock on a cairn server and holds it until killed, for the test that kills a lock
// holder (tests/integration/server_test.cc).
//
//   cairn_lock_holder URL NAME TTL_SECONDS
//
// Prints "locked TOKEN" once it holds the lock, then sleeps (at most ten minutes, so that a
// forgotten one ends by itself). Exits 1 if the lock is held by someone else, 2 on an error.
#include <cairn/store.h>

#include <chrono>
#include <exception>
#include <iostream>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: cairn_lock_holder URL NAME TTL_SECONDS\n";
    return 2;
  }
  try {
    auto store = cairn::open(argv[1]);
    cairn::LockRequest request;
    request.name = argv[2];
    request.owner = "holder";
    request.ttl = std::chrono::seconds(std::stoi(argv[3]));
    auto token = store->lock(request);
    if (!token) {
      std::cerr << "the lock is held by someone else\n";
      return 1;
    }
    std::cout << "locked " << *token << std::endl;
    std::this_thread::sleep_for(std::chrono::minutes(10));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  }
}
