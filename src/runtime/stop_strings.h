#pragma once
// Stop-string handling shared by the generation loop and the batch scheduler.

#include <string>
#include <vector>

namespace bitnet {

// Length of the longest suffix of text that is a proper prefix of some stop string: that much
// must be held back from a stream because the next token may complete the stop string.
size_t stop_prefix_overlap(const std::string& text, const std::vector<std::string>& stops);

}  // namespace bitnet
