#include "model/forward_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <thread>
#include <vector>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ternary_packing.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lm_head.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/ternary_layout.h"
#include "kernels/cuda/ternary_matmul.cuh"
#include "model/weights.h"

namespace bitnet {

using cuda::check;

bool cuda_device_available(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    if (why) {
      *why = status != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(status)
                                   : "no CUDA device is present";
    }
    return false;
  }
  return true;
}

double cuda_copy_bandwidth_gbps() {
  constexpr size_t kBytes = size_t{1} << 30;
  constexpr int kRepeats = 20;
  void *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, kBytes), "bandwidth probe");
  check(cudaMalloc(&dst, kBytes), "bandwidth probe");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "bandwidth probe");
  check(cudaEventCreate(&stop), "bandwidth probe");
  check(cudaMemset(src, 1, kBytes), "bandwidth probe");
  check(cudaMemcpy(dst, src, kBytes, cudaMemcpyDeviceToDevice), "bandwidth probe");  // warm-up
  check(cudaEventRecord(start), "bandwidth probe");
  for (int i = 0; i < kRepeats; ++i) {
    check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice), "bandwidth probe");
  }
  check(cudaEventRecord(stop), "bandwidth probe");
  check(cudaEventSynchronize(stop), "bandwidth probe");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "bandwidth probe");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * kBytes * kRepeats / (ms * 1e-3) / 1e9;
}

namespace {

constexpr int kMaxGraphBatch = 64;  // larger batches (prefill) are launched eagerly

// A device allocation of n elements of T, freed with its owner.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n, const char* what) : n_(n) {
    if (n == 0) return;
    void* p = nullptr;
    check(cudaMalloc(&p, n * sizeof(T)), what);
    data_ = static_cast<T*>(p);
    check(cudaMemset(data_, 0, n * sizeof(T)), what);
  }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(o.data_), n_(o.n_) { o.data_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return data_; }
  size_t size() const { return n_; }
  void upload(const T* host, size_t n, const char* what) {
    check(cudaMemcpy(data_, host, n * sizeof(T), cudaMemcpyHostToDevice), what);
  }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};

template <typename T>
DeviceBuffer<T> upload(const std::vector<T>& host, const char* what) {
  DeviceBuffer<T> d(host.size(), what);
  d.upload(host.data(), host.size(), what);
  return d;
}

struct DeviceTernary {
  DeviceBuffer<uint32_t> words;
  DeviceBuffer<float> scales;
  int64_t rows = 0, cols = 0;

  cuda::TernaryWeights view() const { return {words.get(), scales.get(), rows, cols}; }
};

// Repacks `m` into the GPU layout with GPU row g taken from CPU row order[g].
DeviceTernary upload_ternary(const TernaryMatrix& m, const std::vector<int64_t>& order,
                             ThreadPool& pool, const std::string& name) {
  const int64_t words = cuda_layout::row_words(m.cols);
  std::vector<uint32_t> packed(static_cast<size_t>(m.rows * words));
  std::vector<float> scales(static_cast<size_t>(m.rows));
  pool.parallel_for(m.rows, 64, [&](int64_t begin, int64_t end) {
    std::vector<int8_t> t(static_cast<size_t>(m.cols));
    for (int64_t g = begin; g < end; ++g) {
      const int64_t r = order[static_cast<size_t>(g)];
      unpack_ternary_row(m, r, t);
      cuda_layout::pack_row(t, std::span<uint32_t>(packed.data() + g * words, words));
      scales[static_cast<size_t>(g)] = m.row_scales[static_cast<size_t>(r)];
    }
  });
  DeviceTernary d;
  d.words = upload(packed, name.c_str());
  d.scales = upload(scales, name.c_str());
  d.rows = m.rows;
  d.cols = m.cols;
  return d;
}

std::vector<int64_t> identity_order(int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  return order;
}

// q and k rows of each head reordered to RoPE pairs (j, j + head_dim / 2); v rows unchanged.
std::vector<int64_t> qkv_order(const ModelConfig& c) {
  std::vector<int64_t> order;
  const int half = c.head_dim / 2;
  auto heads = [&](int64_t first_row, int n_heads) {
    for (int h = 0; h < n_heads; ++h) {
      for (int j = 0; j < half; ++j) {
        order.push_back(first_row + h * c.head_dim + j);
        order.push_back(first_row + h * c.head_dim + j + half);
      }
    }
  };
  heads(0, c.n_heads);
  heads(c.q_dim(), c.n_kv_heads);
  for (int64_t r = c.q_dim() + c.kv_dim(); r < c.q_dim() + 2 * c.kv_dim(); ++r) order.push_back(r);
  return order;
}

