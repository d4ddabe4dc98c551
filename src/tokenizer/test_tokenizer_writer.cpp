// write_test_tokenizer: a small tokenizer in Llama 3's layout for tests and random test models,
// with merges learned by plain BPE training on a built-in English sample.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <tuple>

#include "bitnet/error.h"
#include "bitnet/tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"

namespace bitnet {
namespace {

using nlohmann::ordered_json;

constexpr std::string_view kTrainingSample = R"(The old lighthouse stood at the end of the
harbor wall, and every evening the keeper climbed its one hundred and twelve steps to light the
lamp. She had done this for thirty years. The ships that passed in the night did not know her
name, but they knew her light, and that was enough for her.

In the morning she wrote in her log: the weather, the wind, the number of ships, and anything
else that seemed worth keeping. "Wind from the west, 14 knots. Three fishing boats went out
before dawn; all of them came back by noon." Some days there was nothing to write except the
time the lamp was lit and the time it was put out. She wrote those days down as well, because a
record with gaps in it is a record nobody can trust.

People in the town sometimes asked her whether she was lonely out there. She would smile and
say that a lighthouse is never lonely: it talks to every ship on the water, and every ship talks
back with its own small lights. The gulls kept her company, and the sea was different every
hour. When storms came, the whole tower hummed with the wind, and she would sit by the window
with a cup of tea and watch the waves break white against the rocks below.

Her father had been the keeper before her, and his father before him. The family had a saying:
keep the light, and the light will keep you. She did not know exactly what it meant when she was
young. Now she thought it meant that doing one small thing well, every day, for a long time, is
a way of giving shape to a life.

Computers learn language in a similar way, one small step at a time. A tokenizer splits text
into pieces, and a model reads those pieces and predicts which piece should come next. The
pieces are learned from data: the most frequent pairs of symbols are merged first, so common
words such as "the", "and", "with" and "light" become single tokens, while rare words are built
from smaller parts. This makes the vocabulary compact, and it means that any text at all, even
a word the model has never seen, can still be written down exactly and read back again.
)";

// Ids V-8 .. V-1, in this order.
constexpr std::array<std::string_view, 8> kTopSpecialTokens = {"<|begin_of_text|>",
                                                               "<|end_of_text|>",
                                                               "<|reserved_special_token_0|>",
                                                               "<|reserved_special_token_1|>",
                                                               "<|reserved_special_token_2|>",
                                                               "<|start_header_id|>",
                                                               "<|end_header_id|>",
                                                               "<|eot_id|>"};

constexpr std::string_view kBitNetChatTemplate =
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] | trim + '<|eot_id|>' }}"
    "{% elif message['role'] == 'system' %}"
    "{{ 'System: ' + message['content'] | trim + '<|eot_id|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

struct TrainedBpe {
  std::vector<std::string> tokens;                  // by id, raw bytes
  std::vector<std::pair<int32_t, int32_t>> merges;  // in rank order
};

