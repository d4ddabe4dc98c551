#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cstdio>
#include <filesystem>

#include "bitnet/error.h"

namespace bitnet::server {
namespace {

using nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

// The metrics label for a path: known routes by name, everything else "other", so clients
// cannot grow the label set.
std::string route_label(const std::string& path) {
  for (const char* route :
       {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}) {
    if (path == route) return route;
  }
  return "other";
}

// OpenAI-style bodies for errors httplib answers itself (unknown route, oversized body).
json default_error(int status, size_t max_body) {
  switch (status) {
    case 404:
      return error_body("unknown route", "invalid_request_error", {}, "not_found");
    case 405:
      return error_body("method not allowed", "invalid_request_error", {}, "method_not_allowed");
    case 413:
      return error_body("the request body exceeds " + std::to_string(max_body) + " bytes",
                        "invalid_request_error", {}, "request_too_large");
    default:
      return error_body("HTTP status " + std::to_string(status),
                        status >= 500 ? "server_error" : "invalid_request_error");
  }
}

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Debian's cpp-httplib 0.11 is built with a listen backlog of 5: a burst of clients overflows
// it and some connections are dropped. Listening again on the bound socket raises the backlog.
class HttpServer : public httplib::Server {
 public:
  void raise_backlog() { ::listen(svr_sock_, SOMAXCONN); }
};

}  // namespace

// Counts a generation request until its response, streamed or not, is fully written.
struct Server::InFlight {
  Server& server;
  explicit InFlight(Server& s) : server(s) {
    std::lock_guard lock(server.mutex_);
    ++server.in_flight_;
  }
  ~InFlight() {
    {
      std::lock_guard lock(server.mutex_);
      --server.in_flight_;
    }
    server.cv_.notify_all();
  }
};

Server::Server(ServerOptions options) : options_(std::move(options)) {
  if (options_.model_id.empty()) {
    options_.model_id = std::filesystem::path(options_.model_path).lexically_normal().filename();
    if (options_.model_id.empty()) {
      options_.model_id =
          std::filesystem::path(options_.model_path).lexically_normal().parent_path().filename();
    }
    if (options_.model_id.empty()) options_.model_id = "bitnet";
  }
  started_at_ = unix_seconds();
}

Server::~Server() {
  drain_and_stop(std::chrono::seconds(5));
}

std::shared_ptr<Server::InFlight> Server::enter() {
  return std::make_shared<InFlight>(*this);
}

std::optional<std::string> Server::load_error() const {
  std::lock_guard lock(mutex_);
  return load_error_;
}

bool Server::wait_loaded(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return load_done_; });
}

const char* Server::kernels() const {
  return ready() ? engine_->kernels() : "";
}
int Server::n_threads() const {
  return ready() ? engine_->n_threads() : 0;
}

int Server::start() {
  auto http = std::make_unique<HttpServer>();
  // Every waiting or streaming request holds an HTTP thread, so there is one for each slot and
  // queue place, plus spares for /health, /metrics and refusals.
  const size_t threads =
      static_cast<size_t>(options_.engine.n_slots + options_.engine.max_queue + 8);
  http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http->set_payload_max_length(options_.max_body_bytes);
  http->set_keep_alive_timeout(5);
  http->set_read_timeout(30);

  int port = options_.port;
  if (port == 0) {
    port = http->bind_to_any_port(options_.host);
    if (port < 0) throw Error("cannot bind " + options_.host + " to a free port");
  } else if (!http->bind_to_port(options_.host, port)) {
    throw Error("cannot bind " + options_.host + ":" + std::to_string(port) +
                " (in use, or not an address of this machine)");
  }
  http->raise_backlog();
  http_ = std::move(http);
  if (options_.replica_name.empty()) {
    options_.replica_name = options_.host + ":" + std::to_string(port);
  }
  http_->set_default_headers(
      {{"Access-Control-Allow-Origin", "*"}, {"X-Bitnet-Replica", options_.replica_name}});
  install_routes();
  listener_ = std::thread([this] { http_->listen_after_bind(); });
  loader_ = std::thread([this] { load(); });
  return port;
}