// gate_i next to up_i.
std::vector<int64_t> gate_up_order(int64_t ffn) {
  std::vector<int64_t> order;
  for (int64_t i = 0; i < ffn; ++i) {
    order.push_back(i);
    order.push_back(ffn + i);
  }
  return order;
}

const uint16_t* bf16_rows(const DenseMatrix& m, const char* what) {
  if (m.dtype != DType::BF16) {
    throw Error(std::string("CUDA backend: ") + what + " is " + dtype_name(m.dtype) +
                "; it takes BF16 embeddings and lm_head");
  }
  return static_cast<const uint16_t*>(m.data);
}

}  // namespace

struct CudaForward::Impl {
  std::shared_ptr<const Model> model;
  const ModelConfig& c;
  int max_batch, context;
  std::string device_name;
  cudaStream_t stream = nullptr;

  struct Layer {
    DeviceBuffer<float> input_norm, attn_sub_norm, post_attn_norm, ffn_sub_norm;
    DeviceTernary qkv, o, gate_up, down;
  };
  std::vector<Layer> layers;
  DeviceBuffer<uint16_t> embed, head_bf16;
  DeviceBuffer<int8_t> head_codes;
  DeviceBuffer<float> head_scales, final_norm, rope_cos, rope_sin;
  cuda::LmHeadWeights head;
  uint64_t head_bytes = 0;

  DeviceBuffer<__half> k_cache, v_cache;  // [slot][layer][kv_head][context][head_dim]
  int64_t cache_head_stride = 0, cache_layer_stride = 0, cache_slot_stride = 0;

  int64_t act_stride = 0;
  DeviceBuffer<float> x, q, attn_out, h, normed, logits, act_scale, attention_workspace;
  DeviceBuffer<int8_t> act_q;
  DeviceBuffer<int32_t> act_sum, workspace, tokens, pos, slot, ids;
  DeviceBuffer<unsigned long long> argmax_keys;
  int32_t* host_meta = nullptr;  // pinned [3][max_batch]: tokens, positions, slots
  std::map<std::pair<int, bool>, cudaGraphExec_t> graphs;  // (batch size, argmax) -> decode step

  Impl(std::shared_ptr<const Model> m, int max_batch_, int context_, int n_slots);
  ~Impl();
  void upload_weights();
  void enqueue(int n, int logits_from, bool want_ids);
  void matmul(const DeviceTernary& w, int n, const float* input, const float* norm,
              const cuda::Epilogue& e);
};

