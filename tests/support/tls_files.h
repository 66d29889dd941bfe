// TLS test material: a CA, another CA, and a server certificate for 127.0.0.1 signed by the
// first, made with the openssl command in a temporary directory.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace cairn::testing {

class TlsFiles {
 public:
  TlsFiles() {
    auto run = [](const std::vector<std::string>& args) {
      ProcessResult r = run_process(args);
      if (r.exit_code != 0) throw std::runtime_error("openssl failed: " + r.err);
    };
    for (const char* ca : {"ca", "other_ca"}) {
      run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
           "-subj", std::string("/CN=") + ca, "-keyout", dir.file(std::string(ca) + ".key"), "-out",
           dir.file(std::string(ca) + ".pem")});
    }
    run({"/usr/bin/openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key(), "-out", dir.file("server.csr")});
    write_file(dir.file("ext.cnf"), "subjectAltName=IP:127.0.0.1\n");
    run({"/usr/bin/openssl", "x509", "-req", "-in", dir.file("server.csr"), "-CA",
         dir.file("ca.pem"), "-CAkey", dir.file("ca.key"), "-CAcreateserial", "-days", "2",
         "-extfile", dir.file("ext.cnf"), "-out", cert()});
  }
  std::string cert() const { return dir.file("server.pem"); }
  std::string key() const { return dir.file("server.key"); }
  std::string ca() const { return dir.file("ca.pem"); }
  std::string other_ca() const { return dir.file("other_ca.pem"); }
  TempDir dir;
};

}  // namespace cairn::testing
