#pragma once
// The CUDA forward pass of BitNet b1.58 (src/model/cuda/forward_cuda.cpp): weights uploaded once
// in the GPU's packed layout, a preallocated f16 KV cache with one region per slot, and decode
// steps captured as CUDA graphs. Present when the build found nvcc (BITNET_HAVE_CUDA).

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "bitnet/model.h"
#include "model/forward_cpu.h"

namespace bitnet {

// Whether this build has the CUDA backend and a CUDA device is present; if not, *why (when
// given) says which of the two is missing.
bool cuda_device_available(std::string* why = nullptr);

#if BITNET_HAVE_CUDA

// The device's memory bandwidth in GB/s, measured by a device-to-device copy (bytes read plus
// bytes written).
double cuda_copy_bandwidth_gbps();

class CudaForward {
 public:
  // Throws bitnet::Error if the model has a shape or format the kernels do not take, or if
  // the GPU lacks memory.
  CudaForward(std::shared_ptr<const Model> model, int max_batch, int context_length,
              int n_slots = 1);
  ~CudaForward();
  CudaForward(const CudaForward&) = delete;
  CudaForward& operator=(const CudaForward&) = delete;

  // Runs the batch (validated tokens; at most max_batch) and computes the logits of batch
  // indices [logits_from, batch.size()). Writes them to `logits` ([rows][vocab]) when it is not
  // null, and their greedy next tokens to `ids` when that is not null. Batches of up to 64
  // tokens that all want logits (decode steps) run as a CUDA graph captured once per batch size;
  // the lm_head reads its input's zero padding, which the buffers keep from allocation.
  void forward(std::span<const BatchToken> batch, int logits_from, float* logits, int32_t* ids);

  int max_batch() const;
  int context_length() const;
  uint64_t kv_bytes_per_position() const;  // per slot, all layers
  std::string device_name() const;
  uint64_t weight_bytes_per_token() const;  // ternary weights + lm_head read per decode step

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

#endif

}  // namespace bitnet
