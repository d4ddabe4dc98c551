// Converted .bitnet files: same function as the directory they came from, and clear errors when
// damaged.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "bitnet/session.h"
#include "model/converted_model.h"
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

}  // namespace
}  // namespace bitnet
