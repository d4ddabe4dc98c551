// Loads a HuggingFace BitNet model directory: validates every tensor and packs the ternary
// weights into the kernel layout (ternary_packing.h), fusing q/k/v and gate/up.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "base/blob_file.h"
#include "base/float16.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "kernels/cpu/canonical_math.h"
#include "model/converted_model.h"
#include "model/weights.h"

namespace bitnet {
namespace {

std::string shape_str(std::initializer_list<int64_t> shape) {
  std::string s = "[";
  size_t i = 0;
  for (int64_t d : shape) s += (i++ ? ", " : "") + std::to_string(d);
  return s + "]";
}

// Values [first, first + n) of a float tensor, as f32: one dtype dispatch for a whole row.
void floats_at(const TensorView& t, int64_t first, int64_t n, float* out) {
  const uint8_t* p = t.bytes.data();
  auto widen_16_bit = [&](auto to_f32) {
    for (int64_t k = 0; k < n; ++k) {
      uint16_t h;
      std::memcpy(&h, p + 2 * (first + k), 2);
      out[k] = to_f32(h);
    }
  };
  switch (t.dtype) {
    case DType::BF16:
      widen_16_bit([](uint16_t h) { return bf16_to_f32(h); });
      return;
    case DType::F16:
      widen_16_bit([](uint16_t h) { return f16_to_f32(h); });
      return;
    case DType::F32:
      std::memcpy(out, p + 4 * first, static_cast<size_t>(n) * 4);
      return;
    default:
      std::fill_n(out, n, 0.0f);
  }
}

// Adds the nonzero and the non-finite values among v[n] to the counts.
void count_values(const float* v, int64_t n, int64_t& nonzero, int64_t& nonfinite) {
  int64_t nz = 0, nf = 0;
  for (int64_t k = 0; k < n; ++k) {
    nz += v[k] != 0.0f;
    nf += !std::isfinite(v[k]);
  }
  nonzero += nz;
  nonfinite += nf;
}

bool is_float(DType d) {
  return d == DType::BF16 || d == DType::F16 || d == DType::F32;
}

class Loader {
 public:
  Loader(const std::filesystem::path& dir, const ModelConfig& config, const LoadOptions& options,
         std::vector<std::string>& warnings)
      : config_(config),
        options_(options),
        warnings_(warnings),
        pool_(options.n_threads > 0 ? options.n_threads : physical_core_count()) {
    tensors_ = std::make_shared<TensorSet>(TensorSet::open_dir(dir));
  }

  std::unique_ptr<Model::Weights> load() {
    const ModelConfig& c = config_;
    if (c.q_dim() != c.hidden_dim) {
      throw Error(tensors_->source_name() +
                  ": num_attention_heads * head_dim = " + std::to_string(c.q_dim()) +
                  " must equal hidden_size = " + std::to_string(c.hidden_dim) +
                  " (attn_sub_norm spans hidden_size)");
    }
    auto w = std::make_unique<Model::Weights>();
    w->keep_alive.push_back(tensors_);
    w->embed = dense("model.embed_tokens.weight", c.vocab_size, c.hidden_dim);
    // Unless a bf16 head reads the whole table every token, the embedding is read from here on
    // once, to be quantized into the head, and then a row at a time: its pages, all touched by
    // the checks, are dropped now, as the head is quantized, and after each row read (as a
    // converted file's are).
    const bool bf16_head = options_.lm_head_or_default() == LmHeadFormat::bf16;
    const bool own_head = tensors_->find("lm_head.weight") != nullptr;
    const bool embed_by_rows = (!bf16_head || own_head) && w->embed.mapped();
    if (embed_by_rows) release_pages(w->embed.bytes());
    // A layer at a time: a num_hidden_layers the checkpoint does not hold fails at the first
    // missing tensor instead of allocating every layer first.
    for (int l = 0; l < c.n_layers; ++l) {
      report(static_cast<double>(l) / c.n_layers);
      load_layer(l, w->layers.emplace_back());
    }
    w->final_norm = vector("model.norm.weight", c.hidden_dim);
    if (own_head) {
      w->lm_head_tied = false;
      w->lm_head_own = dense("lm_head.weight", c.vocab_size, c.hidden_dim);
      // Read once more, to be quantized.
      if (!bf16_head && w->lm_head_own.mapped()) release_pages(w->lm_head_own.bytes());
    } else if (!c.tie_word_embeddings) {
      throw Error(tensors_->source_name() +
                  ": tensor 'lm_head.weight' is missing and config.json has "
                  "tie_word_embeddings: false");
    }
    w->output_head = output_head(w->lm_head());
    w->embed.release_rows_after_read = embed_by_rows;
    report(1.0);
    return w;
  }

 private:
  void report(double fraction) {
    if (options_.progress) options_.progress("loading", fraction);
  }

