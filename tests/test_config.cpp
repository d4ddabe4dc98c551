// ModelConfig::from_json: a real BitNet b1.58 2B-4T config, and one error per invalid field.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitnet/config.h"
#include "bitnet/error.h"

namespace bitnet {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

const std::string kSource = "models/test/config.json";

// microsoft/bitnet-b1.58-2B-4T's config.json (offline, packed weights).
json config_2b4t() {
  return json::parse(R"({
    "architectures": ["BitNetForCausalLM"],
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "relu2",
    "hidden_size": 2560,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 4096,
    "model_type": "bitnet",
    "num_attention_heads": 20,
    "num_hidden_layers": 30,
    "num_key_value_heads": 5,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": true,
    "torch_dtype": "bfloat16",
    "use_cache": true,
    "vocab_size": 128256,
    "quantization_config": {
      "linear_class": "bitlinear",
      "quant_method": "bitnet",
      "quantization_mode": "offline"
    }
  })");
}

ModelConfig parse(const json& j) {
  return ModelConfig::from_json(j.dump(), kSource);
}

// The message of the bitnet::Error thrown when parsing `text`; fails the test when none is.
std::string error_of_text(const std::string& text) {
  try {
    ModelConfig::from_json(text, kSource);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected bitnet::Error for " << text;
  return "";
}

std::string error_of(const json& j) {
  const std::string msg = error_of_text(j.dump());
  EXPECT_THAT(msg, HasSubstr(kSource));
  return msg;
}

TEST(ModelConfig, Parses2B4TConfig) {
  const ModelConfig c = parse(config_2b4t());
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_dim, 2560);
  EXPECT_EQ(c.ffn_dim, 6912);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 20);
  EXPECT_EQ(c.n_kv_heads, 5);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_dim(), 2560);
  EXPECT_EQ(c.kv_dim(), 640);
  EXPECT_EQ(c.max_seq_len, 4096);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  ASSERT_TRUE(c.bos_token_id.has_value());
  EXPECT_EQ(*c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{128001});
  EXPECT_EQ(c.quant_mode, QuantMode::offline);
  EXPECT_TRUE(c.weight_scale_divides);
}

TEST(ModelConfig, EosTokenIdArray) {
  json j = config_2b4t();
  j["eos_token_id"] = {128001, 128009};
  EXPECT_EQ(parse(j).eos_token_ids, (std::vector<int32_t>{128001, 128009}));
}

TEST(ModelConfig, OptionalTokenIdsAbsentOrNull) {
  json j = config_2b4t();
  j.erase("bos_token_id");
  j["eos_token_id"] = nullptr;
  const ModelConfig c = parse(j);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
}

TEST(ModelConfig, OnlineModeWithAutoBitLinear) {
  json j = config_2b4t();
  j["quantization_config"] = {{"linear_class", "autobitlinear"},
                              {"quant_method", "bitnet"},
                              {"quantization_mode", "online"}};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.quant_mode, QuantMode::online);
  EXPECT_FALSE(c.weight_scale_divides);
}

TEST(ModelConfig, OfflineModeWithAutoBitLinearMultiplies) {
  json j = config_2b4t();
  j["quantization_config"]["linear_class"] = "autobitlinear";
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.quant_mode, QuantMode::offline);
  EXPECT_FALSE(c.weight_scale_divides);
}

TEST(ModelConfig, LinearClassDefaultsToBitLinear) {
  json j = config_2b4t();
  j["quantization_config"].erase("linear_class");
  EXPECT_TRUE(parse(j).weight_scale_divides);
}

TEST(ModelConfig, ExplicitHeadDim) {
  json j = config_2b4t();
  j["head_dim"] = 64;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 1280);
  EXPECT_EQ(c.kv_dim(), 320);
}

TEST(ModelConfig, MalformedJson) {
  EXPECT_THAT(error_of_text("{\"vocab_size\": 12,"), HasSubstr(kSource));
  EXPECT_THAT(error_of_text(""), HasSubstr(kSource));
  EXPECT_THAT(error_of_text("[1, 2]"), HasSubstr(kSource));
}

