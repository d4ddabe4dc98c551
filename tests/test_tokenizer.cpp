// Tokenizer unit tests on small tokenizers built here or by write_test_tokenizer; the real
// Llama 3 vocabulary is exercised in test_tokenizer_llama3.cpp.

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "bitnet/error.h"
#include "bitnet/tokenizer.h"
#include "tokenizer/byte_level.h"

namespace bitnet {
namespace {

using nlohmann::json;

const std::string kReplacement = "\xEF\xBF\xBD";

std::filesystem::path fresh_temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("bitnet_tokenizer_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// The message of the bitnet::Error thrown by `fn`, or "" when nothing is thrown.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A tokenizer.json with the 256 byte tokens (id = byte value), `extra_tokens` after them and
// `merges`, Llama 3's pre-tokenizer and decoder, no post-processor.
json make_tokenizer_json(const std::vector<std::string>& extra_tokens,
                         const std::vector<std::string>& merges, bool ignore_merges) {
  json vocab = json::object();
  for (int byte = 0; byte < 256; ++byte) {
    vocab[tokenizer::bytes_to_byte_level(std::string(1, static_cast<char>(byte)))] = byte;
  }
  for (size_t i = 0; i < extra_tokens.size(); ++i) {
    vocab[tokenizer::bytes_to_byte_level(extra_tokens[i])] = 256 + i;
  }
  json byte_merges = json::array();
  for (const std::string& merge : merges) {
    const size_t space = merge.find(' ');
    byte_merges.push_back(tokenizer::bytes_to_byte_level(merge.substr(0, space)) + " " +
                          tokenizer::bytes_to_byte_level(merge.substr(space + 1)));
  }
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", false}};
  return {{"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", R"((?i:'s|'t)|\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+)"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              byte_level}}}},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"ignore_merges", ignore_merges},
            {"vocab", vocab},
            {"merges", byte_merges}}}};
}

json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

Tokenizer from(const json& tokenizer_json, const json& config = json()) {
  return Tokenizer::from_json(tokenizer_json.dump(), config.is_null() ? "" : config.dump(),
                              "tokenizer.json");
}

class WrittenTokenizerTest : public ::testing::TestWithParam<int32_t> {};

TEST_P(WrittenTokenizerTest, LoadsWithSpecialsAtTopIdsAndRoundTrips) {
  const int32_t vocab_size = GetParam();
  const auto dir = fresh_temp_dir("written_" + std::to_string(vocab_size));
  write_test_tokenizer(dir, vocab_size);
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.vocab_size(), vocab_size);

  const std::vector<std::string> top = {"<|begin_of_text|>",
                                        "<|end_of_text|>",
                                        "<|reserved_special_token_0|>",
                                        "<|reserved_special_token_1|>",
                                        "<|reserved_special_token_2|>",
                                        "<|start_header_id|>",
                                        "<|end_header_id|>",
                                        "<|eot_id|>"};
  for (size_t i = 0; i < top.size(); ++i) {
    const int32_t id = vocab_size - 8 + static_cast<int32_t>(i);
    EXPECT_EQ(tok.token_id(top[i]), id) << top[i];
    EXPECT_TRUE(tok.is_special(id));
    EXPECT_EQ(tok.token_bytes(id), top[i]);
  }
  EXPECT_EQ(tok.bos_id(), vocab_size - 8);
  EXPECT_EQ(tok.eos_id(), vocab_size - 7);
  EXPECT_FALSE(tok.is_special(0));
  EXPECT_EQ(tok.token_bytes(65), "A");  // ids 0..255 are the bytes themselves
  EXPECT_EQ(tok.chat_template(),
            "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if "
            "message['role'] == 'user' %}{{ 'User: ' + message['content'] | trim + '<|eot_id|>' "
            "}}{% elif message['role'] == 'system' %}{{ 'System: ' + message['content'] | trim + "
            "'<|eot_id|>' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + "
            "message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}{% if "
            "add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}");

  for (const std::string text :
       {"The keeper climbed the steps to light the lamp, every evening.",
        "Unseen words: zyxwvut quokka 12345678 !?", "caf\u00e9 \u4e2d\u6587 \U0001F600\n\t end"}) {
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), vocab_size - 8) << "BOS from the TemplateProcessing post-processor";
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
    EXPECT_EQ(tok.decode(ids), "<|begin_of_text|>" + text);
  }
  // The merges compress the sample's language below one token per byte.
  const std::string english = "the light and the ships";
  EXPECT_LT(tok.encode(english, false).size(), english.size());
  EXPECT_EQ(tok.encode("a<|eot_id|>b", false), (std::vector<int32_t>{'a', vocab_size - 1, 'b'}));

  // Deterministic: a second write gives the same files.
  const auto again = fresh_temp_dir("written_again_" + std::to_string(vocab_size));
  write_test_tokenizer(again, vocab_size);
  EXPECT_EQ(read_text(dir / "tokenizer.json"), read_text(again / "tokenizer.json"));
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(again);
}

