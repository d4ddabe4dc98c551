#include "tokenizer/pretokenizer.h"

#include <nlohmann/json.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <utility>

#include "bitnet/error.h"

namespace bitnet::tokenizer {
namespace {

using nlohmann::json;

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// Per-call match state: pcre2_code is shareable, match data and the JIT stack are not.
struct MatchState {
  explicit MatchState(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free),
        context(pcre2_match_context_create(nullptr), pcre2_match_context_free),
        // Long whitespace runs backtrack through `\s+(?!\S)`: allow the JIT up to 8 MiB of stack
        // instead of its 32 KiB default.
        jit_stack(pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr),
                  pcre2_jit_stack_free) {
    if (!data || !context || !jit_stack) throw Error("pre-tokenizer: out of memory");
    pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.get());
  }
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data;
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context;
  std::unique_ptr<pcre2_jit_stack, decltype(&pcre2_jit_stack_free)> jit_stack;
};

size_t utf8_char_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  return 4;
}

std::string type_of(const json& node, const std::string& where) {
  const auto it = node.find("type");
  if (!node.is_object() || it == node.end() || !it->is_string()) {
    throw Error(where + ": expected an object with a string \"type\"");
  }
  return it->get<std::string>();
}

bool bool_field(const json& node, const char* key, bool default_value, const std::string& where) {
  const auto it = node.find(key);
  if (it == node.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) throw Error(where + "." + key + ": expected true or false");
  return it->get<bool>();
}

void split_one(const pcre2_code* code, MatchState& state, std::string_view text,
               std::vector<std::string_view>& pieces) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  size_t gap_start = 0;
  while (search_from < text.size()) {
    // The caller validated the UTF-8, so PCRE2 need not re-check it on every call.
    const int rc = pcre2_match(code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK,
                               state.data.get(), state.context.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("pre-tokenizer regex failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data.get());
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (end == start) {  // an empty match splits nothing; step over one character
      // At the end of the text (`$` matches there) there is no character to step over.
      if (start >= text.size()) break;
      search_from = start + utf8_char_length(static_cast<uint8_t>(text[start]));
      continue;
    }
    if (start > gap_start) pieces.push_back(text.substr(gap_start, start - gap_start));
    pieces.push_back(text.substr(start, end - start));
    gap_start = search_from = end;
  }
  if (gap_start < text.size()) pieces.push_back(text.substr(gap_start));
}

}  // namespace

RegexSplitter::RegexSplitter(std::string_view pattern, bool literal, const std::string& where) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // UCP makes \s, \d, \w and POSIX classes Unicode-aware, as in the Rust regex crate HF uses.
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    throw Error(where + ": invalid regex at offset " + std::to_string(error_offset) + ": " +
                pcre2_message(error_code));
  }
  // JIT is an optimization only: when unavailable, pcre2_match falls back to the interpreter.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

RegexSplitter::RegexSplitter(RegexSplitter&& other) noexcept
    : code_(std::exchange(other.code_, nullptr)) {}

RegexSplitter::~RegexSplitter() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void RegexSplitter::split(const std::vector<std::string_view>& texts,
                          std::vector<std::string_view>& pieces) const {
  const auto* code = static_cast<const pcre2_code*>(code_);
  MatchState state(code);
  for (std::string_view text : texts) split_one(code, state, text, pieces);
}

PreTokenizer::PreTokenizer(const json& node, const std::string& where) {
  if (node.is_null()) {
    throw Error(where + ": missing; byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  if (type_of(node, where) == "Sequence") {
    const auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array() || it->empty()) {
      throw Error(where + ".pretokenizers: expected a non-empty array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      add_step((*it)[i], where + ".pretokenizers[" + std::to_string(i) + "]", i + 1 == it->size());
    }
  } else {
    add_step(node, where, true);
  }
}

PreTokenizer::PreTokenizer(std::string_view split_pattern) {
  splitters_.emplace_back(split_pattern, false, "split pattern");
}

void PreTokenizer::add_step(const json& step, const std::string& where, bool is_last) {
  const std::string type = type_of(step, where);
  if (type == "Split") {
    // ByteLevel maps bytes to its alphabet, which a later Split would see; we map at BPE time,
    // so only orders where ByteLevel comes last are supported.
    if (is_last) throw Error(where + ": a Split must be followed by a ByteLevel pre-tokenizer");
    const auto behavior = step.find("behavior");
    if (behavior == step.end() || *behavior != "Isolated") {
      throw Error(where + ".behavior: only \"Isolated\" is supported");
    }
    if (bool_field(step, "invert", false, where)) {
      throw Error(where + ".invert: only false is supported");
    }
    const auto pattern = step.find("pattern");
    if (pattern != step.end() && pattern->is_object() && pattern->size() == 1) {
      const auto regex = pattern->find("Regex");
      const auto literal = pattern->find("String");
      if (regex != pattern->end() && regex->is_string()) {
        splitters_.emplace_back(regex->get<std::string>(), false, where + ".pattern.Regex");
        return;
      }
      if (literal != pattern->end() && literal->is_string()) {
        splitters_.emplace_back(literal->get<std::string>(), true, where + ".pattern.String");
        return;
      }
    }
    throw Error(where + ".pattern: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}");
  }
  if (type == "ByteLevel") {
    if (!is_last) throw Error(where + ": ByteLevel must be the last pre-tokenizer");
    // HF prepends the space to each piece of the earlier steps; we support it only where
    // ByteLevel stands alone, so it applies to the whole text (GPT-2, RoBERTa).
    add_prefix_space_ = bool_field(step, "add_prefix_space", true, where);
    if (add_prefix_space_ && !splitters_.empty()) {
      throw Error(where + ".add_prefix_space: true is only supported for a lone ByteLevel");
    }
    if (bool_field(step, "use_regex", true, where)) {
      splitters_.emplace_back(kGpt2SplitPattern, false, where + " (GPT-2 pattern)");
    }
    return;
  }
  throw Error(where + ".type: unsupported pre-tokenizer \"" + type +
              "\" (expected Split, ByteLevel or Sequence)");
}

void PreTokenizer::split(std::string_view text, std::string& scratch,
                         std::vector<std::string_view>& pieces) const {
  pieces.clear();
  if (text.empty()) return;
  if (add_prefix_space_ && text.front() != ' ') {
    scratch.assign(" ").append(text);
    text = scratch;
  }
  pieces.push_back(text);
  std::vector<std::string_view> next;
  for (const RegexSplitter& splitter : splitters_) {
    next.clear();
    splitter.split(pieces, next);
    pieces.swap(next);
  }
}

}  // namespace bitnet::tokenizer