TEST(ModelConfig, WrongArchitectures) {
  for (const json& arch : {json::array({"LlamaForCausalLM"}), json("BitNetForCausalLM"),
                           json::array(), json::array({"BitNetForCausalLM", "X"})}) {
    SCOPED_TRACE(arch.dump());
    json j = config_2b4t();
    j["architectures"] = arch;
    EXPECT_THAT(error_of(j), HasSubstr("'architectures'"));
  }
}

TEST(ModelConfig, WrongModelType) {
  json j = config_2b4t();
  j["model_type"] = "llama";
  EXPECT_THAT(error_of(j), HasSubstr("'model_type'"));
}

TEST(ModelConfig, MissingRequiredField) {
  const std::vector<std::string> required = {
      "architectures",           "hidden_act",        "vocab_size",          "hidden_size",
      "intermediate_size",       "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
      "max_position_embeddings", "rope_theta",        "rms_norm_eps",        "tie_word_embeddings",
      "quantization_config"};
  for (const std::string& field : required) {
    SCOPED_TRACE(field);
    json j = config_2b4t();
    j.erase(field);
    EXPECT_THAT(error_of(j), HasSubstr("'" + field + "'"));
    j = config_2b4t();
    j[field] = nullptr;  // null counts as missing
    EXPECT_THAT(error_of(j), HasSubstr("'" + field + "'"));
  }
  json j = config_2b4t();
  j["quantization_config"].erase("quantization_mode");
  const std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("quantization_mode'"));
  EXPECT_THAT(msg, HasSubstr("quantization_config"));
}

TEST(ModelConfig, HiddenActSilu) {
  json j = config_2b4t();
  j["hidden_act"] = "silu";
  const std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("'hidden_act'"));
  EXPECT_THAT(msg, HasSubstr("silu"));
}

TEST(ModelConfig, NonPositiveOrNonIntegerInts) {
  const std::vector<std::string> ints = {
      "vocab_size",          "hidden_size",         "intermediate_size",       "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "head_dim"};
  for (const std::string& field : ints) {
    for (const json& bad : {json(0), json(-1), json(2.5), json("8"), json(int64_t{1} << 40)}) {
      SCOPED_TRACE(field + " = " + bad.dump());
      json j = config_2b4t();
      j[field] = bad;
      EXPECT_THAT(error_of(j), HasSubstr("'" + field + "'"));
    }
  }
}

TEST(ModelConfig, NonPositiveFloats) {
  for (const std::string& field : std::vector<std::string>{"rope_theta", "rms_norm_eps"}) {
    for (const json& bad : {json(0.0), json(-1e-5), json("1e-5"), json(false)}) {
      SCOPED_TRACE(field + " = " + bad.dump());
      json j = config_2b4t();
      j[field] = bad;
      EXPECT_THAT(error_of(j), HasSubstr("'" + field + "'"));
    }
  }
}

TEST(ModelConfig, FloatsMustStayPositiveAsFloats) {
  // 1e-50 rounds to 0 as a float, 1e39 to infinity; neither is a usable epsilon or base.
  for (const std::string& field : std::vector<std::string>{"rope_theta", "rms_norm_eps"}) {
    for (const json& bad : {json(1e-50), json(1e39), json(1e300)}) {
      SCOPED_TRACE(field + " = " + bad.dump());
      json j = config_2b4t();
      j[field] = bad;
      EXPECT_THAT(error_of(j), HasSubstr("'" + field + "'"));
    }
  }
  json j = config_2b4t();
  j["rms_norm_eps"] = 1e-40;  // a subnormal float, still positive
  EXPECT_GT(parse(j).rms_norm_eps, 0.0f);
}

TEST(ModelConfig, AttentionRowsMustFitAnInt) {
  // (20 + 2 * 5) * 2^28 rows of q, k and v: more than an int holds.
  json j = config_2b4t();
  j["head_dim"] = 1 << 28;
  const std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("'head_dim'"));
  EXPECT_THAT(msg, HasSubstr("8053063680"));
}

