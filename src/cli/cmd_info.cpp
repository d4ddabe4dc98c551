// bitnet info: what a model directory holds: architecture, sizes, storage, weight scales and
// the loader's warnings.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

#include "bitnet/chat.h"
#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"
#include "model/weights.h"

namespace bitnet::cli {
namespace {

using nlohmann::ordered_json;

struct InfoArgs {
  std::string model;
  bool json = false;
  bool quiet = false;
};

// A float config value as written in config.json (7 significant digits), not its binary
// double expansion (1e-05, not 9.999999747378752e-06).
double as_written(float value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.7g", static_cast<double>(value));
  return std::strtod(buffer, nullptr);
}

ordered_json architecture(const ModelConfig& c) {
  return {{"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_dim},
          {"intermediate_size", c.ffn_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_seq_len},
          {"rope_theta", as_written(c.rope_theta)},
          {"rms_norm_eps", as_written(c.rms_norm_eps)},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"bos_token_id", c.bos_token_id ? ordered_json(*c.bos_token_id) : ordered_json()},
          {"eos_token_ids", c.eos_token_ids},
          {"quantization_mode", c.quant_mode == QuantMode::online ? "online" : "offline"},
          {"linear_class", c.weight_scale_divides ? "bitlinear" : "autobitlinear"}};
}

// The weight scale of each projection, over all layers. Fused matrices keep each part's scale
// on its rows, so a part's first row gives it.
ordered_json weight_scales(const Model& model) {
  const ModelConfig& c = model.config();
  struct Part {
    const char* name;
    const TernaryMatrix LayerWeights::*matrix;
    int64_t first_row;
  };
  const Part parts[] = {{"q_proj", &LayerWeights::qkv, 0},
                        {"k_proj", &LayerWeights::qkv, c.q_dim()},
                        {"v_proj", &LayerWeights::qkv, c.q_dim() + c.kv_dim()},
                        {"o_proj", &LayerWeights::o, 0},
                        {"gate_proj", &LayerWeights::gate_up, 0},
                        {"up_proj", &LayerWeights::gate_up, c.ffn_dim},
                        {"down_proj", &LayerWeights::down, 0}};
  ordered_json out = ordered_json::object();
  double all_min = std::numeric_limits<double>::infinity(), all_max = -all_min, all_sum = 0;
  int64_t all_count = 0;
  for (const Part& part : parts) {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
    int64_t count = 0;
    for (const LayerWeights& layer : model.weights().layers) {
      const std::vector<float>& scales = (layer.*part.matrix).row_scales;
      if (part.first_row >= static_cast<int64_t>(scales.size())) continue;
      const double s = scales[static_cast<size_t>(part.first_row)];
      lo = std::min(lo, s);
      hi = std::max(hi, s);
      sum += s;
      ++count;
    }
    if (count == 0) continue;
    out[part.name] = {{"min", lo}, {"max", hi}, {"mean", sum / static_cast<double>(count)}};
    all_min = std::min(all_min, lo);
    all_max = std::max(all_max, hi);
    all_sum += sum;
    all_count += count;
  }
  if (all_count > 0) {
    out["all"] = {{"min", all_min},
                  {"max", all_max},
                  {"mean", all_sum / static_cast<double>(all_count)},
                  {"matrices", all_count}};
  }
  return out;
}

ordered_json tokenizer_info(const std::string& model_dir) {
  try {
    const Tokenizer tokenizer = Tokenizer::load(model_dir);
    const std::string& jinja = tokenizer.chat_template();
    const auto format = recognize_chat_template(jinja);
    return {{"vocab_size", tokenizer.vocab_size()},
            {"chat_template", jinja.empty() ? "none"
                              : format      ? chat_format_name(*format)
                                            : "unrecognized"}};
  } catch (const Error& e) {
    return {{"error", e.what()}};
  }
}

ordered_json describe(const std::string& model_dir, const Model& model) {
  const Model::Sizes sizes = model.sizes();
  const Model::Weights& w = model.weights();
  const TernaryFormat ternary_format =
      w.layers.empty() ? TernaryFormat::i2 : w.layers.front().qkv.format;
  return {
      {"path", model_dir},
      {"architecture", architecture(model.config())},
      {"parameters", sizes.n_params},
      {"bytes",
       {{"ternary", sizes.ternary},
        {"embedding", sizes.embedding},
        {"lm_head", sizes.lm_head_is_embedding ? 0 : sizes.lm_head},
        {"norms", sizes.norms},
        {"total", sizes.ternary + sizes.embedding + sizes.norms +
                      (sizes.lm_head_is_embedding ? 0 : sizes.lm_head)}}},
      {"storage",
       {{"ternary", format_name(ternary_format)},
        {"embedding", dtype_name(w.embed.dtype)},
        {"lm_head", sizes.lm_head_is_embedding ? std::string("tied to the embedding")
                                               : std::string(dtype_name(w.lm_head().dtype))}}},
      {"weight_scales", weight_scales(model)},
      {"tokenizer", tokenizer_info(model_dir)},
      {"warnings", model.warnings()},
  };
}

std::string human_bytes(uint64_t bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buffer;
}

std::string scalar_text(const ordered_json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

void print_human(const ordered_json& info) {
  std::printf("model: %s\n\narchitecture\n", info["path"].get<std::string>().c_str());
  for (const auto& [key, value] : info["architecture"].items())
    std::printf("  %-24s %s\n", key.c_str(), scalar_text(value).c_str());
  const double params = info["parameters"].get<double>();
  std::printf("\nparameters: %s (%.3g %s)\n", info["parameters"].dump().c_str(),
              params >= 1e9 ? params / 1e9 : params / 1e6, params >= 1e9 ? "B" : "M");
  std::printf("\nbytes as loaded\n");
  for (const auto& [key, value] : info["bytes"].items()) {
    std::printf("  %-24s %s (%s bytes)\n", key.c_str(), human_bytes(value.get<uint64_t>()).c_str(),
                value.dump().c_str());
  }
  std::printf("\nstorage\n");
  for (const auto& [key, value] : info["storage"].items())
    std::printf("  %-24s %s\n", key.c_str(), scalar_text(value).c_str());
  std::printf("\nweight scales per projection (over layers)\n");
  for (const auto& [key, value] : info["weight_scales"].items()) {
    std::printf("  %-24s min %.6g  max %.6g  mean %.6g\n", key.c_str(), value["min"].get<double>(),
                value["max"].get<double>(), value["mean"].get<double>());
  }
  std::printf("\ntokenizer\n");
  for (const auto& [key, value] : info["tokenizer"].items())
    std::printf("  %-24s %s\n", key.c_str(), scalar_text(value).c_str());
  const auto& warnings = info["warnings"];
  std::printf("\nwarnings: %s\n", warnings.empty() ? "none" : "");
  for (const auto& w : warnings) std::printf("  %s\n", w.get<std::string>().c_str());
}

}  // namespace

Action add_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model: architecture, sizes, storage");
  add_model_option(*cmd, args->model);
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->add_flag("-q,--quiet", args->quiet, "No loading progress on stderr");
  return [args] {
    const std::string model_dir = resolve_model_path(args->model).string();
    // The loader's warnings are part of the report: print them there, not as loading noise.
    Progress progress("loading " + model_dir, args->quiet || args->json);
    LoadOptions options;
    options.progress = [&](const std::string&, double f) { progress.update(f); };
    auto model = Model::load(model_dir, options);
    progress.finish();
    const ordered_json info = describe(model_dir, *model);
    if (args->json) {
      std::printf("%s\n", info.dump(2, ' ', false, ordered_json::error_handler_t::replace).c_str());
    } else {
      print_human(info);
    }
    return 0;
  };
}

}  // namespace bitnet::cli
