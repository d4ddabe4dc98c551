// Fuzzes Tokenizer::from_json: tokenizer.json, then optionally a NUL byte and
// tokenizer_config.json (raw JSON never holds a NUL, so the split is unambiguous). A tokenizer
// that loads also encodes and decodes a fixed text, which runs the regexes and merges it holds.
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitnet/error.h"
#include "bitnet/tokenizer.h"
#include "fuzz_common.h"

using namespace bitnet;

namespace {

constexpr std::string_view kText =
    "Hello, world! It's 2024: \xC3\xA9t\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC   x\n\n<|eot_id|>ok";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, nul);
  const std::string_view config_json =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  // Errors name "fuzz/tokenizer.json" or the "fuzz/tokenizer_config.json" beside it.
  const std::string source = "fuzz/tokenizer.json";
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer =
        std::make_unique<Tokenizer>(Tokenizer::from_json(tokenizer_json, config_json, source));
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, "fuzz/tokenizer");
    return 0;
  }
  // The text in a buffer of its exact size, so a read past its end is caught.
  const auto text = std::make_unique<char[]>(kText.size());
  std::memcpy(text.get(), kText.data(), kText.size());
  try {
    for (bool add_bos : {false, true}) {
      const std::vector<int32_t> ids = tokenizer->encode({text.get(), kText.size()}, add_bos);
      for (int32_t id : ids) {
        if (id < 0 || id >= tokenizer->vocab_size()) fuzz::fail("encode gave an id out of range");
      }
      (void)tokenizer->decode(ids);
    }
  } catch (const Error&) {
    // A pattern may exceed the regex engine's limits on this text: encode reports it.
  }
  for (const auto& id : {tokenizer->bos_id(), tokenizer->eos_id()}) {
    if (id && (*id < 0 || *id >= tokenizer->vocab_size())) fuzz::fail("bos/eos id out of range");
  }
  return 0;
}
