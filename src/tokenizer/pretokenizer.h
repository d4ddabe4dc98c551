#pragma once
// The pre-tokenizer: regex splits (HF "Split" with behavior Isolated, and ByteLevel's built-in
// GPT-2 split) run with PCRE2 in UTF + UCP mode, JIT-compiled when the platform allows.

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace bitnet::tokenizer {

// Pattern ByteLevel uses when use_regex is true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3's Split pattern, as its tokenizer.json spells it.
inline constexpr std::string_view kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// One compiled split pattern. Immutable after construction, so safe to share across threads.
class RegexSplitter {
 public:
  // `literal` matches the pattern text verbatim (HF's {"String": ...} patterns). Throws
  // bitnet::Error("<where>: invalid regex at offset N: <reason>").
  RegexSplitter(std::string_view pattern, bool literal, const std::string& where);
  RegexSplitter(RegexSplitter&& other) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) = delete;
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();

  // Appends to `pieces`, for each of `texts` (valid UTF-8) in turn, its matches and the gaps
  // between them, in order: HF's "Isolated" behavior. Empty matches produce no piece.
  void split(const std::vector<std::string_view>& texts,
             std::vector<std::string_view>& pieces) const;

 private:
  void* code_;  // pcre2_code_8*; kept opaque so pcre2.h stays out of this header
};

class PreTokenizer {
 public:
  // Parses tokenizer.json's "pre_tokenizer" (`where` names it in errors). Accepts a lone
  // ByteLevel, or a Sequence of Split steps ending in a ByteLevel.
  PreTokenizer(const nlohmann::json& node, const std::string& where);
  // A Sequence[Split(pattern, Isolated), ByteLevel(use_regex=false)], as Llama 3 has.
  explicit PreTokenizer(std::string_view split_pattern);

  // Splits one stretch of text (between added tokens) into pre-tokens, as raw bytes. The views
  // point into `text` or into `scratch` (when a prefix space is added).
  void split(std::string_view text, std::string& scratch,
             std::vector<std::string_view>& pieces) const;

 private:
  void add_step(const nlohmann::json& step, const std::string& where, bool is_last);

  std::vector<RegexSplitter> splitters_;  // applied in order, each to the previous one's pieces
  bool add_prefix_space_ = false;
};

}  // namespace bitnet::tokenizer
