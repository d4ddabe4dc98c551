// .bitnet files: every kernel-ready array of Model::Weights as a named blob, with the config
// and tokenizer files in the header's meta, so loading maps the file and points into it.
#include "model/converted_model.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "base/blob_file.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "model/weights.h"

namespace bitnet {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <class T>
std::span<const uint8_t> bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

// memcpy, except that an empty range (whose vector data() may be null, which memcpy must not be
// given) copies nothing.
void copy_bytes(void* out, std::span<const uint8_t> bytes) {
  if (!bytes.empty()) std::memcpy(out, bytes.data(), bytes.size());
}

const char* kLayerMatrices[] = {"qkv", "o", "gate_up", "down"};

TernaryMatrix LayerWeights::*matrix_member(int i) {
  static TernaryMatrix LayerWeights::*const members[] = {
      &LayerWeights::qkv, &LayerWeights::o, &LayerWeights::gate_up, &LayerWeights::down};
  return members[i];
}

std::vector<float> LayerWeights::*norm_member(int i) {
  static std::vector<float> LayerWeights::*const members[] = {
      &LayerWeights::input_norm, &LayerWeights::attn_sub_norm, &LayerWeights::post_attn_norm,
      &LayerWeights::ffn_sub_norm};
  return members[i];
}
const char* kLayerNorms[] = {"input_norm", "attn_sub_norm", "post_attn_norm", "ffn_sub_norm"};

}  // namespace

void write_converted_model(const Model& model, const std::filesystem::path& tokenizer_dir,
                           const std::filesystem::path& out, ThreadPool& pool) {
  const Model::Weights& w = model.weights();
  BlobFileWriter writer;
  auto add_dense = [&](const std::string& name, const DenseMatrix& m) {
    writer.add(name, m.bytes(),
               m.mapped() ? BlobFileWriter::Source::mapped : BlobFileWriter::Source::memory);
  };
  add_dense("embed", w.embed);
  if (!w.lm_head_tied) add_dense("lm_head", w.lm_head_own);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (int i = 0; i < 4; ++i) {
      const TernaryMatrix& m = w.layers[l].*matrix_member(i);
      writer.add(p + kLayerMatrices[i] + ".packed",
                 std::span<const uint8_t>(m.packed, static_cast<size_t>(m.bytes())));
      writer.add(p + kLayerMatrices[i] + ".scales", bytes_of(m.row_scales));
      writer.add(p + kLayerNorms[i], bytes_of(w.layers[l].*norm_member(i)));
    }
  }
  writer.add("final_norm", bytes_of(w.final_norm));
  const LmHead& head = w.output_head;
  if (head.format != LmHeadFormat::bf16) {
    writer.add(
        "output_head.codes",
        std::span<const uint8_t>(head.codes, static_cast<size_t>(head.rows * head.row_bytes())));
    writer.add("output_head.row_scales", bytes_of(head.row_scales));
    writer.add("output_head.group_scales", bytes_of(head.group_scales));
  }
  const std::string config_json = read_text(tokenizer_dir / "config.json");
  const std::string tokenizer_json = read_text(tokenizer_dir / "tokenizer.json");
  const auto tokenizer_config_path = tokenizer_dir / "tokenizer_config.json";
  const std::string tokenizer_config =
      std::filesystem::exists(tokenizer_config_path) ? read_text(tokenizer_config_path) : "";
  writer.add("tokenizer.json",
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tokenizer_json.data()),
                                      tokenizer_json.size()));
  writer.add("tokenizer_config.json",
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tokenizer_config.data()),
                                      tokenizer_config.size()));
  const nlohmann::json meta = {
      {"config_json", config_json},
      {"ternary_format",
       format_name(w.layers.empty() ? TernaryFormat::i2 : w.layers[0].qkv.format)},
      {"lm_head_format", format_name(head.format)},
      {"embed_dtype", dtype_name(w.embed.dtype)},
      {"lm_head_tied", w.lm_head_tied},
  };
  writer.write(out, meta, pool);
}

