#pragma once
// Byte-level BPE model: HF tokenizer.json's "model" of type BPE.

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bitnet::tokenizer {

// model.vocab's entries (token text -> id value, unchecked), in file order: tokenizer.cpp's
// parser streams them here rather than into a JSON object (a map of 128k tokens made up most of
// the parse time).
using VocabEntries = std::vector<std::pair<std::string, nlohmann::json>>;

class BpeModel {
 public:
  // Parses `model` (`where` names it in errors, e.g. "tokenizer.json: model"), whose "vocab"
  // object arrives as `vocab` (model["vocab"] itself is only checked to be an object). Merges may
  // be "a b" strings or [a, b] arrays. Every byte must have its byte-level token in the vocab.
  BpeModel(const nlohmann::json& model, const VocabEntries& vocab, const std::string& where);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-token, given as raw bytes. Thread-safe.
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  // Looks up std::string keys by std::string_view, without building a string.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  // Token text (byte-level alphabet, as in tokenizer.json) -> id.
  const Vocab& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;       // position in model.merges: lower merges first
    int32_t merged_id;  // the token the pair becomes
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  std::vector<int32_t> merge_bytes(std::string_view piece) const;

  Vocab vocab_;
  std::array<int32_t, 256> byte_ids_{};         // id of each single-byte token
  std::unordered_map<uint64_t, Merge> merges_;  // keyed on pair_key(left id, right id)
  // Llama 3: a pre-token that is itself a vocab entry is emitted whole, skipping the merges.
  bool ignore_merges_ = false;

  // Pre-token bytes -> ids. Text repeats its words, so this makes BPE cost per distinct word.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace bitnet::tokenizer
