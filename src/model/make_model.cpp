#include "model/make_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/float16.h"
#include "base/safetensors.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/tokenizer.h"

namespace bitnet {
namespace {

using nlohmann::json;

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform values in [center - amplitude, center + amplitude), rounded to bf16 (the master dtype).
// Generated in fixed chunks, each with its own seed, so the result does not depend on threads.
void fill_bf16(ThreadPool& pool, uint64_t seed, const std::string& name, float center,
               float amplitude, uint16_t* out, int64_t n) {
  constexpr int64_t kChunk = 1 << 16;
  const uint64_t base = splitmix(seed ^ fnv1a(name));
  pool.parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      std::mt19937_64 rng(splitmix(base + static_cast<uint64_t>(c)));
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1)
        out[i] = f32_to_bf16(static_cast<float>(center + amplitude * (2.0 * u - 1.0)));
      }
    }
  });
}

struct Linear {
  std::string name;  // without ".weight"
  int64_t out, in;
};

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  if (!f) throw Error(path.string() + ": cannot write");
}

}  // namespace

RandomModelSpec RandomModelSpec::preset(const std::string& name) {
  RandomModelSpec s;
  if (name == "tiny") return s;
  if (name == "2b4t") {
    s.vocab_size = 128256;
    s.hidden_dim = 2560;
    s.ffn_dim = 6912;
    s.n_layers = 30;
    s.n_heads = 20;
    s.n_kv_heads = 5;
    s.max_seq_len = 4096;
    s.rope_theta = 500000.0;
    return s;
  }
  throw Error("unknown model preset '" + name + "' (choices: tiny, 2b4t)");
}

