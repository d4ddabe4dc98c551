#include "model/forward_cuda.h"

namespace bitnet {

bool cuda_device_available(std::string* why) {
  if (why) *why = "this build has no CUDA backend (nvcc was not found when it was configured)";
  return false;
}

}  // namespace bitnet