CudaForward::Impl::Impl(std::shared_ptr<const Model> m, int max_batch_, int context_, int n_slots)
    : model(std::move(m)), c(model->config()), max_batch(max_batch_), context(context_) {
  std::string why;
  if (!cuda_device_available(&why)) throw Error("--device cuda: " + why);
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  device_name = prop.name;
  if (prop.major < 8) {
    throw Error("CUDA backend: " + device_name + " has compute capability " +
                std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                "; the int8 tensor-core kernels need 8.0 or newer");
  }
  const int group = c.n_heads / c.n_kv_heads;
  if (group != 1 && group != 2 && group != 4 && group != 8) {
    throw Error("CUDA backend: " + std::to_string(group) +
                " query heads per KV head (it takes 1, 2, 4 or 8)");
  }
  if (c.head_dim % 32 != 0 || c.head_dim > 128 || c.hidden_dim % 16 != 0) {
    throw Error(
        "CUDA backend: head_dim must be 32, 64, 96 or 128 and hidden_size a multiple of "
        "16");
  }
  if (std::max(c.hidden_dim, c.ffn_dim) > cuda::kGemvMaxCols) {
    throw Error("CUDA backend: hidden_size and intermediate_size must be at most " +
                std::to_string(cuda::kGemvMaxCols));
  }
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  upload_weights();

  const int64_t b = max_batch;
  cache_head_stride = static_cast<int64_t>(context) * c.head_dim;
  cache_layer_stride = cache_head_stride * c.n_kv_heads;
  cache_slot_stride = cache_layer_stride * c.n_layers;
  k_cache = DeviceBuffer<__half>(static_cast<size_t>(cache_slot_stride * n_slots), "KV cache");
  v_cache = DeviceBuffer<__half>(static_cast<size_t>(cache_slot_stride * n_slots), "KV cache");

  act_stride = cuda_layout::padded_k(std::max({c.hidden_dim, c.q_dim(), c.ffn_dim}));
  x = DeviceBuffer<float>(static_cast<size_t>(b * c.hidden_dim), "activations");
  q = DeviceBuffer<float>(static_cast<size_t>(b * c.q_dim()), "activations");
  attn_out = DeviceBuffer<float>(static_cast<size_t>(b * c.q_dim()), "activations");
  h = DeviceBuffer<float>(static_cast<size_t>(b * c.ffn_dim), "activations");
  normed = DeviceBuffer<float>(static_cast<size_t>(b * head.x_stride), "activations");
  logits = DeviceBuffer<float>(static_cast<size_t>(b * c.vocab_size), "logits");
  act_q = DeviceBuffer<int8_t>(static_cast<size_t>(b * act_stride), "activations");
  act_scale = DeviceBuffer<float>(static_cast<size_t>(b), "activations");
  act_sum = DeviceBuffer<int32_t>(static_cast<size_t>(b), "activations");
  // Narrow matrices split K more ways: the largest need over the four shapes.
  int64_t workspace_ints = 0;
  for (int64_t rows :
       {int64_t{c.q_dim()} + 2 * c.kv_dim(), int64_t{c.hidden_dim}, 2 * int64_t{c.ffn_dim}}) {
    workspace_ints = std::max(workspace_ints, cuda::ternary_gemm_workspace(rows, max_batch));
  }
  workspace = DeviceBuffer<int32_t>(static_cast<size_t>(workspace_ints), "matmul workspace");
  attention_workspace = DeviceBuffer<float>(
      static_cast<size_t>(cuda::attention_workspace_floats(c.n_heads, context, max_batch)),
      "attention workspace");
  tokens = DeviceBuffer<int32_t>(static_cast<size_t>(b), "batch");
  pos = DeviceBuffer<int32_t>(static_cast<size_t>(b), "batch");
  slot = DeviceBuffer<int32_t>(static_cast<size_t>(b), "batch");
  ids = DeviceBuffer<int32_t>(static_cast<size_t>(b), "batch");
  argmax_keys = DeviceBuffer<unsigned long long>(static_cast<size_t>(b), "batch");
  check(cudaMallocHost(&host_meta, sizeof(int32_t) * 3 * static_cast<size_t>(b)), "pinned buffer");
}

CudaForward::Impl::~Impl() {
  for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
  if (host_meta) cudaFreeHost(host_meta);
  if (stream) cudaStreamDestroy(stream);
}

void CudaForward::Impl::upload_weights() {
  const Model::Weights& w = model->weights();
  ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const std::vector<int64_t> qkv_rows = qkv_order(c);
  const std::vector<int64_t> gate_up_rows = gate_up_order(c.ffn_dim);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];
    const std::string name = "layer " + std::to_string(l);
    Layer d;
    d.input_norm = upload(lw.input_norm, name.c_str());
    d.attn_sub_norm = upload(lw.attn_sub_norm, name.c_str());
    d.post_attn_norm = upload(lw.post_attn_norm, name.c_str());
    d.ffn_sub_norm = upload(lw.ffn_sub_norm, name.c_str());
    d.qkv = upload_ternary(lw.qkv, qkv_rows, pool, name + " qkv");
    d.o = upload_ternary(lw.o, identity_order(lw.o.rows), pool, name + " o_proj");
    d.gate_up = upload_ternary(lw.gate_up, gate_up_rows, pool, name + " gate_up");
    d.down = upload_ternary(lw.down, identity_order(lw.down.rows), pool, name + " down_proj");
    layers.push_back(std::move(d));
  }
  final_norm = upload(w.final_norm, "final norm");

  const uint16_t* embed_host = bf16_rows(w.embed, "model.embed_tokens.weight");
  const size_t embed_elems = static_cast<size_t>(w.embed.rows * w.embed.cols);
  embed = DeviceBuffer<uint16_t>(embed_elems, "embeddings");
  embed.upload(embed_host, embed_elems, "embeddings");

  const LmHead& out = w.output_head;
  head.rows = c.vocab_size;
  head.cols = c.hidden_dim;
  if (out.rows > 0 && out.format == LmHeadFormat::int8) {
    head.int8 = true;
    head.x_stride = out.padded_cols();
    head_codes = DeviceBuffer<int8_t>(static_cast<size_t>(out.rows * out.row_bytes()), "lm_head");
    check(cudaMemcpy(head_codes.get(), out.codes, head_codes.size(), cudaMemcpyHostToDevice),
          "lm_head");
    head_scales = upload(out.row_scales, "lm_head");
    head.codes = head_codes.get();
    head.row_scales = head_scales.get();
    head_bytes = static_cast<uint64_t>(head_codes.size()) + 4 * head_scales.size();
  } else if (out.rows > 0 && out.format == LmHeadFormat::q4) {
    throw Error("CUDA backend: the lm_head runs in bf16 or int8, not q4 (use --lm-head int8)");
  } else {
    head.x_stride = (c.hidden_dim + 15) / 16 * 16;
    if (w.lm_head_tied) {
      head.bf16 = embed.get();
    } else {
      const uint16_t* host = bf16_rows(w.lm_head_own, "lm_head.weight");
      head_bf16 = DeviceBuffer<uint16_t>(embed_elems, "lm_head");
      head_bf16.upload(host, embed_elems, "lm_head");
      head.bf16 = head_bf16.get();
    }
    head_bytes = static_cast<uint64_t>(embed_elems) * 2;
  }

  std::vector<float> cos_table, sin_table;
  rope_tables(c.rope_theta, c.head_dim, context, cos_table, sin_table);
  rope_cos = upload(cos_table, "RoPE table");
  rope_sin = upload(sin_table, "RoPE table");
}

