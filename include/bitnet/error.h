#pragma once
// One exception type for every user-facing failure: bad files, bad requests, bad flags.
// The message names the file, tensor, field or request at fault; front ends print it on one line.

#include <stdexcept>
#include <string>

namespace bitnet {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace bitnet