void Server::load() {
  try {
    auto tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(options_.model_path));
    LoadOptions load_options = options_.load;
    load_options.n_threads = options_.engine.n_threads;
    model_ = Model::load(options_.model_path, load_options);
    for (const std::string& w : model_->warnings())
      std::fprintf(stderr, "warning: %s\n", w.c_str());
    tokenizer_ = std::move(tokenizer);
    stop_ids_ = default_stop_ids(model_->config(), *tokenizer_);
    if (!options_.chat_template.empty()) {
      chat_format_ = parse_chat_format(options_.chat_template);
    } else if (auto recognized = recognize_chat_template(tokenizer_->chat_template())) {
      chat_format_ = *recognized;
    } else {
      std::fprintf(stderr,
                   "warning: unknown or missing chat_template; chat uses the bitnet "
                   "format (choose with --chat-template)\n");
    }
    if (const auto bos = tokenizer_->bos_id()) bos_text_ = tokenizer_->token_bytes(*bos);
    engine_ = std::make_unique<BatchEngine>(model_, *tokenizer_, options_.engine, &metrics_);
    const int ctx = engine_->context_length();
    max_prompt_tokens_ =
        options_.max_prompt_tokens > 0 ? std::min(options_.max_prompt_tokens, ctx - 1) : ctx - 1;
    max_tokens_limit_ =
        options_.max_tokens_limit > 0 ? std::min(options_.max_tokens_limit, ctx) : ctx;
    ready_.store(true, std::memory_order_release);
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    load_error_ = e.what();
  }
  {
    std::lock_guard lock(mutex_);
    load_done_ = true;
  }
  cv_.notify_all();
}

void Server::drain_and_stop(std::chrono::milliseconds timeout) {
  if (stopped_ || !http_) return;
  stopped_ = true;
  draining_ = true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (loader_.joinable()) loader_.join();
  if (engine_) {
    engine_->close();
    engine_->wait_idle(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
  }
  {
    // Running streams have finished generating; wait for their last bytes to be written.
    std::unique_lock lock(mutex_);
    cv_.wait_until(lock, deadline, [&] { return in_flight_ == 0; });
  }
  http_->stop();
  if (listener_.joinable()) listener_.join();
  engine_.reset();
}

bool Server::authorized(const httplib::Request& req, httplib::Response& res) const {
  if (options_.api_key.empty()) return true;
  if (req.get_header_value("Authorization") == "Bearer " + options_.api_key) return true;
  send_json(res, 401,
            error_body("Incorrect or missing API key; send 'Authorization: Bearer <key>'",
                       "invalid_request_error", {}, "invalid_api_key"));
  return false;
}

void Server::install_routes() {
  httplib::Server& s = *http_;
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.count_request(route_label(req.path), res.status);
    if (options_.log_requests) {
      std::fprintf(stderr, "%s %s %s -> %d\n", req.remote_addr.c_str(), req.method.c_str(),
                   req.path.c_str(), res.status);
    }
  });
  s.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(dump_json(default_error(res.status, options_.max_body_bytes)),
                      "application/json");
    }
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_json(res, 500, error_body(message, "server_error"));
      });
  // CORS preflight for browser clients.
  s.Options(".*", [](const httplib::Request&, httplib::Response& res) {
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "86400");
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (ready() && !draining_) {
      send_json(res, 200, {{"status", "ok"}});
    } else if (const auto error = load_error()) {
      send_json(res, 503, {{"status", "error"}, {"error", *error}});
    } else {
      send_json(res, 503, {{"status", draining_ ? "draining" : "loading"}});
    }
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::optional<EngineStats> stats;
    if (ready() && engine_) stats = engine_->stats();
    res.set_content(metrics_.render(stats ? &*stats : nullptr, ready()),
                    "text/plain; version=0.0.4");
  });
  s.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json model = {{"id", options_.model_id},
                  {"object", "model"},
                  {"created", started_at_},
                  {"owned_by", "bitnet"}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(Endpoint::chat, req, res);
  });
  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_completion(Endpoint::completion, req, res);
  });
}

}  // namespace bitnet::server
