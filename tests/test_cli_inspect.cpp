// bitnet check, info and demo.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/path_compare.h"
#include "test_util.h"

namespace bitnet {
namespace {

using test::cached_model;
using test::run_cli;
using test::tiny_spec;
using ::testing::HasSubstr;

TEST(PathCompare, DeviationMeasures) {
  const std::vector<float> want = {1, -2, 3, 4};
  Deviation same = measure_deviation(want, want);
  EXPECT_EQ(same.max_abs_err, 0);
  EXPECT_EQ(same.scale, 4);
  EXPECT_DOUBLE_EQ(same.correlation, 1);
  Deviation off = measure_deviation(std::vector<float>{1, -2, 3, 4.5f}, want);
  EXPECT_DOUBLE_EQ(off.max_abs_err, 0.5);
  EXPECT_DOUBLE_EQ(off.relative(), 0.125);
  EXPECT_LT(off.correlation, 1);
  EXPECT_GT(off.correlation, 0.99);
  Deviation nan = measure_deviation(std::vector<float>{1, NAN, 3, 4}, want);
  EXPECT_TRUE(std::isinf(nan.max_abs_err));
  EXPECT_EQ(measure_deviation(std::vector<float>{-1, 2, -3, -4}, want).correlation, -1);
}

TEST(PathCompare, OptimizedAndScalarPathsAreBitIdentical) {
  auto model = Model::load(cached_model("bf16", tiny_spec()));
  const std::vector<int32_t> tokens = {1, 50, 7, 300, 42, 42, 9, 100};
  const ForwardPath tested{model, CpuFeatures::host().best_isa(), 2, KvCacheType::f32};
  const ForwardPath reference{model, CpuIsa::scalar, 1, KvCacheType::f32};
  const PathComparison cmp = compare_forward_paths(tested, reference, tokens);
  ASSERT_EQ(cmp.layers.size(), static_cast<size_t>(model->config().n_layers));
  for (const Deviation& d : cmp.layers) EXPECT_EQ(d.max_abs_err, 0);
  EXPECT_EQ(cmp.logits.max_abs_err, 0);
  EXPECT_GT(cmp.logits.scale, 0);
  EXPECT_EQ(cmp.top1_agreements, cmp.positions);
  EXPECT_EQ(cmp.positions, 8);
}

TEST(CheckCli, PassesOnBothVariantsAndReportsEveryLayer) {
  for (const QuantMode variant : {QuantMode::online, QuantMode::offline}) {
    const auto dir =
        cached_model(variant == QuantMode::online ? "bf16" : "packed", tiny_spec(variant));
    const auto r = run_cli({"check", "-m", dir.string(), "-q", "-t", "2"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_THAT(r.out, HasSubstr("PASS"));
    EXPECT_THAT(r.out, HasSubstr("tolerance: max abs err <= 1e-3"));
    EXPECT_THAT(r.out, HasSubstr("logits"));
    EXPECT_THAT(r.out, HasSubstr("reference: scalar kernels, 1 thread, f32 KV cache"));
    for (int layer = 0; layer < tiny_spec().n_layers; ++layer)
      EXPECT_THAT(r.out, HasSubstr("\n  " + std::to_string(layer) + " ")) << r.out;
  }
  // A quantized KV cache is judged by correlation and agreement, and says so.
  const auto q8 = run_cli({"check", "-m", cached_model("bf16", tiny_spec()).string(), "-q",
                           "--kv-cache", "q8", "-p", "One two three four five six"});
  EXPECT_THAT(q8.out, HasSubstr("correlation >= 0.99"));
  EXPECT_THAT(q8.out, HasSubstr("q8 KV cache"));
}

TEST(InfoCli, JsonDescribesTheModel) {
  const auto dir = cached_model("bf16", tiny_spec());
  const auto r = run_cli({"info", "-m", dir.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  auto model = Model::load(dir);
  const ModelConfig& c = model->config();
  EXPECT_EQ(j["architecture"]["hidden_size"], c.hidden_dim);
  EXPECT_EQ(j["architecture"]["num_hidden_layers"], c.n_layers);
  EXPECT_EQ(j["architecture"]["num_key_value_heads"], c.n_kv_heads);
  EXPECT_EQ(j["architecture"]["quantization_mode"], "online");
  EXPECT_EQ(j["parameters"], model->sizes().n_params);
  EXPECT_EQ(j["bytes"]["ternary"], model->sizes().ternary);
  EXPECT_EQ(j["storage"]["embedding"], "BF16");
  for (const char* part :
       {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all"}) {
    ASSERT_TRUE(j["weight_scales"].contains(part)) << part;
    EXPECT_GT(j["weight_scales"][part]["min"].get<double>(), 0) << part;
    EXPECT_LE(j["weight_scales"][part]["min"].get<double>(),
              j["weight_scales"][part]["max"].get<double>());
  }
  EXPECT_EQ(j["weight_scales"]["all"]["matrices"], 7 * c.n_layers);
  EXPECT_EQ(j["tokenizer"]["chat_template"], "bitnet");
  EXPECT_TRUE(j["warnings"].empty());

  const auto human = run_cli({"info", "-m", dir.string(), "-q"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  for (const char* text : {"architecture", "hidden_size", "parameters:", "bytes as loaded",
                           "weight scales per projection", "warnings: none"}) {
    EXPECT_THAT(human.out, HasSubstr(text));
  }
}

// Zeroes one tensor's bytes in a copy of a model's safetensors file.
void zero_tensor(const std::filesystem::path& file, const std::string& name) {
  std::string bytes = test::read_file(file);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), sizeof header_size);
  const auto header = nlohmann::json::parse(bytes.substr(8, header_size));
  const auto offsets = header.at(name).at("data_offsets");
  const size_t begin = 8 + header_size + offsets[0].get<size_t>();
  const size_t end = 8 + header_size + offsets[1].get<size_t>();
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(begin),
            bytes.begin() + static_cast<std::ptrdiff_t>(end), '\0');
  test::write_file(file, bytes);
}

TEST(InfoCli, ReportsTheLoadersWarnings) {
  test::TempDir tmp;
  std::filesystem::copy(cached_model("bf16", tiny_spec()), tmp / "m");
  zero_tensor(tmp / "m" / "model.safetensors", "model.layers.0.input_layernorm.weight");
  const auto r = run_cli({"info", "-m", (tmp / "m").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto warnings = nlohmann::json::parse(r.out)["warnings"];
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0].get<std::string>(), HasSubstr("input_layernorm.weight' is all zeros"));
}

TEST(DemoCli, GeneratesFromARandomModelAndCleansUp) {
  const auto r = run_cli({"demo", "-n", "8", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("weights are random"));
  EXPECT_THAT(r.out, ::testing::StartsWith("Once upon a time"));
  // The folder it named is gone.
  const size_t at = r.err.find("bitnet-demo-");
  ASSERT_NE(at, std::string::npos);
  const size_t begin = r.err.rfind(' ', at) + 1;
  const size_t end = r.err.find_first_of(".\n ", at);
  const std::string folder = r.err.substr(begin, end - begin);
  EXPECT_FALSE(std::filesystem::exists(folder)) << folder;
  const auto quiet = run_cli({"demo", "-n", "4", "-q"});
  EXPECT_EQ(quiet.exit_code, 0);
  EXPECT_THAT(quiet.err, HasSubstr("weights are random"));  // said even when quiet
  EXPECT_THAT(quiet.err, ::testing::Not(HasSubstr("loading")));
}

}  // namespace
}  // namespace bitnet
