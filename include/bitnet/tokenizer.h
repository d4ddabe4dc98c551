#pragma once
// Byte-level BPE tokenizer read from a HuggingFace tokenizer.json (Llama 3 style).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bitnet {

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos tokens,
  // add_bos_token, chat_template); or the same files stored in a converted .bitnet model file.
  // Throws bitnet::Error naming the file and field at fault.
  static Tokenizer load(const std::filesystem::path& model_dir);
  // Errors name source_name, or config_name for tokenizer_config.json (by default the
  // tokenizer_config.json beside source_name).
  static Tokenizer from_json(std::string_view tokenizer_json,
                             std::string_view tokenizer_config_json, const std::string& source_name,
                             const std::string& config_name = "");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special/added tokens are matched before BPE. add_bos prepends BOS when the
  // post_processor template (or tokenizer_config's add_bos_token) asks for it.
  std::vector<int32_t> encode(std::string_view text, bool add_bos = true) const;

  // The raw bytes of one token (specials give their literal text). Throws on an id out of range.
  const std::string& token_bytes(int32_t id) const;
  // Concatenated bytes of ids; invalid UTF-8 is passed through unchanged.
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const;  // highest id + 1, over vocab and added tokens
  std::optional<int32_t> token_id(std::string_view token_text) const;  // exact vocab/added lookup
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // tokenizer_config.json's chat_template, empty when absent.
  const std::string& chat_template() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer: feeds token bytes and returns only complete UTF-8 sequences, holding
// back a partial sequence until it completes. Bytes that can never form valid UTF-8 are
// emitted as U+FFFD so the output is always valid UTF-8.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back, invalid tails as U+FFFD

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

// Writes a small, self-consistent tokenizer.json + tokenizer_config.json for random test models:
// 256 byte tokens, BPE merges learned from a built-in English sample up to
// vocab_size - n_special, then the Llama 3 special tokens (<|begin_of_text|>, <|end_of_text|>,
// <|eot_id|>, <|start_header_id|>, <|end_header_id|>, ...) at the top ids.
// The chat template is BitNet 2B-4T's. Deterministic.
void write_test_tokenizer(const std::filesystem::path& dir, int32_t vocab_size);

}  // namespace bitnet