  void warn(const std::string& message) {
    std::lock_guard lock(warn_mutex_);
    warnings_.push_back(message);
  }

  const TensorView& get(const std::string& name) { return tensors_->get(name); }

  // The lm_head in the requested format, quantized here once (rows split across the pool).
  LmHead output_head(const DenseMatrix& source) {
    if (options_.lm_head_or_default() == LmHeadFormat::bf16) {
      // An fp16/f32 checkpoint's head was widened to f32: the forward pass uses it as is.
      if (source.dtype != DType::BF16) return {};
      return LmHead::view_bf16(static_cast<const uint16_t*>(source.data), source.rows, source.cols);
    }
    LmHead head = LmHead::allocate(options_.lm_head_or_default(), source.rows, source.cols);
    constexpr int64_t kChunkRows = 256;
    const size_t row_bytes = source.byte_size() / static_cast<size_t>(source.rows);
    pool_.parallel_for(source.rows, kChunkRows, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(source.cols));
      for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) {
        const int64_t c1 = std::min(r1, c0 + kChunkRows);
        for (int64_t r = c0; r < c1; ++r) {
          source.row_to_f32(r, row.data());
          head.set_row(r, row.data());
        }
        // The quantized rows are read again at most one at a time (embedding lookups).
        if (source.mapped())
          release_pages(source.bytes().subspan(c0 * row_bytes, (c1 - c0) * row_bytes));
      }
    });
    // Again as a whole: a fault maps the pages around it, across the chunks' edges.
    if (source.mapped()) release_pages(source.bytes());
    return head;
  }

  [[noreturn]] void bad_tensor(const TensorView& t, const std::string& expected) {
    throw Error(tensors_->source_name() + ": tensor '" + t.name + "': expected " + expected +
                ", found " + t.describe());
  }

  void check_float_shape(const TensorView& t, std::initializer_list<int64_t> shape) {
    std::vector<int64_t> want(shape);
    if (!is_float(t.dtype) || t.shape != want)
      bad_tensor(t, shape_str(shape) + " BF16, F16 or F32");
  }

  // Scans a float tensor for the corruptions reported for this model: all zeros, NaN or Inf.
  void check_values(const TensorView& t) {
    const int64_t n = t.numel();
    std::atomic<int64_t> nonzero{0}, nonfinite{0};
    pool_.parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
      constexpr int64_t kChunk = 4096;
      float values[kChunk];
      int64_t nz = 0, nf = 0;
      for (int64_t i = begin; i < end; i += kChunk) {
        const int64_t count = std::min(kChunk, end - i);
        floats_at(t, i, count, values);
        count_values(values, count, nz, nf);
      }
      nonzero += nz;
      nonfinite += nf;
    });
    if (n > 0 && nonzero == 0) warn("tensor '" + t.name + "' is all zeros (corrupted download?)");
    if (nonfinite > 0) {
      warn("tensor '" + t.name + "' has " + std::to_string(nonfinite.load()) +
           " non-finite values (corrupted download?)");
    }
  }

  std::vector<float> vector(const std::string& name, int64_t n) {
    const TensorView& t = get(name);
    check_float_shape(t, {n});
    check_values(t);
    std::vector<float> v(n);
    floats_at(t, 0, n, v.data());
    return v;
  }

  DenseMatrix dense(const std::string& name, int64_t rows, int64_t cols) {
    const TensorView& t = get(name);
    check_float_shape(t, {rows, cols});
    check_values(t);
    DenseMatrix m;
    m.rows = rows;
    m.cols = cols;
    if (t.dtype == DType::F16) {  // no fp16 kernels: widen once to f32
      m.dtype = DType::F32;
      m.storage.resize(static_cast<size_t>(rows * cols) * 4);
      float* out = reinterpret_cast<float*>(m.storage.data());
      floats_at(t, 0, rows * cols, out);
      m.data = m.storage.data();
    } else {
      m.dtype = t.dtype;
      m.data = t.bytes.data();
    }
    return m;
  }

  void load_layer(int l, LayerWeights& lw) {
    const ModelConfig& c = config_;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    lw.input_norm = vector(p + "input_layernorm.weight", c.hidden_dim);
    lw.post_attn_norm = vector(p + "post_attention_layernorm.weight", c.hidden_dim);
    lw.attn_sub_norm = vector(p + "self_attn.attn_sub_norm.weight", c.hidden_dim);
    lw.ffn_sub_norm = vector(p + "mlp.ffn_sub_norm.weight", c.ffn_dim);

    allocate(lw.qkv, c.q_dim() + 2 * c.kv_dim(), c.hidden_dim);
    ternary(p + "self_attn.q_proj", lw.qkv, 0, c.q_dim());
    ternary(p + "self_attn.k_proj", lw.qkv, c.q_dim(), c.kv_dim());
    ternary(p + "self_attn.v_proj", lw.qkv, c.q_dim() + c.kv_dim(), c.kv_dim());
    allocate(lw.o, c.hidden_dim, c.q_dim());
    ternary(p + "self_attn.o_proj", lw.o, 0, c.hidden_dim);
    allocate(lw.gate_up, 2 * c.ffn_dim, c.hidden_dim);
    ternary(p + "mlp.gate_proj", lw.gate_up, 0, c.ffn_dim);
    ternary(p + "mlp.up_proj", lw.gate_up, c.ffn_dim, c.ffn_dim);
    allocate(lw.down, c.hidden_dim, c.ffn_dim);
    ternary(p + "mlp.down_proj", lw.down, 0, c.hidden_dim);
  }

  void allocate(TernaryMatrix& m, int64_t rows, int64_t cols) const {
    m = TernaryMatrix::zeros(options_.ternary_or_default(), rows, cols);
  }

  // Loads linear `prefix` ([out][in] with in == m.cols) into rows [row0, row0 + out) of m.
  void ternary(const std::string& prefix, TernaryMatrix& m, int64_t row0, int64_t out) {
    const int64_t in = m.cols;
    const TensorView& t = get(prefix + ".weight");
    if (config_.quant_mode == QuantMode::online) {
      check_float_shape(t, {out, in});
      ternarize_online(t, m, row0, out);
    } else {
      if (out % 4 != 0)
        throw Error(tensors_->source_name() + ": tensor '" + t.name + "': out_features " +
                    std::to_string(out) + " is not a multiple of 4 (the packed layout's rows)");
      if (t.dtype != DType::U8 || t.shape != std::vector<int64_t>{out / 4, in}) {
        bad_tensor(t, shape_str({out / 4, in}) + " U8 (2-bit packed)");
      }
      const TensorView& s = get(prefix + ".weight_scale");
      if (!is_float(s.dtype) || s.numel() != 1 || s.shape.size() > 1)
        bad_tensor(s, "[1] BF16 or F32");
      float scale;
      floats_at(s, 0, 1, &scale);
      if (!std::isfinite(scale) || scale == 0.0f) {
        warn("tensor '" + s.name + "' is " + std::to_string(scale) + " (corrupted download?)");
      }
      unpack_offline(t, m, row0, out, config_.weight_scale_divides ? 1.0f / scale : scale);
    }
    // Packed into m: the checkpoint's copy is not read again and need not stay resident.
    release_pages(t.bytes);
  }

  // transformers' WeightQuant, per whole tensor, in fp32:
  //   s = 1 / max(mean|W|, 1e-5);  t = clamp(round_half_even(W * s), -1, 1);  scale = 1 / s
  // A non-finite value (warned about) makes the scale NaN or infinite, and the outputs NaN, as
  // they are in transformers; each NaN product becomes -1 rather than an undefined cast. Past
  // round_half_even's range (2^22) a product keeps its sign and a magnitude over 1, so the clamp
  // gives what nearbyint would.
  // The sum of |W| is taken in double, in 8 interleaved partial sums. For a 6912 x 2560 bf16
  // tensor it is exact in any order while |W| spans fewer than about 20 binades; past that, the
  // order moves it in its last bits, far below the float mean it is rounded to.
  void ternarize_online(const TensorView& t, TernaryMatrix& m, int64_t row0, int64_t out) {
    const int64_t in = m.cols;
    std::mutex mu;
    double abs_sum = 0.0;
    int64_t nonzero = 0, nonfinite = 0;
    pool_.parallel_for(out, 1, [&, in](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(in));
      const float* v = row.data();
      double partial[8] = {};
      int64_t nz = 0, nf = 0;
      for (int64_t r = r0; r < r1; ++r) {
        floats_at(t, r * in, in, row.data());
        int64_t k = 0;
        for (; k + 8 <= in; k += 8)
          for (int j = 0; j < 8; ++j) partial[j] += std::fabs(v[k + j]);
        for (; k < in; ++k) partial[0] += std::fabs(v[k]);
        count_values(v, in, nz, nf);
      }
      double local = 0.0;
      for (double p : partial) local += p;
      std::lock_guard lock(mu);
      abs_sum += local;
      nonzero += nz;
      nonfinite += nf;
    });
    if (nonzero == 0) warn("tensor '" + t.name + "' is all zeros (corrupted download?)");
    if (nonfinite > 0)
      warn("tensor '" + t.name + "' has " + std::to_string(nonfinite) + " non-finite values");
    const float mean = static_cast<float>(abs_sum / static_cast<double>(out * in));
    const float s = 1.0f / std::max(mean, 1e-5f);
    pool_.parallel_for(out, 1, [&, in, s](int64_t r0, int64_t r1) {
      std::vector<float> values(static_cast<size_t>(in));
      std::vector<int8_t> row(static_cast<size_t>(in));
      const float* v = values.data();
      int8_t* codes = row.data();
      for (int64_t r = r0; r < r1; ++r) {
        floats_at(t, r * in, in, values.data());
        for (int64_t k = 0; k < in; ++k)
          codes[k] = static_cast<int8_t>(clamp_code(round_half_even(v[k] * s), -1.0f, 1.0f));
        pack_ternary_row(m, row0 + r, row);
        m.row_scales[row0 + r] = 1.0f / s;
      }
    });
  }

  // HF offline layout: byte P[p][k] holds row i * (out/4) + p at bits 2i..2i+1, code = t + 1.
  void unpack_offline(const TensorView& t, TernaryMatrix& m, int64_t row0, int64_t out,
                      float scale) {
    const int64_t cols = m.cols, block_rows = out / 4;
    const uint8_t* packed = t.bytes.data();
    std::atomic<bool> bad_code{false};
    std::atomic<int64_t> nonzero{0};
    pool_.parallel_for(out, 1, [&, cols](int64_t r0, int64_t r1) {
      std::vector<int8_t> row(static_cast<size_t>(cols));
      int64_t nz = 0;
      int bad = 0;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r / block_rows, p = r % block_rows;
        // Copies and pointers only: an int8 store may alias anything, so a value read through a
        // reference inside the loop would be reloaded every step and keep it from vectorizing.
        const uint8_t* bytes = packed + p * cols;
        int8_t* values = row.data();
        const int shift = static_cast<int>(2 * i);
        int row_nz = 0;
        for (int64_t k = 0; k < cols; ++k) {
          const int code = (bytes[k] >> shift) & 3;
          bad |= code == 3;
          values[k] = static_cast<int8_t>(code - 1);
          row_nz += code != 1;
        }
        nz += row_nz;
        pack_ternary_row(m, row0 + r, row);
        m.row_scales[row0 + r] = scale;
      }
      nonzero += nz;
      if (bad) bad_code = true;
    });
    if (bad_code) {
      throw Error(tensors_->source_name() + ": tensor '" + t.name +
                  "' holds the 2-bit code 3, which is not a ternary value (valid codes: 0, 1, 2)");
    }
    if (nonzero == 0) warn("tensor '" + t.name + "' is all zeros (corrupted download?)");
  }

  const ModelConfig& config_;
  const LoadOptions& options_;
  std::vector<std::string>& warnings_;
  ThreadPool pool_;
  std::shared_ptr<TensorSet> tensors_;
  std::mutex warn_mutex_;
};

}  // namespace