INSTANTIATE_TEST_SUITE_P(VocabSizes, WrittenTokenizerTest, ::testing::Values(300, 512, 1000));

TEST(TestTokenizerWriterTest, FillsIdsTheSampleCannotMergeWithReservedSpecials) {
  const auto dir = fresh_temp_dir("reserved_fill");
  write_test_tokenizer(dir, 20000);
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.vocab_size(), 20000);
  const std::optional<int32_t> reserved3 = tok.token_id("<|reserved_special_token_3|>");
  ASSERT_TRUE(reserved3.has_value());
  EXPECT_TRUE(tok.is_special(*reserved3));
  EXPECT_EQ(
      tok.token_id("<|reserved_special_token_" + std::to_string(20000 - 9 - *reserved3 + 3) + "|>"),
      20000 - 9);
  std::filesystem::remove_all(dir);
}

TEST(TestTokenizerWriterTest, RejectsVocabSizeBelow264) {
  EXPECT_NE(error_of([] { write_test_tokenizer(fresh_temp_dir("small"), 263); }).find("264"),
            std::string::npos);
}

TEST(TokenizerTest, IgnoreMergesEmitsWholeVocabPreTokens) {
  // "abc" is in the vocab, but no merge builds it: the merges alone give "a" + "bc".
  const json with_ignore = make_tokenizer_json({"bc", "abc"}, {"b c"}, true);
  const json without_ignore = make_tokenizer_json({"bc", "abc"}, {"b c"}, false);
  EXPECT_EQ(from(with_ignore).encode("abc", false), (std::vector<int32_t>{257}));
  EXPECT_EQ(from(without_ignore).encode("abc", false), (std::vector<int32_t>{'a', 256}));
}

TEST(TokenizerTest, MergesInBothSerializationsGiveTheSameIds) {
  const auto dir = fresh_temp_dir("merge_forms");
  write_test_tokenizer(dir, 512);
  json as_strings = json::parse(read_text(dir / "tokenizer.json"));
  json as_arrays = as_strings;
  for (json& merge : as_arrays["model"]["merges"]) {
    const std::string text = merge.get<std::string>();
    const size_t space = text.find(' ');
    merge = json::array({text.substr(0, space), text.substr(space + 1)});
  }
  const std::string text = "Every evening the keeper climbed one hundred and twelve steps.";
  EXPECT_EQ(from(as_strings).encode(text), from(as_arrays).encode(text));
  std::filesystem::remove_all(dir);
}

TEST(TokenizerTest, MergesApplyLowestRankFirst) {
  // "abcd": rank 0 "b c" wins over "a b", then "a bc" (rank 2), then "abc d".
  const json tok_json =
      make_tokenizer_json({"ab", "bc", "abc", "abcd"}, {"b c", "a b", "a bc", "abc d"}, false);
  EXPECT_EQ(from(tok_json).encode("abcd", false), (std::vector<int32_t>{259}));
  EXPECT_EQ(from(tok_json).encode("abab", false), (std::vector<int32_t>{256, 256}));
}

