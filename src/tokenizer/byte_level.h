#pragma once
// GPT-2's byte-level alphabet (bytes_to_unicode): every byte maps to one printable code point so
// a BPE vocabulary can store arbitrary bytes as JSON text ("Ġ" is the space byte). Also the UTF-8
// checks shared by encode's input validation and the streaming decoder.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bitnet::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// The byte-level code point standing for `byte`, as UTF-8 (1 or 2 bytes).
std::string_view byte_to_byte_level(uint8_t byte);
// Maps every byte of `bytes` to its byte-level code point.
std::string bytes_to_byte_level(std::string_view bytes);
// The inverse mapping; nullopt when `text` holds a code point outside the byte-level alphabet.
std::optional<std::string> byte_level_to_bytes(std::string_view text);

enum class Utf8Status { kComplete, kIncomplete, kInvalid };
struct Utf8Sequence {
  Utf8Status status;
  // kComplete: length of the valid sequence. kIncomplete: the bytes present, a valid prefix cut
  // short by the end of input. kInvalid: the maximal subpart (>= 1 byte) that can never become
  // valid, per Unicode's "U+FFFD substitution of maximal subparts".
  size_t length;
};
// Examines the UTF-8 sequence at the start of `bytes` (non-empty). Rejects overlongs, surrogates
// and code points above U+10FFFF.
Utf8Sequence next_utf8_sequence(std::string_view bytes);
// Offset of the first byte that does not belong to a complete valid sequence; nullopt if none.
std::optional<size_t> first_invalid_utf8(std::string_view bytes);
// Removes from the front of `pending` and returns every complete sequence, with each invalid
// maximal subpart replaced by U+FFFD. A trailing incomplete sequence stays in `pending` unless
// `at_end`, where it becomes U+FFFD too.
std::string take_valid_utf8(std::string& pending, bool at_end);

}  // namespace bitnet::tokenizer