void write_random_model(const std::filesystem::path& dir, const RandomModelSpec& spec,
                        const std::optional<std::filesystem::path>& tokenizer_dir,
                        const std::function<void(double)>& progress) {
  const int head_dim = spec.hidden_dim / spec.n_heads;
  if (spec.hidden_dim % spec.n_heads != 0 || head_dim % 2 != 0 ||
      spec.n_heads % spec.n_kv_heads != 0) {
    throw Error(
        "model shape: heads must divide hidden size into even head dims, kv heads must divide "
        "heads");
  }
  std::filesystem::create_directories(dir);

  // Tokenizer first: the config's special ids come from it.
  if (tokenizer_dir) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::copy_file(*tokenizer_dir / file, dir / file,
                                 std::filesystem::copy_options::overwrite_existing);
    }
  } else {
    write_test_tokenizer(dir, spec.vocab_size);
  }
  const Tokenizer tokenizer = Tokenizer::load(dir);
  if (tokenizer.vocab_size() > spec.vocab_size) {
    throw Error("tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                " ids, more than vocab_size " + std::to_string(spec.vocab_size));
  }
  const auto bos = tokenizer.token_id("<|begin_of_text|>");
  const auto eos = tokenizer.token_id("<|end_of_text|>");

  const bool packed = spec.variant == QuantMode::offline;
  json config = {
      {"architectures", {"BitNetForCausalLM"}},
      {"model_type", "bitnet"},
      {"vocab_size", spec.vocab_size},
      {"hidden_size", spec.hidden_dim},
      {"intermediate_size", spec.ffn_dim},
      {"num_hidden_layers", spec.n_layers},
      {"num_attention_heads", spec.n_heads},
      {"num_key_value_heads", spec.n_kv_heads},
      {"head_dim", head_dim},
      {"hidden_act", "relu2"},
      {"max_position_embeddings", spec.max_seq_len},
      {"rope_theta", spec.rope_theta},
      {"rms_norm_eps", spec.rms_norm_eps},
      {"tie_word_embeddings", spec.tie_word_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", 0.02},
      {"use_cache", true},
      {"torch_dtype", "bfloat16"},
      {"quantization_config",
       {{"quant_method", "bitnet"},
        {"linear_class", packed && spec.linear_class_bitlinear ? "bitlinear" : "autobitlinear"},
        {"quantization_mode", packed ? "offline" : "online"}}},
  };
  if (bos) config["bos_token_id"] = *bos;
  if (eos) config["eos_token_id"] = *eos;
  write_text(dir / "config.json", config.dump(2) + "\n");

  // Tensors, in transformers' naming.
  std::vector<TensorSpec> specs;
  std::vector<Linear> linears;
  std::vector<std::pair<size_t, int>>
      kinds;  // per spec: 0 embed/lm_head, 1 norm, 2 linear weight, 3 scale
  const int64_t V = spec.vocab_size, H = spec.hidden_dim, F = spec.ffn_dim,
                KV = spec.n_kv_heads * head_dim;
  auto add = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, int kind,
                 size_t linear = 0) {
    specs.push_back({name, dtype, std::move(shape)});
    kinds.emplace_back(linear, kind);
  };
  add("model.embed_tokens.weight", DType::BF16, {V, H}, 0);
  for (int l = 0; l < spec.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* norm :
         {"input_layernorm", "post_attention_layernorm", "self_attn.attn_sub_norm"}) {
      add(p + norm + ".weight", DType::BF16, {H}, 1);
    }
    add(p + "mlp.ffn_sub_norm.weight", DType::BF16, {F}, 1);
    for (const Linear& lin :
         {Linear{p + "self_attn.q_proj", H, H}, Linear{p + "self_attn.k_proj", KV, H},
          Linear{p + "self_attn.v_proj", KV, H}, Linear{p + "self_attn.o_proj", H, H},
          Linear{p + "mlp.gate_proj", F, H}, Linear{p + "mlp.up_proj", F, H},
          Linear{p + "mlp.down_proj", H, F}}) {
      linears.push_back(lin);
      if (packed) {
        add(lin.name + ".weight", DType::U8, {lin.out / 4, lin.in}, 2, linears.size() - 1);
        add(lin.name + ".weight_scale", spec.scale_bf16 ? DType::BF16 : DType::F32, {1}, 3,
            linears.size() - 1);
      } else {
        add(lin.name + ".weight", DType::BF16, {lin.out, lin.in}, 2, linears.size() - 1);
      }
    }
  }
  add("model.norm.weight", DType::BF16, {H}, 1);
  if (!spec.tie_word_embeddings) add("lm_head.weight", DType::BF16, {V, H}, 0);

  ThreadPool pool(physical_core_count());
  std::vector<float> scales(linears.size(),
                            0.0f);  // weight scale (1/s) of each linear, set when packed
  // Scales are written right after their weights, so the packed weight's pass records them.
  write_safetensors(
      dir / "model.safetensors", specs,
      [&](size_t i, std::span<uint8_t> buf) {
        if (progress) progress(static_cast<double>(i) / static_cast<double>(specs.size()));
        const TensorSpec& t = specs[i];
        const auto [li, kind] = kinds[i];
        if (kind == 0) {
          fill_bf16(pool, spec.seed, t.name, 0.0f, 0.52f, reinterpret_cast<uint16_t*>(buf.data()),
                    static_cast<int64_t>(buf.size() / 2));
        } else if (kind == 1) {
          fill_bf16(pool, spec.seed, t.name, 1.0f, 0.1f, reinterpret_cast<uint16_t*>(buf.data()),
                    static_cast<int64_t>(buf.size() / 2));
        } else if (kind == 2) {
          const Linear& lin = linears[li];
          const int64_t n = lin.out * lin.in;
          std::vector<uint16_t> master_storage;
          uint16_t* master =
              packed ? (master_storage.resize(static_cast<size_t>(n)), master_storage.data())
                     : reinterpret_cast<uint16_t*>(buf.data());
          fill_bf16(pool, spec.seed, lin.name + ".weight", 0.0f, 0.087f, master, n);
          if (!packed) return;
          // Ternarize exactly as the online path does, then pack in transformers' offline layout:
          // byte P[p][k] holds row i * (out/4) + p at bits 2i..2i+1, code t + 1.
          double abs_sum = 0;
          for (int64_t j = 0; j < n; ++j) abs_sum += std::fabs(bf16_to_f32(master[j]));
          const float s =
              1.0f / std::max(static_cast<float>(abs_sum / static_cast<double>(n)), 1e-5f);
          scales[li] = 1.0f / s;
          const int64_t block_rows = lin.out / 4;
          std::fill(buf.begin(), buf.end(), uint8_t{0});
          for (int64_t r = 0; r < lin.out; ++r) {
            const int64_t i = r / block_rows, p = r % block_rows;
            for (int64_t k = 0; k < lin.in; ++k) {
              const float t =
                  std::clamp(std::nearbyint(bf16_to_f32(master[r * lin.in + k]) * s), -1.0f, 1.0f);
              buf[p * lin.in + k] |= static_cast<uint8_t>((static_cast<int>(t) + 1) << (2 * i));
            }
          }
        } else {
          const float value = spec.linear_class_bitlinear ? 1.0f / scales[li] : scales[li];
          if (spec.scale_bf16) {
            const uint16_t h = f32_to_bf16(value);
            std::memcpy(buf.data(), &h, 2);
          } else {
            std::memcpy(buf.data(), &value, 4);
          }
        }
      },
      {{"format", "pt"}});
  if (progress) progress(1.0);
}

}  // namespace bitnet
