// POST /v1/chat/completions and /v1/completions: validation, tokenization, submission to the
// engine, and the JSON or server-sent-events answer.
#include <httplib.h>

#include <algorithm>
#include <iterator>
#include <random>

#include "bitnet/error.h"
#include "server/http_server.h"

namespace bitnet::server {
namespace {

using nlohmann::json;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump_json(e.body()), "application/json");
}

ApiError overloaded(const std::string& message) {
  return ApiError(503, message, "server_error", {}, "server_overloaded");
}

// How long the HTTP thread waits for new text before checking the connection again.
constexpr std::chrono::milliseconds kPollInterval{100};

}  // namespace

void Server::handle_completion(Endpoint endpoint, const httplib::Request& req,
                               httplib::Response& res) {
  if (!authorized(req, res)) return;
  auto in_flight = enter();
  try {
    if (draining_) throw overloaded("the server is shutting down");
    if (!ready()) {
      if (const auto error = load_error())
        throw ApiError(503, "the model failed to load: " + *error, "server_error");
      res.set_header("Retry-After", "5");
      throw ApiError(503, "the model is still loading", "server_error", {}, "model_loading");
    }
    const CompletionRequest request =
        parse_completion_request(endpoint, req.body, options_.default_sampling);
    if (!request.model.empty() && request.model != options_.model_id && request.model != "bitnet") {
      throw ApiError(404,
                     "the model '" + request.model + "' does not exist; this server serves '" +
                         options_.model_id + "'",
                     "invalid_request_error", "model", "model_not_found");
    }
    const bool chat = endpoint == Endpoint::chat;
    // The chat transcript carries its own BOS.
    const std::vector<int32_t> prompt_ids =
        chat ? tokenizer_->encode(render_chat(chat_format_, bos_text_, request.messages, true),
                                  false)
             : tokenizer_->encode(request.prompt, true);
    const char* prompt_param = chat ? "messages" : "prompt";
    const int n_prompt = static_cast<int>(prompt_ids.size());
    if (n_prompt == 0) {
      throw ApiError(400, "the prompt is empty", "invalid_request_error", prompt_param,
                     "invalid_value");
    }
    if (n_prompt > max_prompt_tokens_) {
      throw ApiError(400,
                     "the prompt has " + std::to_string(n_prompt) + " tokens; at most " +
                         std::to_string(max_prompt_tokens_) + " fit in the context of " +
                         std::to_string(engine_->context_length()),
                     "invalid_request_error", prompt_param, "context_length_exceeded");
    }
    if (request.max_tokens && *request.max_tokens > max_tokens_limit_) {
      throw ApiError(400, "'max_tokens' may be at most " + std::to_string(max_tokens_limit_),
                     "invalid_request_error", "max_tokens", "invalid_value");
    }

    EngineRequest job;
    job.prompt_ids = prompt_ids;
    // Without max_tokens, generation runs until a stop or the slot's context is full.
    job.options.max_new_tokens = request.max_tokens.value_or(max_tokens_limit_);
    job.options.sampling = request.sampling;
    if (!request.seed_given) job.options.sampling.seed = std::random_device{}();
    job.options.stop_ids = stop_ids_;
    job.options.stop_strings = request.stop;
    job.logprobs = request.logprobs;
    BatchEngine::Submitted submitted = engine_->submit(std::move(job));
    if (submitted.rejection != BatchEngine::Rejection::none) {
      res.set_header("Retry-After", "1");
      throw overloaded(submitted.rejection == BatchEngine::Rejection::closed
                           ? "the server is shutting down"
                           : "the request queue is full; retry later");
    }

    const ResponseIds ids =
        make_response_ids(endpoint, request.model.empty() ? options_.model_id : request.model);
    if (request.stream) {
      stream_response(std::move(submitted.stream), ids, request.include_usage,
                      request.logprobs >= 0, std::move(in_flight), res);
      return;
    }
    const RequestStream::Update result = submitted.stream->wait_all();
    if (!result.error.empty()) throw ApiError(500, result.error, "server_error");
    const json logprobs =
        request.logprobs >= 0 ? logprobs_json(endpoint, result.logprobs, *tokenizer_) : nullptr;
    res.set_content(dump_json(completion_body(ids, result, logprobs)), "application/json");
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const Error& e) {  // the engine's own validation
    send_error(res, ApiError(400, e.what()));
  }
}

void Server::stream_response(std::shared_ptr<RequestStream> stream, const ResponseIds& ids,
                             bool include_usage, bool with_logprobs,
                             std::shared_ptr<InFlight> in_flight, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // nginx: pass events through unbuffered
  struct State {
    bool sent_role;
    // Entries of tokens whose text is still held back (a possible stop string): they go out
    // with the next chunk that has text, or with the last.
    std::vector<TokenLogprob> held;
  };
  auto state = std::make_shared<State>(State{ids.endpoint != Endpoint::chat, {}});
  BatchEngine* engine = engine_.get();
  const Tokenizer* tokenizer = tokenizer_.get();
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, ids, include_usage, with_logprobs, state, tokenizer, in_flight](
          size_t, httplib::DataSink& sink) {
        std::string out;
        if (!state->sent_role) {
          out += sse_event(stream_chunk(ids, "", true, std::nullopt, include_usage));
          state->sent_role = true;
        }
        RequestStream::Update update = stream->poll(kPollInterval);
        std::move(update.logprobs.begin(), update.logprobs.end(), std::back_inserter(state->held));
        auto take_logprobs = [&]() -> json {
          if (!with_logprobs) return nullptr;
          json entries = logprobs_json(ids.endpoint, state->held, *tokenizer);
          state->held.clear();
          return entries;
        };
        if (!update.text.empty()) {
          out += sse_event(
              stream_chunk(ids, update.text, false, std::nullopt, include_usage, take_logprobs()));
        }
        if (update.finished) {
          if (!update.error.empty()) {
            out += sse_event(error_body(update.error, "server_error"));
          } else {
            out += sse_event(stream_chunk(ids, "", false, update.finish_reason, include_usage,
                                          state->held.empty() ? json(nullptr) : take_logprobs()));
            if (include_usage) {
              out += sse_event(stream_usage_chunk(ids, update));
            }
          }
          out += "data: [DONE]\n\n";
        }
        // A failed write means the client went away; returning false ends the response.
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (update.finished) sink.done();
        return true;
      },
      // Runs when the response ends for any reason: a disconnected client's sequence stops
      // and its slot returns to the pool (a no-op once it has finished).
      [engine, stream](bool) { engine->cancel(stream); });
}

}  // namespace bitnet::server
