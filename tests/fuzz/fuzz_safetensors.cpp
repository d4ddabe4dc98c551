// Fuzzes the safetensors reader (SafetensorsFile) on a whole file: the u64 header length, the
// JSON header and the data section.
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>

#include "base/safetensors.h"
#include "fuzz_common.h"

using namespace bitnet;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const test::TempDir dir;
  const std::filesystem::path file = dir / "model.safetensors";
  fuzz::write_input(file, data, size);
  try {
    const SafetensorsFile st(file);
    // The views must lie inside the mapping and agree with their shape and dtype.
    volatile uint8_t sink = 0;
    for (const auto& [name, view] : st.tensors()) {
      if (view.name != name || view.file == nullptr) fuzz::fail("tensor '" + name + "' misnamed");
      if (view.bytes.size() > size) fuzz::fail("tensor '" + name + "' larger than the file");
      int64_t numel = 1;
      for (int64_t d : view.shape) {
        if (d < 0) fuzz::fail("tensor '" + name + "' has a negative dim");
        if (d != 0 && numel > std::numeric_limits<int64_t>::max() / d)
          fuzz::fail("tensor '" + name + "' numel overflows int64");
        numel *= d;
      }
      if (view.numel() != numel ||
          static_cast<uint64_t>(numel) * dtype_size(view.dtype) != view.bytes.size()) {
        fuzz::fail("tensor '" + name + "' " + view.describe() + " has " +
                   std::to_string(view.bytes.size()) + " bytes");
      }
      for (uint8_t b : view.bytes) sink = sink + b;  // faults if the span leaves the mapping
    }
  } catch (const std::exception& e) {
    fuzz::expect_named_error(e, file.string());
  }
  return 0;
}
