// Converted .bitnet files: same function as the directory they came from, and clear errors when
// damaged.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "bitnet/session.h"
#include "model/converted_model.h"
#include "model/weights.h"
#include "test_util.h"

namespace bitnet {
namespace {

using test::cached_model;
using test::tiny_spec;
using ::testing::HasSubstr;

const std::vector<int32_t> kPrompt = {504, 72, 101, 276, 111, 259, 277, 350, 13, 200};

std::vector<float> last_logits(std::shared_ptr<const Model> model) {
  Session session(model);
  const auto logits = session.feed(kPrompt);
  return {logits.begin(), logits.end()};
}

std::filesystem::path convert(const std::filesystem::path& dir, const std::filesystem::path& out,
                              LoadOptions options) {
  auto model = Model::load(dir, options);
  ThreadPool pool(2);
  write_converted_model(*model, dir, out, pool);
  return out;
}

TEST(ConvertedModel, ComputesExactlyWhatTheDirectoryComputes) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  for (const TernaryFormat ternary : {TernaryFormat::i2, TernaryFormat::t5}) {
    for (const LmHeadFormat head : {LmHeadFormat::bf16, LmHeadFormat::int8, LmHeadFormat::q4}) {
      SCOPED_TRACE(std::string(format_name(ternary)) + "/" + format_name(head));
      LoadOptions options;
      options.ternary = ternary;
      options.lm_head = head;
      const auto file = convert(dir, tmp / "m.bitnet", options);
      EXPECT_EQ(last_logits(Model::load(file)), last_logits(Model::load(dir, options)));
    }
  }
}

TEST(ConvertedModel, CarriesItsTokenizerAndUntiedHead) {
  RandomModelSpec spec = tiny_spec(QuantMode::offline, 4);
  spec.tie_word_embeddings = false;
  const auto dir = cached_model("packed_untied", spec);
  test::TempDir tmp;
  const auto file = convert(dir, tmp / "m.bitnet", {});
  EXPECT_EQ(Tokenizer::load(file).encode("Hello world"),
            Tokenizer::load(dir).encode("Hello world"));
  EXPECT_EQ(last_logits(Model::load(file)), last_logits(Model::load(dir, {})));
  const auto r = test::run_cli(
      {"run", "-m", file.string(), "-p", "Hello", "-n", "4", "--temp", "0", "--json", "-q"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

std::string load_error(const std::filesystem::path& path, const LoadOptions& options = {}) {
  try {
    Model::load(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(ConvertedModel, AskingForAnotherFormatThanTheFileHoldsIsAnError) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  LoadOptions written;
  written.ternary = TernaryFormat::i2;
  written.lm_head = LmHeadFormat::int8;
  const auto file = convert(dir, tmp / "m.bitnet", written);
  EXPECT_NO_THROW(Model::load(file));           // unset: the file's own formats
  EXPECT_NO_THROW(Model::load(file, written));  // the same formats
  LoadOptions other_head;
  other_head.lm_head = LmHeadFormat::bf16;
  const std::string head_error = load_error(file, other_head);
  EXPECT_NE(head_error.find("--lm-head int8, not bf16"), std::string::npos) << head_error;
  LoadOptions other_ternary;
  other_ternary.ternary = TernaryFormat::t5;
  const std::string ternary_error = load_error(file, other_ternary);
  EXPECT_NE(ternary_error.find("--ternary i2, not t5"), std::string::npos) << ternary_error;
  const auto r = test::run_cli(
      {"run", "-m", file.string(), "-p", "Hello", "-n", "2", "--lm-head", "bf16", "-q"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("convert the checkpoint again with --lm-head bf16"), std::string::npos)
      << r.err;
}

TEST(ConvertedModel, DamagedFilesGiveClearErrors) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  const auto file = convert(dir, tmp / "m.bitnet", {});
  const auto size = std::filesystem::file_size(file);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 1000));
    f.put('\x5a');
  }
  EXPECT_THAT(load_error(file), HasSubstr("checksum mismatch in blob"));
  std::filesystem::resize_file(file, size - 10);
  EXPECT_THAT(load_error(file), HasSubstr("truncated or appended to"));
  const auto cli = test::run_cli({"run", "-m", file.string(), "-p", "x"});
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_THAT(cli.err, HasSubstr("bitnet: error:"));
}

// The meta and config_json sit behind the header checksum, which anyone can recompute: they are
// validated as any other input.
TEST(ConvertedModel, DamagedMetaGivesErrorsNamingTheFile) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  const auto file = convert(dir, tmp / "m.bitnet", {});
  const std::string original = test::read_file(file);
  const auto error_after = [&](const std::function<void(nlohmann::json&)>& edit) {
    test::write_file(file, original);
    test::edit_blob_file_header(file, edit);
    return load_error(file);
  };
  EXPECT_THAT(error_after([](nlohmann::json& h) { h["meta"]["ternary_format"] = "t6"; }),
              HasSubstr(file.string() + ": meta 'ternary_format': unknown ternary format 't6'"));
  EXPECT_THAT(error_after([](nlohmann::json& h) { h["meta"]["lm_head_format"] = "q2"; }),
              HasSubstr(file.string() + ": meta 'lm_head_format': unknown lm_head format 'q2'"));
}

// A header edit that applies edit() to the config.json text held in the meta.
std::function<void(nlohmann::json&)> edit_config(std::function<void(nlohmann::json&)> edit) {
  return [edit = std::move(edit)](nlohmann::json& header) {
    nlohmann::json config = nlohmann::json::parse(header["meta"]["config_json"].get<std::string>());
    edit(config);
    header["meta"]["config_json"] = config.dump();
  };
}

TEST(ConvertedModel, LayerCountBeyondTheFileFailsAtTheFirstMissingLayer) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  const auto file = convert(dir, tmp / "m.bitnet", {});
  // Allocating 2^30 layers up front would take hundreds of GB.
  test::edit_blob_file_header(
      file, edit_config([](nlohmann::json& c) { c["num_hidden_layers"] = 1 << 30; }));
  EXPECT_THAT(load_error(file),
              HasSubstr(file.string() + ": blob 'layers.2.qkv.packed' is missing"));
}

TEST(ConvertedModel, AttentionWidthMustEqualHiddenSize) {
  const auto dir = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  const auto file = convert(dir, tmp / "m.bitnet", {});
  // 6 heads of 32 with 1 KV head: the same fused qkv rows ((6 + 2) * 32 = (4 + 2 * 2) * 32) and
  // blob sizes, but 192 attention outputs for attn_sub_norm's 128 weights.
  test::edit_blob_file_header(file, edit_config([](nlohmann::json& c) {
                                c["num_attention_heads"] = 6;
                                c["num_key_value_heads"] = 1;
                              }));
  EXPECT_THAT(load_error(file),
              HasSubstr(file.string() + ": config_json: num_attention_heads * head_dim = 192 must "
                                        "equal hidden_size = 128"));
}

TEST(ConvertedModel, UntiedBf16HeadReleasesEmbeddingRows) {
  RandomModelSpec spec = tiny_spec(QuantMode::online, 4);
  spec.tie_word_embeddings = false;
  const auto dir = cached_model("untied", spec);
  test::TempDir tmp;
  LoadOptions options;
  options.lm_head = LmHeadFormat::bf16;
  // Untied, the embedding table is read a row per token, the head reads its own matrix.
  const auto untied = Model::load(convert(dir, tmp / "untied.bitnet", options));
  EXPECT_TRUE(untied->weights().embed.release_rows_after_read);
  // Tied to a bf16 head, the whole table is read every token anyway.
  const auto tied =
      Model::load(convert(cached_model("bf16", tiny_spec()), tmp / "tied.bitnet", options));
  EXPECT_FALSE(tied->weights().embed.release_rows_after_read);
}

TEST(ConvertedModel, TokenizerConfigErrorsNameTheModelFile) {
  const auto src = cached_model("bf16", tiny_spec());
  test::TempDir tmp;
  const auto dir = tmp / "model";
  std::filesystem::copy(src, dir);
  test::write_file(dir / "tokenizer_config.json", "{\"bos_token\": ");
  const auto file = convert(dir, tmp / "m.bitnet", {});
  try {
    Tokenizer::load(file);
    FAIL() << "loaded a broken tokenizer_config.json";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(file.string() + ": tokenizer_config.json: invalid JSON"));
  }
}

}  // namespace
}  // namespace bitnet