std::unique_ptr<Model::Weights> load_converted_weights(const std::shared_ptr<const BlobFile>& file,
                                                       const ModelConfig& c, ThreadPool& pool) {
  file->verify(pool);
  const nlohmann::json& meta = file->meta();
  auto w = std::make_unique<Model::Weights>();
  w->keep_alive.push_back(file);
  const std::string where = file->path().string();
  try {
    // The parse functions' errors list the choices; here they also name the file.
    const auto format = [&](const char* key, auto parse) {
      try {
        return parse(meta.at(key).get<std::string>());
      } catch (const Error& e) {
        throw Error(where + ": meta '" + key + "': " + e.what());
      }
    };
    const TernaryFormat ternary = format("ternary_format", parse_ternary_format);
    const LmHeadFormat head_format = format("lm_head_format", parse_lm_head_format);
    // As Model::load checks for a checkpoint directory: the forward pass normalizes the
    // attention output (q_dim values) with attn_sub_norm (hidden_size weights).
    if (c.q_dim() != c.hidden_dim) {
      throw Error(where +
                  ": config_json: num_attention_heads * head_dim = " + std::to_string(c.q_dim()) +
                  " must equal hidden_size = " + std::to_string(c.hidden_dim));
    }
    const std::string embed_dtype = meta.at("embed_dtype").get<std::string>();
    if (embed_dtype != "BF16" && embed_dtype != "F32")
      throw Error(where + ": unsupported embed_dtype " + embed_dtype);
    auto dense = [&](const std::string& name) {
      DenseMatrix m;
      m.rows = c.vocab_size;
      m.cols = c.hidden_dim;
      m.dtype = embed_dtype == "BF16" ? DType::BF16 : DType::F32;
      m.data = file->blob(name, m.byte_size()).data();
      return m;
    };
    auto floats = [&](const std::string& name, int64_t n) {
      const auto bytes = file->blob(name, static_cast<uint64_t>(n) * sizeof(float));
      std::vector<float> v(static_cast<size_t>(n));
      copy_bytes(v.data(), bytes);
      return v;
    };
    w->embed = dense("embed");
    w->lm_head_tied = meta.at("lm_head_tied").get<bool>();
    // Read a row at a time unless a bf16 head reads the whole table every token anyway.
    w->embed.release_rows_after_read = !(w->lm_head_tied && head_format == LmHeadFormat::bf16);
    if (!w->lm_head_tied) w->lm_head_own = dense("lm_head");
    const int64_t shapes[4][2] = {{c.q_dim() + 2 * c.kv_dim(), c.hidden_dim},
                                  {c.hidden_dim, c.q_dim()},
                                  {2LL * c.ffn_dim, c.hidden_dim},
                                  {c.hidden_dim, c.ffn_dim}};
    const int64_t norm_sizes[4] = {c.hidden_dim, c.hidden_dim, c.hidden_dim, c.ffn_dim};
    // A layer at a time, each checked against its blobs: a num_hidden_layers the file does not
    // hold fails at the first missing layer instead of allocating them all first.
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      LayerWeights& layer = w->layers.emplace_back();
      for (int i = 0; i < 4; ++i) {
        TernaryMatrix& m = layer.*matrix_member(i);
        m.rows = shapes[i][0];
        m.cols = shapes[i][1];
        m.format = ternary;
        m.packed =
            file->blob(p + kLayerMatrices[i] + ".packed", static_cast<uint64_t>(m.bytes())).data();
        m.row_scales = floats(p + kLayerMatrices[i] + ".scales", m.rows);
        layer.*norm_member(i) = floats(p + kLayerNorms[i], norm_sizes[i]);
      }
    }
    w->final_norm = floats("final_norm", c.hidden_dim);
    const DenseMatrix& source = w->lm_head();
    if (head_format == LmHeadFormat::bf16) {
      if (source.dtype == DType::BF16)
        w->output_head =
            LmHead::view_bf16(static_cast<const uint16_t*>(source.data), source.rows, source.cols);
    } else {
      LmHead head;  // codes stay in the mapped file; the small scale arrays are copied
      head.format = head_format;
      head.rows = c.vocab_size;
      head.cols = c.hidden_dim;
      head.row_scales.resize(head_format == LmHeadFormat::int8 ? static_cast<size_t>(head.rows)
                                                               : 0);
      head.group_scales.resize(
          head_format == LmHeadFormat::q4 ? static_cast<size_t>(head.rows * head.groups()) : 0);
      head.codes =
          file->blob("output_head.codes", static_cast<uint64_t>(head.rows * head.row_bytes()))
              .data();
      const auto row_scales =
          file->blob("output_head.row_scales", head.row_scales.size() * sizeof(float));
      copy_bytes(head.row_scales.data(), row_scales);
      const auto group_scales =
          file->blob("output_head.group_scales", head.group_scales.size() * sizeof(uint16_t));
      copy_bytes(head.group_scales.data(), group_scales);
      w->output_head = std::move(head);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed meta: " + e.what());
  }
  return w;
}

}  // namespace bitnet