TEST(TokenizerTest, GptTwoByteLevelPreTokenizerWithPrefixSpace) {
  json tok_json = make_tokenizer_json({"hi", "\u0120hi"}, {"h i", "\u0120 hi"}, false);
  tok_json["model"]["vocab"].erase("\u0120hi");
  tok_json["model"]["vocab"]["\u0120hi"] = 257;  // the byte-level spelling of " hi"
  tok_json["model"]["merges"] = {"h i", "\u0120 hi"};
  tok_json["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  const Tokenizer tok = from(tok_json);
  EXPECT_EQ(tok.encode("hi hi", false), (std::vector<int32_t>{257, 257}));
  EXPECT_EQ(tok.decode(tok.encode("hi", false)), " hi");
}

TEST(TokenizerTest, AddedTokensMatchLongestFirstAndHonorStripFlags) {
  json tok_json = make_tokenizer_json({}, {}, true);
  json strip = added_token(258, "<S>", true);
  strip["lstrip"] = true;
  strip["rstrip"] = true;
  tok_json["added_tokens"] = {added_token(256, "<|x|>", true), added_token(257, "<|x|>y", false),
                              strip};
  const Tokenizer tok = from(tok_json);
  EXPECT_EQ(tok.encode("a<|x|>yb<|x|>", false), (std::vector<int32_t>{'a', 257, 'b', 256}));
  EXPECT_EQ(tok.encode("a  <S>  b", false), (std::vector<int32_t>{'a', 258, 'b'}));
  EXPECT_TRUE(tok.is_special(256));
  EXPECT_FALSE(tok.is_special(257));
  EXPECT_EQ(tok.token_id("<|x|>y"), 257);
  EXPECT_EQ(tok.vocab_size(), 259);
}

TEST(TokenizerTest, BosComesFromTemplateOrFromConfig) {
  json tok_json = make_tokenizer_json({}, {}, true);
  tok_json["added_tokens"] = {added_token(256, "<s>", true), added_token(257, "</s>", true)};
  const json config = {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}};

  // No template: config's bos_token with add_bos_token absent (or true) adds BOS.
  EXPECT_EQ(from(tok_json, config).encode("a"), (std::vector<int32_t>{256, 'a'}));
  EXPECT_EQ(from(tok_json, config).encode("a", false), (std::vector<int32_t>{'a'}));
  EXPECT_EQ(from(tok_json, config).eos_id(), 257);
  json no_bos_config = config;
  no_bos_config["add_bos_token"] = false;
  EXPECT_EQ(from(tok_json, no_bos_config).encode("a"), (std::vector<int32_t>{'a'}));
  EXPECT_EQ(from(tok_json).encode("a"), (std::vector<int32_t>{'a'}));
  EXPECT_EQ(from(tok_json).bos_id(), std::nullopt);

  // A TemplateProcessing nested in a Sequence decides alone, suffix included.
  tok_json["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       {{{"type", "ByteLevel"}},
        {{"type", "TemplateProcessing"},
         {"single",
          {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
           {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
         {"special_tokens",
          {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}},
           {"</s>", {{"id", "</s>"}, {"ids", {257}}, {"tokens", {"</s>"}}}}}}}}}};
  EXPECT_EQ(from(tok_json, no_bos_config).encode("a"), (std::vector<int32_t>{256, 'a', 257}));
  EXPECT_EQ(from(tok_json).encode("a", false), (std::vector<int32_t>{'a'}));
}

TEST(TokenizerTest, InvalidUtf8InputThrowsWithTheByteOffset) {
  const Tokenizer tok = from(make_tokenizer_json({}, {}, true));
  EXPECT_EQ(error_of([&] { tok.encode("abc\xFFz"); }), "input is not valid UTF-8 at byte 3");
  EXPECT_EQ(error_of([&] { tok.encode("ok \xE4\xB8"); }), "input is not valid UTF-8 at byte 3");
  EXPECT_EQ(error_of([&] { tok.encode("\xC0\x80"); }), "input is not valid UTF-8 at byte 0");
  EXPECT_EQ(error_of([&] { tok.encode("\xED\xA0\x80"); }), "input is not valid UTF-8 at byte 0");
}

TEST(TokenizerTest, LongRunsDoNotExhaustTheRegexStack) {
  const Tokenizer tok = from(make_tokenizer_json({}, {}, true));
  for (const std::string& text : {std::string(200000, ' ') + "x", std::string(200000, '\n'),
                                  std::string(100000, '!'), std::string(100000, '7')}) {
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
  }
}

TEST(TokenizerTest, DecodePassesBytesThroughAndRejectsUnknownIds) {
  const Tokenizer tok = from(make_tokenizer_json({}, {}, true));
  EXPECT_EQ(tok.decode({0xFF, 'a', 0xE4}),
            "\xFF"
            "a\xE4");
  EXPECT_NE(error_of([&] { tok.token_bytes(256); }).find("token id 256"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({-1}); }).find("token id -1"), std::string::npos);
}

