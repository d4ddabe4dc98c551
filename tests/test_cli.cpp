// End-to-end tests of the bitnet command line: output formats and bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "bitnet/generate.h"
#include "bitnet/session.h"
#include "test_util.h"

namespace bitnet {
namespace {

using test::cached_model;
using test::run_cli;
using test::tiny_spec;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string model_dir() {
  return cached_model("bf16", tiny_spec()).string();
}

// An error is one line on stderr, prefixed, with a non-zero exit.
void expect_one_line_error(const test::CliResult& r, const std::string& fragment) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr(fragment));
  const std::string last = r.err.substr(
      r.err.rfind("bitnet: error: ") == std::string::npos ? 0 : r.err.rfind("bitnet: error: "));
  EXPECT_THAT(last, StartsWith("bitnet: error: "));
  EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << last;
}

TEST(Cli, RunJsonMatchesTheLibraryGreedyPath) {
  const auto r = run_cli(
      {"run", "-m", model_dir(), "-p", "The quick brown fox", "-n", "12", "--temp", "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"prompt_ids", "ids", "text", "prompt_tokens_per_s", "gen_tokens_per_s"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  auto model = Model::load(model_dir());
  const Tokenizer tokenizer = Tokenizer::load(model_dir());
  const auto prompt = tokenizer.encode("The quick brown fox");
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), prompt);
  Session session(model);
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.sampling.temperature = 0;
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  const auto expected = generate(session, tokenizer, prompt, options);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), expected.ids);
  EXPECT_EQ(j["text"].get<std::string>(), expected.text);
}

TEST(Cli, RunStreamsTextToStdoutAndSpeedToStderr) {
  const auto streamed =
      run_cli({"run", "-m", model_dir(), "-p", "Hello", "-n", "10", "--temp", "0"});
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  const auto json =
      run_cli({"run", "-m", model_dir(), "-p", "Hello", "-n", "10", "--temp", "0", "--json"});
  EXPECT_EQ(streamed.out, nlohmann::json::parse(json.out)["text"].get<std::string>() + "\n");
  EXPECT_THAT(streamed.err, HasSubstr("tokens/s"));
}

