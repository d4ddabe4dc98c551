#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bitnet/config.h"
#include "bitnet/error.h"

namespace bitnet {
namespace {

using nlohmann::json;

// Typed access to one JSON object's fields; errors read "config.json: field 'a.b' ...".
class Fields {
 public:
  Fields(const json& j, std::string source, std::string key_prefix = "")
      : j_(j), source_(std::move(source)), prefix_(std::move(key_prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(source_ + ": field '" + prefix_ + key + "' " + what);
  }
  const json& require(const std::string& key) const {
    if (!j_.contains(key) || j_[key].is_null()) fail(key, "is missing");
    return j_[key];
  }
  int positive_int(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (1 << 30)) {
      fail(key, "must be a positive integer, found " + v.dump());
    }
    return v.get<int>();
  }
  // Positive as a float, too: 1e-50 would round to 0 and 1e39 to infinity.
  float positive_float(const std::string& key) const {
    const json& v = require(key);
    const double d = v.is_number() ? v.get<double>() : 0.0;
    if (!(d > 0) || d > std::numeric_limits<float>::max() || static_cast<float>(d) == 0.0f) {
      fail(key, "must be a positive number within float range, found " + v.dump());
    }
    return static_cast<float>(d);
  }
  std::string string(const std::string& key) const {
    const json& v = require(key);
    if (!v.is_string()) fail(key, "must be a string, found " + v.dump());
    return v.get<std::string>();
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_[key].is_null(); }

 private:
  const json& j_;
  std::string source_, prefix_;
};

}  // namespace

ModelConfig ModelConfig::from_json(std::string_view text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(source + ": malformed JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  Fields f(j, source);

  const json& arch = f.require("architectures");
  if (!arch.is_array() || arch.size() != 1 || arch[0] != "BitNetForCausalLM") {
    f.fail("architectures", "must be [\"BitNetForCausalLM\"], found " + arch.dump());
  }
  if (f.has("model_type") && f.string("model_type") != "bitnet") {
    f.fail("model_type", "must be \"bitnet\", found \"" + f.string("model_type") + "\"");
  }
  const std::string act = f.string("hidden_act");
  if (act != "relu2")
    f.fail("hidden_act", "must be \"relu2\" (squared ReLU), found \"" + act + "\"");

  ModelConfig c;
  c.vocab_size = f.positive_int("vocab_size");
  c.hidden_dim = f.positive_int("hidden_size");
  c.ffn_dim = f.positive_int("intermediate_size");
  c.n_layers = f.positive_int("num_hidden_layers");
  c.n_heads = f.positive_int("num_attention_heads");
  c.n_kv_heads = f.positive_int("num_key_value_heads");
  c.head_dim = f.has("head_dim") ? f.positive_int("head_dim") : c.hidden_dim / c.n_heads;
  if (!f.has("head_dim") && c.hidden_dim % c.n_heads != 0) {
    f.fail("num_attention_heads", "must divide hidden_size when head_dim is absent");
  }
  if (c.head_dim % 2 != 0) f.fail("head_dim", "must be even for rotary embeddings");
  // q_dim() + 2 * kv_dim(), the fused qkv rows, is computed in int.
  const int64_t qkv_rows = (int64_t{c.n_heads} + 2 * int64_t{c.n_kv_heads}) * c.head_dim;
  if (qkv_rows > (1 << 30)) {
    f.fail("head_dim", "gives (num_attention_heads + 2 * num_key_value_heads) * head_dim = " +
                           std::to_string(qkv_rows) + ", more than 2^30");
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    f.fail("num_key_value_heads",
           "must divide num_attention_heads (" + std::to_string(c.n_heads) + ")");
  }
  c.max_seq_len = f.positive_int("max_position_embeddings");
  c.rope_theta = f.positive_float("rope_theta");
  c.rms_norm_eps = f.positive_float("rms_norm_eps");
  if (f.has("rope_scaling")) f.fail("rope_scaling", "is not supported (BitNet uses plain RoPE)");

  const json& tie = f.require("tie_word_embeddings");
  if (!tie.is_boolean()) f.fail("tie_word_embeddings", "must be true or false");
  c.tie_word_embeddings = tie.get<bool>();

  auto token_id = [&](const std::string& key, const json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.vocab_size) {
      f.fail(key, "must be a token id below vocab_size " + std::to_string(c.vocab_size) +
                      ", found " + v.dump());
    }
    return v.get<int32_t>();
  };
  if (f.has("bos_token_id")) c.bos_token_id = token_id("bos_token_id", j["bos_token_id"]);
  if (f.has("eos_token_id")) {
    const json& eos = j["eos_token_id"];
    if (eos.is_array()) {
      for (const json& e : eos) c.eos_token_ids.push_back(token_id("eos_token_id", e));
    } else {
      c.eos_token_ids.push_back(token_id("eos_token_id", eos));
    }
  }

  const json& q = f.require("quantization_config");
  if (!q.is_object()) f.fail("quantization_config", "must be an object");
  Fields qf(q, source, "quantization_config.");
  if (qf.has("quant_method") && qf.string("quant_method") != "bitnet") {
    qf.fail("quant_method", "must be \"bitnet\", found \"" + qf.string("quant_method") + "\"");
  }
  const std::string mode = qf.string("quantization_mode");
  if (mode == "online") {
    c.quant_mode = QuantMode::online;
  } else if (mode == "offline") {
    c.quant_mode = QuantMode::offline;
  } else {
    qf.fail("quantization_mode", "must be \"online\" or \"offline\", found \"" + mode + "\"");
  }
  const std::string linear_class = qf.has("linear_class") ? qf.string("linear_class") : "bitlinear";
  if (linear_class != "bitlinear" && linear_class != "autobitlinear") {
    qf.fail("linear_class",
            "must be \"bitlinear\" or \"autobitlinear\", found \"" + linear_class + "\"");
  }
  if (linear_class == "bitlinear" && c.quant_mode == QuantMode::online) {
    qf.fail("linear_class",
            "\"bitlinear\" reads packed weights; online quantization needs \"autobitlinear\"");
  }
  c.weight_scale_divides = linear_class == "bitlinear";
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  std::ifstream in(path);
  if (!in)
    throw Error(path.string() + ": cannot open (is " + model_dir.string() + " a model directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path.string());
}

}  // namespace bitnet
