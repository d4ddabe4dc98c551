// Fuzzes ModelConfig::from_json (config.json). An accepted config must hold the invariants the
// loaders and the forward pass rely on without checking again.
#include <cmath>
#include <cstdint>
#include <exception>
#include <string_view>

#include "bitnet/config.h"
#include "fuzz_common.h"

using namespace bitnet;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source = "fuzz/config.json";
  ModelConfig c;
  try {
    c = ModelConfig::from_json(std::string_view(reinterpret_cast<const char*>(data), size), source);
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, source);
    return 0;
  }
  for (int v : {c.vocab_size, c.hidden_dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                c.head_dim, c.max_seq_len}) {
    if (v <= 0) fuzz::fail("a dimension is not positive");
  }
  if (c.head_dim % 2 != 0 || c.n_heads % c.n_kv_heads != 0) fuzz::fail("head layout");
  // Sizes the loaders and the forward pass compute in int.
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  if (q_dim + 2 * kv_dim > INT32_MAX) fuzz::fail("q_dim + 2 * kv_dim overflows int");
  if (c.q_dim() != q_dim || c.kv_dim() != kv_dim) fuzz::fail("q_dim / kv_dim");
  if (!std::isfinite(c.rope_theta) || !(c.rope_theta > 0)) fuzz::fail("rope_theta");
  if (!std::isfinite(c.rms_norm_eps) || !(c.rms_norm_eps > 0)) fuzz::fail("rms_norm_eps");
  if (c.bos_token_id && (*c.bos_token_id < 0 || *c.bos_token_id >= c.vocab_size))
    fuzz::fail("bos_token_id");
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) fuzz::fail("eos_token_id");
  }
  return 0;
}