// norm(input) times w for n tokens: one token normalizes inside the GEMV; more tokens are
// normalized and quantized once, then share the GEMM.
void CudaForward::Impl::matmul(const DeviceTernary& w, int n, const float* input, const float* norm,
                               const cuda::Epilogue& e) {
  const float eps = c.rms_norm_eps;
  if (n == 1) {
    cuda::ternary_gemv(w.view(), {input, norm, eps}, e, stream);
    return;
  }
  cuda::rmsnorm_quantize(input, w.cols, norm, w.cols, eps, n, act_q.get(), act_stride,
                         act_scale.get(), act_sum.get(), stream);
  cuda::ternary_gemm(w.view(), {act_q.get(), act_stride, act_scale.get(), act_sum.get()}, n, e,
                     workspace.get(), stream);
}

// The whole forward pass for n tokens whose ids, positions and slots are on the device.
void CudaForward::Impl::enqueue(int n, int logits_from, bool want_ids) {
  const int64_t hidden = c.hidden_dim, ffn = c.ffn_dim, q_dim = c.q_dim();
  const float eps = c.rms_norm_eps;
  // What the qkv epilogue and attention read besides each layer's cache.
  cuda::Epilogue qkv{.kind = cuda::EpilogueKind::qkv_rope,
                     .out = q.get(),
                     .out_stride = q_dim,
                     .q_dim = static_cast<int>(q_dim),
                     .kv_dim = c.kv_dim(),
                     .head_dim = c.head_dim,
                     .pos = pos.get(),
                     .slot = slot.get(),
                     .rope_cos = rope_cos.get(),
                     .rope_sin = rope_sin.get(),
                     .cache_slot_stride = cache_slot_stride,
                     .cache_head_stride = cache_head_stride};
  cuda::AttentionArgs att{.q = q.get(),
                          .cache_slot_stride = cache_slot_stride,
                          .cache_head_stride = cache_head_stride,
                          .pos = pos.get(),
                          .slot = slot.get(),
                          .n_heads = c.n_heads,
                          .n_kv_heads = c.n_kv_heads,
                          .head_dim = c.head_dim,
                          .context = context,
                          .out = attn_out.get(),
                          .scores = attention_workspace.get()};

  cuda::embed_rows(embed.get(), hidden, tokens.get(), n, x.get(), stream);
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& lw = layers[static_cast<size_t>(l)];
    qkv.k_cache = k_cache.get() + l * cache_layer_stride;
    qkv.v_cache = v_cache.get() + l * cache_layer_stride;
    att.k_cache = qkv.k_cache;
    att.v_cache = qkv.v_cache;

    // Attention block: norm -> q,k,v with RoPE and the cache write -> attention -> sub-norm ->
    // o_proj added to the residual.
    matmul(lw.qkv, n, x.get(), lw.input_norm.get(), qkv);
    cuda::attention(att, n, stream);

    matmul(lw.o, n, attn_out.get(), lw.attn_sub_norm.get(),
           {.kind = cuda::EpilogueKind::add, .out = x.get(), .out_stride = hidden});

    // FFN block: norm -> gate,up with relu(gate)^2 * up -> sub-norm -> down_proj added to the
    // residual.
    matmul(lw.gate_up, n, x.get(), lw.post_attn_norm.get(),
           {.kind = cuda::EpilogueKind::relu2_mul, .out = h.get(), .out_stride = ffn});
    matmul(lw.down, n, h.get(), lw.ffn_sub_norm.get(),
           {.kind = cuda::EpilogueKind::add, .out = x.get(), .out_stride = hidden});
  }
  const int rows = n - logits_from;
  if (rows <= 0) return;
  cuda::rmsnorm(x.get() + logits_from * hidden, hidden, final_norm.get(), eps, rows, normed.get(),
                head.x_stride, stream);
  cuda::lm_head(head, normed.get(), rows, logits.get(), stream);
  if (want_ids)
    cuda::argmax(logits.get(), c.vocab_size, rows, argmax_keys.get(), ids.get(), stream);
}

