#pragma once
// An in-process `bitnet serve` on an ephemeral loopback port.

#include <gtest/gtest.h>

#include "server/http_server.h"
#include "server_test_util.h"

namespace bitnet::test {

inline server::ServerOptions server_options(const std::filesystem::path& model, int slots = 4) {
  server::ServerOptions o;
  o.model_path = model.string();
  o.port = 0;
  o.engine.n_slots = slots;
  o.engine.context_length = 128;
  o.engine.n_threads = 1;
  return o;
}

class RunningServer {
 public:
  explicit RunningServer(const server::ServerOptions& options) : server_(options) {
    ::signal(SIGPIPE, SIG_IGN);  // writes to clients that went away must not end the test
    port_ = server_.start();
    server_.wait_loaded(std::chrono::seconds(30));
  }
  int port() const { return port_; }
  server::Server& server() { return server_; }
  std::string metrics() const { return http_get(port_, "/metrics").body; }

 private:
  server::Server server_;
  int port_ = 0;
};

}  // namespace bitnet::test