// Plain BPE training: repeatedly merge the most frequent adjacent pair (ties: the pair whose
// token bytes sort first) until `max_tokens` tokens exist or no pair is left.
TrainedBpe train_bpe(size_t max_tokens) {
  TrainedBpe bpe;
  std::map<std::string, int32_t> token_ids;
  for (int byte = 0; byte < 256; ++byte) {
    bpe.tokens.emplace_back(1, static_cast<char>(byte));
    token_ids[bpe.tokens.back()] = byte;
  }
  const tokenizer::PreTokenizer pre_tokenizer(tokenizer::kLlama3SplitPattern);
  std::string scratch;
  std::vector<std::string_view> pieces;
  pre_tokenizer.split(kTrainingSample, scratch, pieces);
  std::map<std::string_view, int64_t> word_counts;
  for (std::string_view piece : pieces) ++word_counts[piece];
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;  // symbols, count
  for (const auto& [word, count] : word_counts) {
    std::vector<int32_t> symbols;
    for (char c : word) symbols.push_back(static_cast<uint8_t>(c));
    words.emplace_back(std::move(symbols), count);
  }

  while (bpe.tokens.size() < max_tokens) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pair_counts;
    for (const auto& [symbols, count] : words) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        pair_counts[{symbols[i], symbols[i + 1]}] += count;
      }
    }
    if (pair_counts.empty()) break;
    const auto best =
        std::max_element(pair_counts.begin(), pair_counts.end(), [&](const auto& a, const auto& b) {
          if (a.second != b.second) return a.second < b.second;
          // Equal counts: the lexicographically smaller pair is "larger" so it wins.
          return std::tie(bpe.tokens[b.first.first], bpe.tokens[b.first.second]) <
                 std::tie(bpe.tokens[a.first.first], bpe.tokens[a.first.second]);
        });
    const auto [left, right] = best->first;
    const std::string merged = bpe.tokens[left] + bpe.tokens[right];
    // Different pairs can spell the same token ("ab"+"c", "a"+"bc"): the merge reuses its id.
    const auto [it, is_new] = token_ids.emplace(merged, static_cast<int32_t>(bpe.tokens.size()));
    if (is_new) bpe.tokens.push_back(merged);
    bpe.merges.emplace_back(left, right);
    for (auto& [symbols, count] : words) {
      std::vector<int32_t> merged_symbols;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          merged_symbols.push_back(it->second);
          ++i;
        } else {
          merged_symbols.push_back(symbols[i]);
        }
      }
      symbols = std::move(merged_symbols);
    }
  }
  return bpe;
}

ordered_json added_token(int32_t id, std::string_view content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

void write_file(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  if (!out) throw Error(path.string() + ": cannot write");
}

}  // namespace

void write_test_tokenizer(const std::filesystem::path& dir, int32_t vocab_size) {
  const auto n_top_specials = static_cast<int32_t>(kTopSpecialTokens.size());
  if (vocab_size < 256 + n_top_specials) {
    throw Error("write_test_tokenizer: vocab_size " + std::to_string(vocab_size) +
                " is below 264 (256 byte tokens + 8 special tokens)");
  }
  const TrainedBpe bpe = train_bpe(vocab_size - n_top_specials);

  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < bpe.tokens.size(); ++id) {
    vocab[tokenizer::bytes_to_byte_level(bpe.tokens[id])] = id;
  }
  ordered_json merges = ordered_json::array();
  for (const auto& [left, right] : bpe.merges) {
    merges.push_back(tokenizer::bytes_to_byte_level(bpe.tokens[left]) + " " +
                     tokenizer::bytes_to_byte_level(bpe.tokens[right]));
  }
  // Ids the sample could not fill with merges become further reserved specials.
  ordered_json added_tokens = ordered_json::array();
  const auto first_top_special = vocab_size - n_top_specials;
  int32_t reserved_number = 3;
  for (auto id = static_cast<int32_t>(bpe.tokens.size()); id < first_top_special; ++id) {
    added_tokens.push_back(
        added_token(id, "<|reserved_special_token_" + std::to_string(reserved_number++) + "|>"));
  }
  for (int32_t i = 0; i < n_top_specials; ++i) {
    added_tokens.push_back(added_token(first_top_special + i, kTopSpecialTokens[i]));
  }
  const std::string bos(kTopSpecialTokens[0]);
  const ordered_json byte_level = {{"type", "ByteLevel"},
                                   {"add_prefix_space", false},
                                   {"trim_offsets", true},
                                   {"use_regex", false}};
  const ordered_json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added_tokens},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", tokenizer::kLlama3SplitPattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens",
         {{bos, {{"id", bos}, {"ids", {first_top_special}}, {"tokens", {bos}}}}}}}},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merges}}}};
  const ordered_json config = {{"add_bos_token", true},
                               {"add_eos_token", false},
                               {"bos_token", bos},
                               {"eos_token", kTopSpecialTokens[1]},
                               {"chat_template", kBitNetChatTemplate},
                               {"tokenizer_class", "PreTrainedTokenizerFast"}};

  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error(dir.string() + ": cannot create directory: " + error.message());
  write_file(dir / "tokenizer.json", tokenizer.dump(2));
  write_file(dir / "tokenizer_config.json", config.dump(2));
}

}  // namespace bitnet
