// bitnet serve: an OpenAI-compatible HTTP server with continuous batching.
#include <signal.h>

#include <cstdio>
#include <ctime>

#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"
#include "server/http_server.h"

namespace bitnet::cli {
namespace {

struct ServeArgs {
  server::ServerOptions server;
  int drain_seconds = 60;
  bool no_prompt_cache = false;
  FormatArgs formats;
};

// Waits for SIGTERM or SIGINT (blocked in every thread, so they queue for sigtimedwait), then
// drains: new requests get 503 while queued and running ones finish.
int serve(ServeArgs& args) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client that disconnects mid-write must not kill the server.
  signal(SIGPIPE, SIG_IGN);

  args.server.engine.prompt_cache = !args.no_prompt_cache;
  server::Server server(args.server);
  const int port = server.start();
  std::fprintf(stderr, "bitnet serve: listening on http://%s:%d, loading %s\n",
               args.server.host.c_str(), port, args.server.model_path.c_str());
  bool announced = false;
  for (;;) {
    const timespec tick{0, 200'000'000};
    const int signal_number = sigtimedwait(&stop_signals, nullptr, &tick);
    if (signal_number == SIGTERM || signal_number == SIGINT) break;
    if (const auto error = server.load_error()) {
      std::fprintf(stderr, "bitnet: error: %s\n", error->c_str());
      server.drain_and_stop(std::chrono::seconds(0));
      return 1;
    }
    if (server.ready() && !announced) {
      announced = true;
      std::fprintf(stderr, "bitnet serve: ready: model '%s', %d slots, %d threads, %s kernels\n",
                   server.model_id().c_str(), args.server.engine.n_slots, server.n_threads(),
                   server.kernels());
    }
  }
  std::fprintf(stderr, "bitnet serve: draining\n");
  server.drain_and_stop(std::chrono::seconds(args.drain_seconds));
  std::fprintf(stderr, "bitnet serve: stopped\n");
  return 0;
}

}  // namespace

Action add_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  server::ServerOptions& o = args->server;
  o.engine.n_slots = 4;
  CLI::App* cmd = app.add_subcommand("serve", "Serve an OpenAI-compatible HTTP API");
  add_model_option(*cmd, o.model_path);
  cmd->add_option("--host", o.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o.port, "Port; 0 picks a free one")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel,-P", o.engine.n_slots, "Sequences decoded together (KV slots)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("-c,--ctx-size", o.engine.context_length,
                  "Context per slot (default: the model's max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", o.engine.n_threads, "Threads (default: physical cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-b,--batch-size", o.engine.prefill_chunk,
                  "Prompt tokens per forward pass (longer prompts run in chunks)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-prompt-cache", args->no_prompt_cache,
                "Prefill every prompt in full instead of reusing a free slot's cache entries for "
                "the part of the prompt they hold");
  cmd->add_option("--queue", o.engine.max_queue,
                  "Requests that may wait for a slot; more get 503 with Retry-After")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' on /v1/*");
  cmd->add_option("--alias", o.model_id, "Model name to serve (default: the directory's name)");
  cmd->add_option("--max-body", o.max_body_bytes, "Largest request body in bytes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-prompt-tokens", o.max_prompt_tokens,
                  "Longest prompt in tokens (default: context - 1)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", o.max_tokens_limit,
                  "Largest max_tokens a request may ask for (default: the context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--replica-name", o.replica_name,
                  "Value of the X-Bitnet-Replica header (default: host:port)");
  cmd->add_option("--drain-timeout", args->drain_seconds,
                  "Seconds SIGTERM waits for running requests")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temp", o.default_sampling.temperature,
                  "Default temperature for requests without one")
      ->capture_default_str();
  cmd->add_option("--top-k", o.default_sampling.top_k, "Default top-k; 0 disables")
      ->capture_default_str();
  cmd->add_option("--top-p", o.default_sampling.top_p, "Default top-p; 1 disables")
      ->capture_default_str();
  cmd->add_option("--min-p", o.default_sampling.min_p, "Default min-p; 0 disables")
      ->capture_default_str();
  cmd->add_option("--chat-template", o.chat_template,
                  "Chat format: bitnet or llama3 (default: recognized from the tokenizer)")
      ->check(CLI::IsMember({"bitnet", "llama3"}));
  add_format_options(*cmd, args->formats);
  cmd->add_flag("--log-requests", o.log_requests, "Log one line per request on stderr");
  return [args] {
    args->server.model_path = resolve_model_path(args->server.model_path).string();
    SessionOptions session;
    args->formats.apply(args->server.load, session);
    args->server.engine.kv_cache = session.kv_cache;
    args->server.default_sampling.validate();
    return serve(*args);
  };
}

}  // namespace bitnet::cli