CudaForward::CudaForward(std::shared_ptr<const Model> model, int max_batch, int context_length,
                         int n_slots)
    : impl_(std::make_unique<Impl>(std::move(model), max_batch, context_length, n_slots)) {}

CudaForward::~CudaForward() = default;

void CudaForward::forward(std::span<const BatchToken> batch, int logits_from, float* logits,
                          int32_t* ids) {
  Impl& m = *impl_;
  const int n = static_cast<int>(batch.size());
  if (n < 1 || n > m.max_batch)
    throw Error("CUDA forward: batch of " + std::to_string(n) + " tokens");
  const size_t b = static_cast<size_t>(m.max_batch);
  for (int i = 0; i < n; ++i) {
    m.host_meta[i] = batch[static_cast<size_t>(i)].token;
    m.host_meta[b + i] = batch[static_cast<size_t>(i)].pos;
    m.host_meta[2 * b + i] = batch[static_cast<size_t>(i)].slot;
  }
  const size_t bytes = sizeof(int32_t) * static_cast<size_t>(n);
  check(cudaMemcpyAsync(m.tokens.get(), m.host_meta, bytes, cudaMemcpyHostToDevice, m.stream),
        "batch upload");
  check(cudaMemcpyAsync(m.pos.get(), m.host_meta + b, bytes, cudaMemcpyHostToDevice, m.stream),
        "batch upload");
  check(cudaMemcpyAsync(m.slot.get(), m.host_meta + 2 * b, bytes, cudaMemcpyHostToDevice, m.stream),
        "batch upload");

  const bool want_ids = ids != nullptr;
  if (logits_from == 0 && n <= kMaxGraphBatch) {
    // A decode step: replay its graph (captured on first use; the batch lives in device memory).
    auto [it, inserted] = m.graphs.try_emplace({n, want_ids}, nullptr);
    if (inserted) {
      cudaGraph_t graph = nullptr;
      check(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal), "graph capture");
      try {
        m.enqueue(n, 0, want_ids);
      } catch (...) {
        cudaStreamEndCapture(m.stream, &graph);
        if (graph) cudaGraphDestroy(graph);
        m.graphs.erase(it);
        throw;
      }
      check(cudaStreamEndCapture(m.stream, &graph), "graph capture");
      const cudaError_t status = cudaGraphInstantiate(&it->second, graph, 0);
      cudaGraphDestroy(graph);
      if (status != cudaSuccess) m.graphs.erase(it);
      check(status, "graph instantiate");
    }
    check(cudaGraphLaunch(it->second, m.stream), "graph launch");
  } else {
    m.enqueue(n, logits_from, want_ids);
  }
  const int rows = n - logits_from;
  if (rows > 0 && logits) {
    check(cudaMemcpyAsync(logits, m.logits.get(), sizeof(float) * rows * m.c.vocab_size,
                          cudaMemcpyDeviceToHost, m.stream),
          "logits download");
  }
  if (rows > 0 && ids) {
    check(
        cudaMemcpyAsync(ids, m.ids.get(), sizeof(int32_t) * rows, cudaMemcpyDeviceToHost, m.stream),
        "token download");
  }
  check(cudaStreamSynchronize(m.stream), "forward pass");
}

int CudaForward::max_batch() const {
  return impl_->max_batch;
}
int CudaForward::context_length() const {
  return impl_->context;
}
std::string CudaForward::device_name() const {
  return impl_->device_name;
}

uint64_t CudaForward::kv_bytes_per_position() const {
  const ModelConfig& c = impl_->c;
  return static_cast<uint64_t>(c.n_layers) * c.kv_dim() * 2 * sizeof(__half);
}

uint64_t CudaForward::weight_bytes_per_token() const {
  uint64_t bytes = impl_->head_bytes;
  for (const Impl::Layer& l : impl_->layers) {
    for (const DeviceTernary* m : {&l.qkv, &l.o, &l.gate_up, &l.down}) {
      bytes += m->words.size() * sizeof(uint32_t) + m->scales.size() * sizeof(float);
    }
  }
  return bytes;
}

}  // namespace bitnet
