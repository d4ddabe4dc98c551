// `bitnet serve` as a process: SIGTERM drains, the official OpenAI Node client works against
// it, and two replicas behind nginx (deploy/nginx.conf) alternate, stream unbuffered and
// survive one replica being killed.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>

#include "server/sse_client.h"
#include "server_test_util.h"

namespace bitnet {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using test::ServeProcess;

const std::filesystem::path kSourceDir = BITNET_SOURCE_DIR;

std::vector<std::string> serve_args(const std::filesystem::path& model,
                                    std::vector<std::string> extra = {}, int context = 1024) {
  std::vector<std::string> args = {
      "-m", model.string(), "--port", "0", "-c", std::to_string(context), "-t", "1", "-P", "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// A port that was free a moment ago (for nginx, which cannot report an ephemeral one).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct TimedStream {
  int status = 0;
  bool done = false;
  std::string text;
  std::vector<double> event_seconds;  // arrival time of each text event
};

TimedStream timed_stream(int port, int max_tokens) {
  TimedStream out;
  const json body = {{"prompt", "Once upon a time"},
                     {"max_tokens", max_tokens},
                     {"seed", 1},
                     {"temperature", 0},
                     {"stream", true}};
  const auto start = std::chrono::steady_clock::now();
  const auto r = server::post_sse(
      "127.0.0.1", port, "/v1/completions", body.dump(), [&](const std::string& data) {
        if (data == "[DONE]") {
          out.done = true;
          return true;
        }
        out.text += json::parse(data)["choices"][0]["text"].get<std::string>();
        out.event_seconds.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        return true;
      });
  out.status = r.status;
  return out;
}

TEST(ServeProcess, SigtermFinishesRunningStreamsRefusesNewOnesAndExitsZero) {
  ServeProcess serve(serve_args(test::slow_model()));
  ASSERT_TRUE(serve.wait_ready()) << serve.log();
  const int port = serve.port();
  std::atomic<bool> first_text{false};
  TimedStream stream;
  std::thread client([&] {
    const json body = {{"prompt", "Once upon a time"},
                       {"max_tokens", 600},
                       {"seed", 1},
                       {"temperature", 0},
                       {"stream", true}};
    const auto r = server::post_sse("127.0.0.1", port, "/v1/completions", body.dump(),
                                    [&](const std::string& data) {
                                      if (data == "[DONE]") stream.done = true;
                                      first_text = true;
                                      return true;
                                    });
    stream.status = r.status;
  });
  ASSERT_TRUE(test::eventually([&] { return first_text.load(); }));
  serve.signal(SIGTERM);
  // While the stream drains, new work and the readiness probe get 503.
  EXPECT_TRUE(test::eventually([&] { return test::http_get(port, "/health").status == 503; }));
  const auto refused = test::http_post(port, "/v1/completions", R"({"prompt": "x"})");
  EXPECT_TRUE(refused.status == 503 || refused.status == 0) << refused.body;
  client.join();
  EXPECT_EQ(stream.status, 200);
  EXPECT_TRUE(stream.done) << "the running stream was cut off";
  EXPECT_EQ(serve.wait_exit(20s), 0) << serve.log();
}

TEST(ServeProcess, OfficialOpenAINodeClient) {
  const auto dir = kSourceDir / "tests/server_client";
  if (!std::filesystem::exists(dir / "node_modules/openai") ||
      std::system("node --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node or " << dir / "node_modules/openai"
                 << " missing (npm ci there)";
  }
  ServeProcess serve(serve_args(test::tiny_model(), {}, 256));
  ASSERT_TRUE(serve.wait_ready()) << serve.log();
  const std::string command = "node '" + (dir / "client_test.mjs").string() +
                              "' http://127.0.0.1:" + std::to_string(serve.port()) + " 2>&1";
  const test::ShellResult client = test::shell_output(command);
  EXPECT_EQ(client.exit_code, 0) << client.output;
  EXPECT_NE(client.output.find("all checks passed"), std::string::npos) << client.output;
}

// The README's Python example: the standard library's urllib, chat streamed and not.
TEST(ServeProcess, PythonStandardLibraryClient) {
  if (std::system("python3 --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  ServeProcess serve(serve_args(test::tiny_model(), {}, 256));
  ASSERT_TRUE(serve.wait_ready()) << serve.log();
  const std::string command = "python3 '" +
                              (kSourceDir / "tests/server_client/client_test.py").string() +
                              "' http://127.0.0.1:" + std::to_string(serve.port()) + " 2>&1";
  const test::ShellResult client = test::shell_output(command);
  EXPECT_EQ(client.exit_code, 0) << client.output;
  EXPECT_NE(client.output.find("all checks passed"), std::string::npos) << client.output;
}

// nginx from deploy/nginx.conf, its addresses replaced, in a temporary prefix.
class Nginx {
 public:
  Nginx(int listen_port, int replica_a, int replica_b) {
    std::string conf = test::read_file(kSourceDir / "deploy/nginx.conf");
    replace(conf, "127.0.0.1:8080", "127.0.0.1:" + std::to_string(listen_port));
    replace(conf, "127.0.0.1:8081", "127.0.0.1:" + std::to_string(replica_a));
    replace(conf, "127.0.0.1:8082", "127.0.0.1:" + std::to_string(replica_b));
    std::filesystem::create_directories(dir_ / "logs");
    std::filesystem::create_directories(dir_ / "tmp");
    test::write_file(dir_ / "nginx.conf", conf);
    pid_ = test::spawn_with_log({binary(), "-p", dir_.path().string() + "/", "-e", "stderr", "-c",
                                 (dir_ / "nginx.conf").string()},
                                dir_ / "stderr.log");
  }
  ~Nginx() {
    ::kill(pid_, SIGQUIT);
    if (!test::eventually([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, 5s)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string log() const {
    return test::read_file(dir_ / "stderr.log") + test::read_file(dir_ / "logs/error.log");
  }
  static std::string binary() {
    for (const char* path : {"/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"}) {
      if (::access(path, X_OK) == 0) return path;
    }
    return {};
  }

 private:
  static void replace(std::string& text, const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  }
  test::TempDir dir_;
  pid_t pid_ = -1;
};

TEST(ServeProcess, TwoReplicasBehindNginx) {
  if (Nginx::binary().empty()) GTEST_SKIP() << "nginx is not installed (apt-get install nginx)";
  ServeProcess a(serve_args(test::slow_model(), {"--replica-name", "a"}));
  ServeProcess b(serve_args(test::slow_model(), {"--replica-name", "b"}));
  ASSERT_TRUE(a.wait_ready()) << a.log();
  ASSERT_TRUE(b.wait_ready()) << b.log();
  const int port = free_port();
  Nginx nginx(port, a.port(), b.port());
  ASSERT_TRUE(test::eventually([&] { return test::http_get(port, "/health").status == 200; }))
      << nginx.log();

  // Round-robin: consecutive requests alternate between the replicas.
  std::vector<std::string> replicas;
  for (int i = 0; i < 6; ++i) {
    const auto r = test::http_post(port, "/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})");
    ASSERT_EQ(r.status, 200) << r.body;
    replicas.push_back(r.header("X-Bitnet-Replica"));
  }
  for (size_t i = 0; i < replicas.size(); ++i) {
    EXPECT_TRUE(replicas[i] == "a" || replicas[i] == "b") << replicas[i];
    if (i > 0) {
      EXPECT_NE(replicas[i], replicas[i - 1]) << "request " << i;
    }
  }

  // Events pass through as they are generated, not when the response ends.
  const TimedStream s = timed_stream(port, 500);
  EXPECT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  ASSERT_GE(s.event_seconds.size(), 10u);
  EXPECT_LT(s.event_seconds.front() + 0.1, s.event_seconds.back())
      << "first event at " << s.event_seconds.front() << " s, last at " << s.event_seconds.back()
      << " s";

  // With one replica killed, every request still succeeds (nginx retries the other).
  a.signal(SIGKILL);
  a.wait_exit(5s);
  for (int i = 0; i < 4; ++i) {
    const auto r = test::http_post(port, "/v1/completions", R"({"prompt": "Hi", "max_tokens": 2})");
    EXPECT_EQ(r.status, 200) << r.body << nginx.log();
    EXPECT_EQ(r.header("X-Bitnet-Replica"), "b");
  }
}

}  // namespace
}  // namespace bitnet