TEST(TokenStreamDecoderTest, HoldsBackSplitCharactersUntilComplete) {
  const Tokenizer tok = from(make_tokenizer_json({}, {}, true));  // id = byte value
  TokenStreamDecoder stream(tok);
  std::string out;
  for (const std::string text : {"\U0001F600", "\u4e2d", "\u00e9"}) {
    for (size_t i = 0; i + 1 < text.size(); ++i) {
      EXPECT_EQ(stream.push(static_cast<uint8_t>(text[i])), "") << "byte " << i << " of " << text;
    }
    EXPECT_EQ(stream.push(static_cast<uint8_t>(text.back())), text);
  }
  EXPECT_EQ(stream.push('a'), "a");
  EXPECT_EQ(stream.flush(), "");
}

TEST(TokenStreamDecoderTest, ReplacesBytesThatCanNeverBeValid) {
  const Tokenizer tok = from(make_tokenizer_json({}, {}, true));
  const auto feed = [&](const std::string& bytes) {
    TokenStreamDecoder stream(tok);
    std::string out;
    for (char c : bytes) out += stream.push(static_cast<uint8_t>(c));
    return out + stream.flush();
  };
  EXPECT_EQ(feed("\xFF"
                 "a"),
            kReplacement + "a");  // invalid lead byte
  EXPECT_EQ(feed("\xE4\xB8"
                 "a"),
            kReplacement + "a");                                                // bad continuation
  EXPECT_EQ(feed("\xC0\x80"), kReplacement + kReplacement);                     // overlong
  EXPECT_EQ(feed("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);  // surrogate
  EXPECT_EQ(feed("\xF4\x90\x80\x80").substr(0, 3), kReplacement);               // above U+10FFFF
  EXPECT_EQ(feed("ok\xF0\x9F"), "ok" + kReplacement);  // cut short at the end: flush replaces

  TokenStreamDecoder stream(tok);
  EXPECT_EQ(stream.push(0xFF), kReplacement) << "emitted at once, not held back";
}

// Each malformed tokenizer.json gives one Error naming the file and the field at fault.
TEST(TokenizerTest, MalformedTokenizerJsonGivesClearErrors) {
  const json good = make_tokenizer_json({"bc"}, {"b c"}, true);
  const auto error_with = [&](const std::function<void(json&)>& mutate) {
    json broken = good;
    mutate(broken);
    return error_of([&] { from(broken); });
  };
  EXPECT_EQ(error_with([](json& j) { j.erase("model"); }),
            "tokenizer.json: model: missing (expected a BPE model)");
  EXPECT_EQ(error_with([](json& j) { j["model"]["merges"][0] = 12; }),
            "tokenizer.json: model.merges[0]: expected \"a b\" string or [a, b] array");
  EXPECT_EQ(error_with([](json& j) { j["model"]["merges"][0] = "bc"; }),
            "tokenizer.json: model.merges[0]: expected \"a b\" string or [a, b] array");
  EXPECT_EQ(error_with([](json& j) { j["model"]["merges"][0] = "zz y"; }),
            "tokenizer.json: model.merges[0]: left token \"zz\" is not in model.vocab");
  EXPECT_EQ(error_with([](json& j) { j["model"]["merges"][0] = "c b"; }),
            "tokenizer.json: model.merges[0]: merged token \"cb\" is not in model.vocab");
  EXPECT_EQ(error_with([](json& j) { j["model"]["type"] = "WordPiece"; }),
            "tokenizer.json: model.type: unsupported model \"WordPiece\" (expected \"BPE\")");
  EXPECT_EQ(error_with([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Bert"; }),
            "tokenizer.json: pre_tokenizer.pretokenizers[0].type: unsupported pre-tokenizer "
            "\"Bert\" (expected Split, ByteLevel or Sequence)");
  EXPECT_EQ(error_with([](json& j) {
              j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}+";
            })
                .rfind("tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex: invalid "
                       "regex at offset 7: missing closing parenthesis",
                       0),
            0u);
  EXPECT_EQ(error_with([](json& j) {
              j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious";
            }),
            "tokenizer.json: pre_tokenizer.pretokenizers[0].behavior: only \"Isolated\" is "
            "supported");
  EXPECT_EQ(error_with([](json& j) { j["decoder"] = nullptr; }),
            "tokenizer.json: decoder: expected a ByteLevel decoder, got null");
  EXPECT_EQ(error_with([](json& j) { j["model"]["vocab"].erase("\u0120"); }),
            "tokenizer.json: model.vocab: no token for byte 32; byte-level BPE needs all 256");
  EXPECT_EQ(error_of([] {
              Tokenizer::from_json("{\"model\": ", "", "tokenizer.json");
            }).rfind("tokenizer.json: invalid JSON: ", 0),
            0u);
  EXPECT_EQ(error_of([&] {
              from(good, json{{"bos_token", "<nope>"}});
            }),
            "tokenizer_config.json: bos_token: \"<nope>\" is not in the vocabulary");
}

// nlohmann reports a number beyond double range as out_of_range, not parse_error: still an error
// naming the file.
TEST(TokenizerTest, NumbersBeyondDoubleRangeAreInvalidJson) {
  std::string text = make_tokenizer_json({}, {}, false).dump();
  text.insert(1, "\"x\": 1e999, ");
  EXPECT_EQ(error_of([&] {
              Tokenizer::from_json(text, "", "dir/tokenizer.json");
            }).rfind("dir/tokenizer.json: invalid JSON: ", 0),
            0u);
  EXPECT_EQ(error_of([] {
              Tokenizer::from_json(make_tokenizer_json({}, {}, false).dump(), "{\"x\": -1e999}",
                                   "dir/tokenizer.json");
            }).rfind("dir/tokenizer_config.json: invalid JSON: ", 0),
            0u);
}

// Token arrays are indexed by id: ids may leave gaps, but one huge id must not allocate
// gigabytes (nor overflow id + 1).
TEST(TokenizerTest, TokenIdsFarBeyondTheTokenCountAreRejected) {
  const json good = make_tokenizer_json({"bc"}, {"b c"}, true);  // 257 tokens
  json vocab_id = good;
  vocab_id["model"]["vocab"]["zz"] = INT32_MAX;
  EXPECT_EQ(error_of([&] { from(vocab_id); }),
            "tokenizer.json: model.vocab[\"zz\"]: id 2147483647 is out of range: ids must be "
            "below 1540 (twice the number of tokens listed, plus 1024)");
  json added_id = good;
  added_id["added_tokens"] = {added_token(2000000000, "<big>", true)};
  EXPECT_EQ(error_of([&] { from(added_id); }),
            "tokenizer.json: added_tokens[0].id: id 2000000000 is out of range: ids must be "
            "below 1540 (twice the number of tokens listed, plus 1024)");
  json gap = good;
  gap["added_tokens"] = {added_token(1500, "<s>", true)};
  const Tokenizer tok = from(gap);
  EXPECT_EQ(tok.vocab_size(), 1501);
  EXPECT_EQ(tok.token_id("<s>"), 1500);
  EXPECT_EQ(tok.encode("bc<s>", false), (std::vector<int32_t>{256, 1500}));
}

// `text` copied to the end of a readable page, followed by an unreadable one: reading past the
// end of the view faults.
class TextAtPageEnd {
 public:
  explicit TextAtPageEnd(std::string_view text)
      : page_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<char*>(p);
    mprotect(base_ + page_, page_, PROT_NONE);
    std::memcpy(base_ + page_ - text.size(), text.data(), text.size());
    view_ = {base_ + page_ - text.size(), text.size()};
  }
  ~TextAtPageEnd() { munmap(base_, 2 * page_); }
  TextAtPageEnd(const TextAtPageEnd&) = delete;
  TextAtPageEnd& operator=(const TextAtPageEnd&) = delete;
  std::string_view view() const { return view_; }

 private:
  size_t page_;
  char* base_ = nullptr;
  std::string_view view_;
};

TEST(TokenizerTest, EmptyMatchAtTheEndOfTheTextReadsNothingPastIt) {
  json j = make_tokenizer_json({"bc"}, {"b c"}, false);
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "$";  // an empty match at the end
  const Tokenizer tok = from(j);
  const std::string text = "abc";
  const TextAtPageEnd guarded(text);
  EXPECT_EQ(tok.encode(guarded.view(), false), (std::vector<int32_t>{'a', 256}));
  EXPECT_EQ(tok.encode(text, false), (std::vector<int32_t>{'a', 256}));
}

TEST(TokenizerTest, LoadNamesTheMissingFile) {
  const auto dir = fresh_temp_dir("missing");
  EXPECT_EQ(error_of([&] { Tokenizer::load(dir); }),
            (dir / "tokenizer.json").string() + ": cannot open");
}

}  // namespace
}  // namespace bitnet
