#pragma once
// Helpers for the server tests: models, plain HTTP calls, `bitnet serve` child processes.

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bitnet/generate.h"
#include "test_util.h"

namespace bitnet::test {

// Milliseconds per token and a long context, so generation is still running when a test acts
// on it (disconnects, SIGTERM, streaming through a proxy). Packed, so the file stays small.
inline RandomModelSpec slow_spec() {
  RandomModelSpec spec = RandomModelSpec::preset("tiny");
  spec.variant = QuantMode::offline;
  spec.hidden_dim = 512;
  spec.ffn_dim = 1536;
  spec.n_layers = 16;
  spec.n_heads = 8;
  spec.n_kv_heads = 4;
  spec.max_seq_len = 2048;
  spec.seed = 3;
  return spec;
}

inline std::filesystem::path tiny_model() {
  return cached_model("server_tiny", tiny_spec());
}
inline std::filesystem::path slow_model() {
  return cached_model("server_slow", slow_spec());
}

// What a lone generate() on a fresh Session produces: the reference for batched output.
inline GenerateResult lone_generate(const std::shared_ptr<const Model>& model,
                                    const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                                    const GenerateOptions& options, int context) {
  SessionOptions session_options;
  session_options.context_length = context;
  session_options.n_threads = 1;
  Session session(model, session_options);
  return generate(session, tokenizer, prompt, options);
}

struct HttpReply {
  int status = 0;  // 0: no response
  std::string body;
  httplib::Headers headers;
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
  std::string header(const std::string& key) const {
    auto it = headers.find(key);
    return it == headers.end() ? std::string() : it->second;
  }
};

inline HttpReply to_reply(const httplib::Result& r) {
  HttpReply reply;
  if (r) {
    reply.status = r->status;
    reply.body = r->body;
    reply.headers = r->headers;
  }
  return reply;
}

inline HttpReply http_get(int port, const std::string& path, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30);
  return to_reply(client.Get(path.c_str(), headers));
}

inline HttpReply http_post(int port, const std::string& path, const std::string& body,
                           const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30);
  return to_reply(client.Post(path.c_str(), headers, body, "application/json"));
}

// Polls until pred() holds or the timeout passes; returns whether it held.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// A gauge's or counter's value from /metrics text (the first line that starts with name).
inline std::optional<double> metric_value(const std::string& metrics, const std::string& name) {
  size_t at = 0;
  while ((at = metrics.find(name, at)) != std::string::npos) {
    const bool line_start = at == 0 || metrics[at - 1] == '\n';
    const size_t value_at = at + name.size();
    if (line_start && value_at < metrics.size() && metrics[value_at] == ' ')
      return std::stod(metrics.substr(value_at + 1));
    at = value_at;
  }
  return std::nullopt;
}

// Starts the program args[0] with its arguments as a child process, stdout and stderr to `log`.
inline pid_t spawn_with_log(std::vector<std::string> args, const std::filesystem::path& log) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_path = log.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// `bitnet serve ARGS` as a child process (pass --port 0); the port is read from its log.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) : log_(dir_ / "serve.log") {
    args.insert(args.begin(), {BITNET_CLI_PATH, "serve"});
    pid_ = spawn_with_log(std::move(args), log_);
  }
  ~ServeProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // The listening port, once logged (0 on timeout).
  int port() {
    static const std::regex listening("listening on http://[^:]+:([0-9]+)");
    if (port_ == 0) {
      eventually([&] {
        std::smatch m;
        const std::string text = read_file(log_);
        if (std::regex_search(text, m, listening)) port_ = std::stoi(m[1]);
        return port_ != 0;
      });
    }
    return port_;
  }
  // Waits for /health to answer 200; false on timeout or if the server exits first.
  bool wait_ready() {
    const int p = port();
    return p != 0 &&
           eventually([&] { return has_exited() || http_get(p, "/health").status == 200; }) &&
           !exited_;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  // The exit code, or -1 if it has not exited within the timeout (or died by a signal).
  int wait_exit(std::chrono::milliseconds timeout) {
    if (!eventually([&] { return has_exited(); }, timeout)) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }
  std::string log() const { return read_file(log_); }
  pid_t pid() const { return pid_; }
  bool has_exited() {
    if (!exited_) exited_ = ::waitpid(pid_, &status_, WNOHANG) == pid_;
    return exited_;
  }

 private:
  TempDir dir_;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace bitnet::test