TEST(Cli, SameSeedSameSample) {
  const std::vector<std::string> args = {"run", "-m",     model_dir(), "-p",     "Hello", "-n",
                                         "16",  "--temp", "1.2",       "--seed", "7",     "--json"};
  const auto a = run_cli(args), b = run_cli(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(nlohmann::json::parse(a.out)["ids"], nlohmann::json::parse(b.out)["ids"]);
}

TEST(Cli, TokenizeTextAndJsonLines) {
  const auto one = run_cli({"tokenize", "-m", model_dir(), "Hello world"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const Tokenizer tokenizer = Tokenizer::load(model_dir());
  EXPECT_EQ(nlohmann::json::parse(one.out).get<std::vector<int32_t>>(),
            tokenizer.encode("Hello world"));
  const auto lines = run_cli({"tokenize", "-m", model_dir(), "--jsonl", "--no-bos"},
                             "\"a b\"\n\"\\u00e9t\\u00e9\"\n");
  ASSERT_EQ(lines.exit_code, 0) << lines.err;
  EXPECT_EQ(lines.out, nlohmann::json(tokenizer.encode("a b", false)).dump() + "\n" +
                           nlohmann::json(tokenizer.encode("\xC3\xA9t\xC3\xA9", false)).dump() +
                           "\n");
  expect_one_line_error(run_cli({"tokenize", "-m", model_dir(), "--jsonl"}, "[1, 2]\n"),
                        "stdin line 1: expected a JSON string");
  expect_one_line_error(run_cli({"tokenize", "-m", model_dir(), "--jsonl"}, "\"ok\"\n{bad\n"),
                        "stdin line 2: malformed JSON");
}

TEST(Cli, MakeModelWritesBothVariants) {
  test::TempDir tmp;
  for (const char* variant : {"bf16", "packed"}) {
    const auto dir = (tmp / variant).string();
    const auto r = run_cli({"make-model", "-o", dir, "--variant", variant, "--layers", "1", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto run =
        run_cli({"run", "-m", dir, "-p", "x", "-n", "3", "--temp", "0", "--json", "-q"});
    EXPECT_EQ(run.exit_code, 0) << run.err;
  }
}

TEST(Cli, BenchJsonHasOneObjectPerTestInLlamaBenchFields) {
  const auto r = run_cli({"bench", "-m", model_dir(), "--device", "cpu", "-p", "8", "-n", "4", "-t",
                          "1,2", "-b", "2", "-r", "2", "-o", "json", "--no-probe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 6u) << r.out;  // pp8, tg4 and tg4 x2 for each thread count
  std::map<std::string, double> bytes;
  for (const auto& row : rows) {
    for (const char* key : {"n_prompt", "n_gen", "n_threads", "n_batch", "avg_ts", "stddev_ts",
                            "bytes_per_token", "gbps", "test"})
      ASSERT_TRUE(row.contains(key)) << key << " in " << row.dump();
    EXPECT_GT(row["avg_ts"].get<double>(), 0.0) << row.dump();
    EXPECT_EQ(row["samples_ts"].size(), 2u);
    const std::string test = row["test"];
    const int threads = row["n_threads"];
    EXPECT_TRUE(threads == 1 || threads == 2);
    bytes[test] = row["bytes_per_token"];
    if (test == "pp8") {
      EXPECT_EQ(row["n_prompt"], 8);
    } else {
      EXPECT_EQ(row["n_gen"], 4) << test;
      EXPECT_EQ(row["n_batch"], test == "tg4 x2" ? 2 : 1);
    }
  }
  // Two sequences share each weight byte a step reads.
  ASSERT_TRUE(bytes.count("tg4") && bytes.count("tg4 x2"));
  EXPECT_LT(bytes["tg4 x2"], 0.75 * bytes["tg4"]);
}

// The machine's bandwidth drifts over a run, so each generation repetition is set against the
// read probes run just before and after it.
TEST(Cli, BenchSetsEachGenerationRepetitionAgainstTheProbesAroundIt) {
  const auto r = run_cli({"bench", "-m", model_dir(), "--device", "cpu", "-p", "0", "-n", "4", "-t",
                          "1", "-r", "2", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  const auto& row = rows[0];
  const double sustained = row.at("measured_read_gbps"),
               best = row.at("measured_read_best_pass_gbps");
  EXPECT_GT(sustained, 0.0);
  EXPECT_LE(sustained, best);  // the mean over passes cannot beat the fastest pass
  const auto& samples = row.at("samples_ts");
  const auto& paired = row.at("paired_read_gbps");
  ASSERT_EQ(samples.size(), 2u);
  ASSERT_EQ(paired.size(), 2u);
  const double bytes = row.at("bytes_per_token");
  double fraction = 0;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_GT(paired[i].get<double>(), 0.0);
    fraction += bytes * samples[i].get<double>() / 1e9 / paired[i].get<double>() / 2;
  }
  EXPECT_NEAR(row.at("fraction_of_bandwidth").get<double>(), fraction, 1e-12 * fraction);
}

// The perplexity of a text, recomputed here from a lone session's logits token by token: each
// chunk is BOS and 31 text tokens, and tokens 16..30 predict the next.
TEST(Cli, PerplexityIsTheExpMeanNegativeLogLikelihoodOfTheScoredTokens) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 12; ++i)
    text += "The quick brown fox jumps over the lazy dog, again and again. ";
  test::write_file(tmp / "text.txt", text);
  const auto r = run_cli({"perplexity", "-m", model_dir(), "-f", (tmp / "text.txt").string(), "-c",
                          "32", "--chunks", "3", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t at = r.out.find("Final estimate: PPL = ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double reported = std::stod(r.out.substr(at + 22));

  auto model = Model::load(model_dir());
  const Tokenizer tokenizer = Tokenizer::load(model_dir());
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  ASSERT_GE(ids.size(), 3u * 31);
  double sum = 0;
  int count = 0;
  for (size_t c = 0; c < 3; ++c) {
    std::vector<int32_t> chunk = {*tokenizer.bos_id()};
    chunk.insert(chunk.end(), ids.begin() + c * 31, ids.begin() + (c + 1) * 31);
    SessionOptions options;
    options.device = "cpu";
    Session session(model, options);
    for (size_t t = 0; t + 1 < chunk.size(); ++t) {
      const auto logits = session.feed(std::span(&chunk[t], 1));
      if (t < 16) continue;
      double total = 0;
      const double max_logit = *std::max_element(logits.begin(), logits.end());
      for (float l : logits) total += std::exp(l - max_logit);
      sum += max_logit + std::log(total) - logits[static_cast<size_t>(chunk[t + 1])];
      ++count;
    }
  }
  EXPECT_EQ(count, 45);
  const double want = std::exp(sum / count);
  EXPECT_NEAR(reported, want, 1e-6 * want + 1e-4);
  EXPECT_THAT(r.out, HasSubstr("(45 tokens)"));

  expect_one_line_error(
      run_cli({"perplexity", "-m", model_dir(), "-f", (tmp / "text.txt").string(), "-c", "4096"}),
      "-c must be between 4 and");
  test::write_file(tmp / "short.txt", "Too short.");
  expect_one_line_error(
      run_cli({"perplexity", "-m", model_dir(), "-f", (tmp / "short.txt").string(), "-c", "32"}),
      "fewer than one chunk");
  expect_one_line_error(
      run_cli({"perplexity", "-m", model_dir(), "-f", (tmp / "absent.txt").string()}),
      "absent.txt: cannot open");
}

TEST(CliErrors, MissingOrBrokenModel) {
  test::TempDir tmp;
  expect_one_line_error(run_cli({"run", "-m", (tmp / "absent").string(), "-p", "x"}), "absent");
  std::filesystem::create_directories(tmp / "empty");
  expect_one_line_error(run_cli({"run", "-m", (tmp / "empty").string(), "-p", "x"}),
                        "config.json: cannot open");
  std::filesystem::copy(model_dir(), tmp / "no_tokenizer");
  std::filesystem::remove(tmp / "no_tokenizer" / "tokenizer.json");
  expect_one_line_error(run_cli({"run", "-m", (tmp / "no_tokenizer").string(), "-p", "x"}),
                        "tokenizer.json: cannot open");
  std::filesystem::copy(model_dir(), tmp / "broken");
  test::write_file(tmp / "broken" / "config.json", "{ not json");
  expect_one_line_error(run_cli({"run", "-m", (tmp / "broken").string(), "-p", "x"}),
                        "config.json: malformed JSON");
  std::filesystem::copy(model_dir(), tmp / "truncated");
  std::filesystem::resize_file(tmp / "truncated" / "model.safetensors", 1000);
  expect_one_line_error(run_cli({"run", "-m", (tmp / "truncated").string(), "-p", "x"}),
                        "model.safetensors");
}

TEST(CliErrors, PromptLongerThanTheContext) {
  expect_one_line_error(
      run_cli({"run", "-m", model_dir(), "-c", "4", "-p", "a much longer prompt than four tokens"}),
      "more than the context of 4");
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-c", "100000", "-p", "x"}),
                        "exceeds the model's max_position_embeddings");
}

TEST(CliErrors, InvalidUtf8AndBadFlags) {
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-p", "bad \xFF byte"}),
                        "not valid UTF-8");
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-p", "x", "--temp", "-1"}),
                        "temperature");
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-p", "x", "--top-p", "0"}), "top_p");
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-p", "x", "--kernels", "sse9"}),
                        "unknown kernel variant 'sse9'");
  expect_one_line_error(run_cli({"run", "-m", model_dir(), "-f", "/nonexistent/prompt.txt"}),
                        "cannot open prompt file");
  expect_one_line_error(run_cli({"bench", "-m", model_dir(), "-p", "0", "-n", "0"}),
                        "nothing to measure");
  const auto unknown = run_cli({"run", "-m", model_dir(), "-p", "x", "--bogus"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("bogus"));
}

}  // namespace
}  // namespace bitnet