TEST(ModelConfig, TieWordEmbeddingsMustBeBool) {
  json j = config_2b4t();
  j["tie_word_embeddings"] = 1;
  EXPECT_THAT(error_of(j), HasSubstr("'tie_word_embeddings'"));
}

TEST(ModelConfig, HeadsNotDivisibleByKvHeads) {
  json j = config_2b4t();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(error_of(j), HasSubstr("'num_key_value_heads'"));
}

TEST(ModelConfig, HiddenNotDivisibleByHeadsWithoutHeadDim) {
  json j = config_2b4t();
  j["num_attention_heads"] = 30;
  j["num_key_value_heads"] = 5;
  EXPECT_THAT(error_of(j), HasSubstr("'num_attention_heads'"));
}

TEST(ModelConfig, OddHeadDim) {
  json j = config_2b4t();
  j["head_dim"] = 127;
  EXPECT_THAT(error_of(j), HasSubstr("'head_dim'"));
  // An odd default head_dim (hidden_size / heads) is rejected too.
  j = config_2b4t();
  j["hidden_size"] = 2540;  // 2540 / 20 = 127
  EXPECT_THAT(error_of(j), HasSubstr("'head_dim'"));
}

// quantization_config's fields may be named bare ('linear_class') or qualified
// ('quantization_config.linear_class'); the assertions accept both.
TEST(ModelConfig, UnknownQuantizationMode) {
  json j = config_2b4t();
  j["quantization_config"]["quantization_mode"] = "foo";
  const std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("quantization_mode'"));
  EXPECT_THAT(msg, HasSubstr("foo"));
}

TEST(ModelConfig, UnknownLinearClass) {
  json j = config_2b4t();
  j["quantization_config"]["linear_class"] = "foo";
  const std::string msg = error_of(j);
  EXPECT_THAT(msg, HasSubstr("linear_class'"));
  EXPECT_THAT(msg, HasSubstr("foo"));
}

TEST(ModelConfig, BitLinearWithOnlineQuantization) {
  json j = config_2b4t();
  j["quantization_config"]["quantization_mode"] = "online";
  EXPECT_THAT(error_of(j), HasSubstr("linear_class'"));
}

TEST(ModelConfig, WrongQuantMethodOrConfigType) {
  json j = config_2b4t();
  j["quantization_config"]["quant_method"] = "gptq";
  EXPECT_THAT(error_of(j), HasSubstr("quant_method'"));
  j = config_2b4t();
  j["quantization_config"] = "bitnet";
  EXPECT_THAT(error_of(j), HasSubstr("'quantization_config'"));
}

TEST(ModelConfig, TokenIdsOutOfVocab) {
  for (const json& bad : {json(128256), json(200000), json(-1), json(1.5)}) {
    SCOPED_TRACE(bad.dump());
    json j = config_2b4t();
    j["eos_token_id"] = bad;
    EXPECT_THAT(error_of(j), HasSubstr("'eos_token_id'"));
    j = config_2b4t();
    j["eos_token_id"] = {128001, bad};
    EXPECT_THAT(error_of(j), HasSubstr("'eos_token_id'"));
    j = config_2b4t();
    j["bos_token_id"] = bad;
    EXPECT_THAT(error_of(j), HasSubstr("'bos_token_id'"));
  }
  json j = config_2b4t();
  j["eos_token_id"] = 128255;  // the last id is fine
  EXPECT_EQ(parse(j).eos_token_ids, std::vector<int32_t>{128255});
}

TEST(ModelConfig, RopeScalingPresent) {
  json j = config_2b4t();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_THAT(error_of(j), HasSubstr("'rope_scaling'"));
  j["rope_scaling"] = nullptr;  // null is how HF writes "absent"
  EXPECT_NO_THROW(parse(j));
}

}  // namespace
}  // namespace bitnet
