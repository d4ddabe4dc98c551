// Tokenizer against the real Llama 3 vocabulary (../shared/data/llama3-tokenizer, or
// $BITNET_LLAMA3_TOKENIZER_DIR): ids must equal llama3-tokenizer-js's, which are committed in
// tests/data/tokenizer_expected_llama3.jsonl (regenerate: tests/tokenizer_reference/README.md).

#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "bitnet/tokenizer.h"
#include "tokenizer/byte_level.h"

namespace bitnet {
namespace {

using nlohmann::json;

const std::filesystem::path kSourceDir = BITNET_SOURCE_DIR;

std::filesystem::path llama3_dir() {
  const char* env = std::getenv("BITNET_LLAMA3_TOKENIZER_DIR");
  return env != nullptr ? std::filesystem::path(env)
                        : kSourceDir / ".." / "shared" / "data" / "llama3-tokenizer";
}

std::vector<json> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::vector<json> rows;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(json::parse(line));
  }
  return rows;
}

class Llama3TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::filesystem::exists(llama3_dir() / "tokenizer.json")) {
      tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(llama3_dir()));
    }
  }
  static void TearDownTestSuite() { tokenizer_.reset(); }
  void SetUp() override {
    if (!tokenizer_) {
      GTEST_SKIP() << "Llama 3 tokenizer not found at " << llama3_dir()
                   << " (set BITNET_LLAMA3_TOKENIZER_DIR)";
    }
  }
  static const Tokenizer& tok() { return *tokenizer_; }

  // Every corpus line's ids equal the reference's, line by line.
  static void expect_matches(const std::filesystem::path& expected_path) {
    const std::vector<json> corpus = read_jsonl(kSourceDir / "tests/data/tokenizer_corpus.jsonl");
    const std::vector<json> expected = read_jsonl(expected_path);
    ASSERT_EQ(corpus.size(), expected.size());
    ASSERT_GT(corpus.size(), 40u);
    for (size_t i = 0; i < corpus.size(); ++i) {
      const std::string text = corpus[i].get<std::string>();
      EXPECT_EQ(tok().encode(text), expected[i].get<std::vector<int32_t>>())
          << "corpus line " << i + 1 << ": " << corpus[i].dump();
    }
  }

 private:
  static inline std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(Llama3TokenizerTest, MatchesCommittedReferenceIds) {
  expect_matches(kSourceDir / "tests/data/tokenizer_expected_llama3.jsonl");
}

TEST_F(Llama3TokenizerTest, MatchesLiveReferenceWhenNodeIsInstalled) {
  const auto script_dir = kSourceDir / "tests/tokenizer_reference";
  if (!std::filesystem::exists(script_dir / "node_modules/llama3-tokenizer-js") ||
      std::system("node --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node or " << script_dir / "node_modules"
                 << " missing (npm ci there)";
  }
  const auto output = std::filesystem::temp_directory_path() /
                      ("bitnet_llama3_expected_" + std::to_string(getpid()) + ".jsonl");
  const std::string command = "node '" + (script_dir / "generate_expected.mjs").string() + "' '" +
                              (kSourceDir / "tests/data/tokenizer_corpus.jsonl").string() + "' '" +
                              output.string() + "' > /dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  expect_matches(output);
  std::filesystem::remove(output);
}

TEST_F(Llama3TokenizerTest, DecodeInvertsEncodeOnTheCorpus) {
  for (const json& line : read_jsonl(kSourceDir / "tests/data/tokenizer_corpus.jsonl")) {
    const std::string text = line.get<std::string>();
    EXPECT_EQ(tok().decode(tok().encode(text, false)), text) << line.dump();
  }
}

TEST_F(Llama3TokenizerTest, VocabularyAndBosRule) {
  EXPECT_EQ(tok().vocab_size(), 128256);
  EXPECT_EQ(tok().bos_id(), 128000);
  EXPECT_EQ(tok().eos_id(), 128001);
  EXPECT_EQ(tok().token_id("<|eot_id|>"), 128009);
  EXPECT_TRUE(tok().is_special(128009));
  EXPECT_FALSE(tok().is_special(9906));
  // Post-processor is ByteLevel only; BOS comes from tokenizer_config.json's bos_token.
  EXPECT_EQ(tok().encode("Hello"), (std::vector<int32_t>{128000, 9906}));
  EXPECT_EQ(tok().encode("Hello", false), (std::vector<int32_t>{9906}));
  EXPECT_NE(tok().chat_template().find("<|start_header_id|>"), std::string::npos);
}

// Hand-checked against the file's added_tokens: llama3-tokenizer-js knows Llama 3.1's special
// names (<|eom_id|> at 128008, ...), which this Llama 3 file has as reserved tokens, and stops
// its reserved range at 247.
TEST_F(Llama3TokenizerTest, SpecialTokensOnlyLlama3Defines) {
  EXPECT_EQ(tok().encode("a<|reserved_special_token_2|>b", false),
            (std::vector<int32_t>{64, 128004, 65}));
  EXPECT_EQ(tok().encode("<|reserved_special_token_250|>", false), (std::vector<int32_t>{128255}));
  // Not tokens in Llama 3: plain text, several ordinary tokens.
  for (const std::string text :
       {"<|eom_id|>", "<|python_tag|>", "<|reserved_special_token_251|>"}) {
    const std::vector<int32_t> ids = tok().encode(text, false);
    EXPECT_GT(ids.size(), 1u) << text;
    for (int32_t id : ids) EXPECT_LT(id, 128000) << text;
    EXPECT_EQ(tok().decode(ids), text);
  }
}

TEST_F(Llama3TokenizerTest, StreamDecoderNeverEmitsPartialCharacters) {
  const std::string text =
      "family \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F44D\U0001F3FD "
      "\u4eca\u5929\u5929\u6c14 \ud55c\uad6d\uc5b4 \U0001F9D1\u200d\U0001F52C";
  const std::vector<int32_t> ids = tok().encode(text, false);
  TokenStreamDecoder stream(tok());
  std::string streamed;
  size_t held_back = 0;
  for (int32_t id : ids) {
    if (tokenizer::first_invalid_utf8(tok().token_bytes(id))) ++held_back;
    const std::string piece = stream.push(id);
    EXPECT_EQ(tokenizer::first_invalid_utf8(piece), std::nullopt) << "token " << id;
    streamed += piece;
  }
  streamed += stream.flush();
  EXPECT_EQ(streamed, text);
  EXPECT_GT(held_back, 0u) << "the text should split some characters across tokens";
}

// Not a timed test: encodes ~100 KB of varied English and checks the result; the time is
// printed for a human to read.
TEST_F(Llama3TokenizerTest, EncodesHundredKilobytesOfEnglish) {
  std::string text;
  for (int i = 0; text.size() < 100 * 1024; ++i) {
    text += "Paragraph " + std::to_string(i * 7919) +
            ": the keeper's log recorded wind, weather and " + std::to_string(i % 97) +
            " ships; nobody could say it wasn't thorough.\n";
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok().encode(text, false);
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  std::cout << "encoded " << text.size() << " bytes into " << ids.size() << " tokens in "
            << elapsed.count() * 1e3 << " ms\n";
  EXPECT_LT(ids.size(), text.size() / 3);
  EXPECT_EQ(tok().decode(ids), text);
}

}  // namespace
}  // namespace bitnet
