#pragma once
// bitnet serve: an OpenAI-compatible HTTP server over a BatchEngine.
//
// HTTP worker threads only parse, validate, tokenize and stream; generation runs on the
// engine's scheduler thread. The model loads on a background thread after the socket listens,
// so /health can answer 503 until it is ready.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "bitnet/chat.h"
#include "bitnet/generate.h"
#include "bitnet/model.h"
#include "bitnet/tokenizer.h"
#include "runtime/batch_engine.h"
#include "server/metrics.h"
#include "server/openai_json.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace bitnet::server {

struct ServerOptions {
  std::string model_path;
  std::string model_id;  // the served model name; default: the model directory's name
  std::string host = "127.0.0.1";
  int port = 8080;      // 0 picks a free port
  std::string api_key;  // when set, /v1/* needs "Authorization: Bearer <key>"
  EngineOptions engine;
  LoadOptions load;  // lm_head and ternary formats (a converted file carries its own)
  size_t max_body_bytes = 1 << 20;
  int max_prompt_tokens = 0;  // 0 = the slot's context - 1
  int max_tokens_limit = 0;   // the largest max_tokens accepted; 0 = the slot's context
  SamplingParams default_sampling;
  std::string chat_template;  // bitnet or llama3; default: recognized from the tokenizer
  std::string replica_name;   // the X-Bitnet-Replica header; default host:port
  bool log_requests = false;  // one line per request on stderr
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // drains (briefly) if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, starts listening and starts loading the model; returns the bound port.
  // Throws bitnet::Error when the address cannot be bound.
  int start();
  // Refuses new generation requests (503), lets queued and running ones finish (up to
  // timeout), then stops listening and releases the engine.
  void drain_and_stop(std::chrono::milliseconds timeout);

  bool ready() const { return ready_.load(std::memory_order_acquire); }
  // Set when loading failed; the server then only answers 503.
  std::optional<std::string> load_error() const;
  // Waits until the model is loaded or failed to; false on timeout.
  bool wait_loaded(std::chrono::milliseconds timeout);
  const std::string& model_id() const { return options_.model_id; }
  const char* kernels() const;
  int n_threads() const;

 private:
  // Held by a generation request until its response is fully written (drain waits for none).
  struct InFlight;

  void load();
  void install_routes();
  void handle_completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void stream_response(std::shared_ptr<RequestStream> stream, const ResponseIds& ids,
                       bool include_usage, bool with_logprobs, std::shared_ptr<InFlight> in_flight,
                       httplib::Response& res);
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  std::shared_ptr<InFlight> enter();

  ServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  Metrics metrics_;
  int64_t started_at_ = 0;

  // Written by the loader thread before ready_ is set, read-only afterwards.
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<BatchEngine> engine_;
  std::vector<int32_t> stop_ids_;
  ChatFormat chat_format_ = ChatFormat::bitnet;
  std::string bos_text_;  // the chat transcript's first token, as text
  int max_prompt_tokens_ = 0, max_tokens_limit_ = 0;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};

  mutable std::mutex mutex_;
  std::condition_variable cv_;  // load finished / in-flight count changed
  bool load_done_ = false;
  std::optional<std::string> load_error_;
  int in_flight_ = 0;  // generation requests not yet fully answered

  std::thread listener_, loader_;
  bool stopped_ = false;
};

}  // namespace bitnet::server
