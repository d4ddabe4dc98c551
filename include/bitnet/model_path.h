#pragma once
// Finding a model directory: an existing path, or a HuggingFace repo id looked up in the
// HuggingFace hub cache, as `huggingface-cli download` lays it out.

#include <filesystem>
#include <string>

namespace bitnet {

// The model the commands use when -m is not given.
inline constexpr const char* kDefaultModelRepo = "microsoft/bitnet-b1.58-2B-4T";

// The hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub (huggingface_hub's own order).
std::filesystem::path huggingface_hub_cache();

// Resolves -m: an empty spec means kDefaultModelRepo; an existing path is used as is; an
// "ORG/NAME" repo id is looked up in the hub cache (models--ORG--NAME/snapshots/REV, REV from
// refs/main when present, else the most recently modified snapshot). Throws bitnet::Error
// listing every path it looked at and how to download the model.
std::filesystem::path resolve_model_path(const std::string& spec);

}  // namespace bitnet
