// A bank client for the server's invariant test (tests/integration/server_test.cc): run as many
// processes against one `cairn serve`, each moves money between accounts for a while and checks,
// in read-only views and in its own transactions, that the total never changes.
//
//   cairn_bank_client URL CLIENT SECONDS
//
// The database (made by the test) has a root map {"total": T, "accounts": [Ref...], "counters":
// [Ref...]}; each account is {"balance": N} and counters[CLIENT] is {"transfers": N}, which
// only this client writes and every transfer it commits increments. Every transfer is one of
// Database::transaction (ODB style) or a Connection with commit() (Durus style).
//
// Checked: every snapshot sums to T with no negative balance; a view taken after a commit was
// acknowledged sees it (the client's own counter never lags what it committed). Prints
// "ok transfers=N views=V conflicts=C" and exits 0, N being what its counter must hold; on a
// violation prints "VIOLATION: ..." to stderr and exits 1; on any other error (a lost
// connection included) exits 2.
#include <cairn/database.h>
#include <cairn/error.h>
#include <cairn/store.h>
#include <cairn/value.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Violation : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Bank {
  std::int64_t total = 0;
  std::vector<cairn::Ref> accounts;
  cairn::Ref counter;
};

std::int64_t balance(const cairn::Value& account) {
  return account.find("balance")->as_int();
}

std::int64_t transfers(const cairn::Value& counter) {
  return counter.find("transfers")->as_int();
}

// Sums the accounts as `get` reads them and checks the sum and the balances.
template <typename Get>
void check_total(const Bank& bank, Get&& get, const char* where) {
  std::int64_t sum = 0;
  for (const cairn::Ref& ref : bank.accounts) {
    std::int64_t b = balance(get(ref));
    if (b < 0) {
      throw Violation(std::string(where) + ": account " + ref.oid.str() + " has balance " +
                      std::to_string(b));
    }
    sum += b;
  }
  if (sum != bank.total) {
    throw Violation(std::string(where) + ": the accounts sum to " + std::to_string(sum) + ", not " +
                    std::to_string(bank.total));
  }
}

void add(cairn::Value& state, const char* field, std::int64_t delta) {
  cairn::Value& v = state.as_map()[field];
  v = v.as_int() + delta;
}

int run(const std::string& url, std::size_t client, double seconds) {
  cairn::DatabaseOptions options;
  options.max_retries = 20;
  cairn::Database db = cairn::Database::open(url, options);

  Bank bank = db.view([&](cairn::View& v) {
    Bank b;
    auto root = v.root();
    b.total = root.get("total").as_int();
    for (const cairn::Value& ref : root.get("accounts").as_list())
      b.accounts.push_back(ref.as_ref());
    b.counter = root.get("counters").as_list().at(client).as_ref();
    return b;
  });
  std::int64_t committed =
      db.view([&](cairn::View& v) { return transfers(v.get(bank.counter).get()); });

  std::mt19937_64 rng(std::random_device{}() ^ client);
  auto pick = [&] { return rng() % bank.accounts.size(); };
  std::uint64_t views = 0, conflicts = 0;
  cairn::Connection conn = db.connect();
  auto deadline = Clock::now() + std::chrono::duration<double>(seconds);

  auto check_counter = [&](const cairn::Value& counter, const char* where) {
    if (transfers(counter) < committed) {
      throw Violation(std::string(where) + ": counter " + std::to_string(transfers(counter)) +
                      " after " + std::to_string(committed) + " transfers were acknowledged");
    }
  };
  auto check_balance = [](const cairn::Value& account, const char* where) {
    if (balance(account) < 0)
      throw Violation(std::string(where) + ": balance " + std::to_string(balance(account)));
  };

  while (Clock::now() < deadline) {
    std::size_t from = pick(), to = pick();
    while (to == from)
      to = pick();
    std::int64_t amount = 1 + static_cast<std::int64_t>(rng() % 50);
    unsigned what = static_cast<unsigned>(rng() % 10);
    try {
      if (what < 5) {
        // ODB style: retried on conflict; returns once, after the one commit that applied.
        bool moved = db.transaction([&](cairn::Txn& tx) {
          const cairn::Value& a = tx.get(bank.accounts[from]).get();
          check_balance(a, "transaction");
          check_balance(tx.get(bank.accounts[to]).get(), "transaction");
          check_counter(tx.get(bank.counter).get(), "transaction");
          if (balance(a) < amount) return false;
          tx.modify(bank.accounts[from], [&](cairn::Value& s) { add(s, "balance", -amount); });
          tx.modify(bank.accounts[to], [&](cairn::Value& s) { add(s, "balance", amount); });
          tx.modify(bank.counter, [](cairn::Value& s) { add(s, "transfers", 1); });
          return true;
        });
        if (moved) ++committed;
      } else if (what < 8) {
        // A read-only view: sees only whole commits, including every one acknowledged to us.
        ++views;
        db.view([&](cairn::View& v) {
          check_total(
              bank, [&](const cairn::Ref& r) -> const cairn::Value& { return v.get(r).get(); },
              "view");
          check_counter(v.get(bank.counter).get(), "view");
        });
      } else {
        // Durus style: a long-lived connection. Check a snapshot of everything, then start a
        // new transaction (so that the whole snapshot is not in the read set) for a transfer.
        ++views;
        conn.sync();
        check_total(
            bank, [&](const cairn::Ref& r) -> const cairn::Value& { return conn.get(r).get(); },
            "connection");
        check_counter(conn.get(bank.counter).get(), "connection");
        conn.sync();
        cairn::Object a = conn.get(bank.accounts[from]), b = conn.get(bank.accounts[to]);
        cairn::Object counter = conn.get(bank.counter);
        check_balance(a.get(), "connection");
        check_balance(b.get(), "connection");
        if (balance(a.get()) >= amount) {
          add(a.mutate(), "balance", -amount);
          add(b.mutate(), "balance", amount);
          add(counter.mutate(), "transfers", 1);
          conn.commit();
          ++committed;
        }
      }
    } catch (const cairn::ConflictError&) {
      ++conflicts;  // out of retries, or a Connection lost a race: nothing was applied
    }
  }
  std::cout << "ok transfers=" << committed << " views=" << views << " conflicts=" << conflicts
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: cairn_bank_client URL CLIENT SECONDS\n";
    return 2;
  }
  try {
    return run(argv[1], std::stoul(argv[2]), std::stod(argv[3]));
  } catch (const Violation& e) {
    std::cerr << "VIOLATION: " << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  }
}
