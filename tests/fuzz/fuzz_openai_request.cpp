// Fuzzes the server's request parser (parse_completion_request) on request bodies. The first byte
// picks the endpoint (even: chat, odd: completion); the rest is the body. A body may be refused
// only with an ApiError of a 4xx status whose OpenAI-style error object serializes; an accepted
// one must carry what the scheduler relies on without checking again.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "fuzz_common.h"
#include "server/openai_json.h"

using namespace bitnet;
using namespace bitnet::server;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Endpoint endpoint = data[0] % 2 == 0 ? Endpoint::chat : Endpoint::completion;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  CompletionRequest request;
  try {
    request = parse_completion_request(endpoint, body, SamplingParams{});
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status > 499) fuzz::fail("ApiError status " + std::to_string(e.status));
    if (std::string(e.what()).empty()) fuzz::fail("ApiError without a message");
    (void)e.body().dump();  // throws on text that is not UTF-8
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "not an ApiError: %s\n", e.what());
    std::abort();
  }
  if (request.endpoint != endpoint) fuzz::fail("endpoint");
  if (endpoint == Endpoint::chat && request.messages.empty()) fuzz::fail("no messages");
  for (const ChatMessage& m : request.messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") fuzz::fail("role");
  }
  if (request.max_tokens && *request.max_tokens < 1) fuzz::fail("max_tokens");
  if (request.logprobs < -1 || request.logprobs > 20) fuzz::fail("logprobs");
  for (const std::string& stop : request.stop) {
    if (stop.empty()) fuzz::fail("empty stop string");
  }
  try {
    request.sampling.validate();
  } catch (const std::exception& e) {
    fuzz::fail(std::string("sampling parameters: ") + e.what());
  }
  return 0;
}