Model::Model() = default;
Model::~Model() = default;

std::shared_ptr<const Model> Model::load(const std::filesystem::path& path,
                                         const LoadOptions& options) {
  if (!std::filesystem::exists(path)) throw Error(path.string() + ": no such file or directory");
  std::shared_ptr<Model> model(new Model());
  if (std::filesystem::is_regular_file(path) && BlobFile::has_magic(path)) {
    // A converted file carries its formats: a different one asked for needs a reconversion.
    auto file = std::make_shared<const BlobFile>(path);
    const auto& meta = file->meta();
    if (!meta.contains("config_json") || !meta["config_json"].is_string()) {
      throw Error(path.string() + ": header has no config_json");
    }
    const auto check_format = [&](const char* field, const char* flag, const char* wanted) {
      const std::string held = meta.value(field, std::string("?"));
      if (held != wanted) {
        throw Error(path.string() + " was converted with " + flag + " " + held + ", not " + wanted +
                    ": convert the checkpoint again with " + flag + " " + wanted +
                    ", or load the checkpoint directory");
      }
    };
    if (options.ternary) check_format("ternary_format", "--ternary", format_name(*options.ternary));
    if (options.lm_head) check_format("lm_head_format", "--lm-head", format_name(*options.lm_head));
    model->config_ = ModelConfig::from_json(meta["config_json"].get<std::string>(),
                                            path.string() + ": config_json");
    ThreadPool pool(options.n_threads > 0 ? options.n_threads : physical_core_count());
    if (options.progress) options.progress("loading", 0.0);
    model->weights_ = load_converted_weights(file, model->config_, pool);
    if (options.progress) options.progress("loading", 1.0);
    return model;
  }
  if (!std::filesystem::is_directory(path)) {
    throw Error(path.string() +
                ": not a model directory (expected config.json and model.safetensors) nor a "
                "converted .bitnet file");
  }
  model->config_ = ModelConfig::load(path);
  Loader loader(path, model->config_, options, model->warnings_);
  model->weights_ = loader.load();
  return model;
}

}  // namespace bitnet
