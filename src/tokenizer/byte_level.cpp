#include "tokenizer/byte_level.h"

#include <array>

namespace bitnet::tokenizer {
namespace {

// Code points above 0xFF used by the alphabet go up to 256 + 67.
constexpr uint32_t kMaxByteLevelCodePoint = 256 + 68;

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_text;  // UTF-8 of each byte's code point
  std::array<int16_t, kMaxByteLevelCodePoint> code_point_to_byte;  // -1 outside the alphabet
};

std::string encode_code_point(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else {  // the alphabet stays below U+0800
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others are moved
// to 256, 257, ... in byte order.
const ByteLevelTables& tables() {
  static const ByteLevelTables built = [] {
    ByteLevelTables t;
    t.code_point_to_byte.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const uint32_t cp = printable ? b : next_extra++;
      t.byte_to_text[b] = encode_code_point(cp);
      t.code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return built;
}

bool is_continuation(uint8_t byte) {
  return (byte & 0xC0) == 0x80;
}

}  // namespace

std::string_view byte_to_byte_level(uint8_t byte) {
  return tables().byte_to_text[byte];
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const ByteLevelTables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_text[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  const ByteLevelTables& t = tables();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    uint32_t cp;
    if (lead < 0x80) {
      cp = lead;
      i += 1;
    } else if ((lead & 0xE0) == 0xC0 && i + 1 < text.size() &&
               is_continuation(static_cast<uint8_t>(text[i + 1]))) {
      cp = ((lead & 0x1Fu) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return std::nullopt;  // three- and four-byte code points are all outside the alphabet
    }
    if (cp >= kMaxByteLevelCodePoint || t.code_point_to_byte[cp] < 0) return std::nullopt;
    out += static_cast<char>(t.code_point_to_byte[cp]);
  }
  return out;
}

Utf8Sequence next_utf8_sequence(std::string_view bytes) {
  const auto lead = static_cast<uint8_t>(bytes[0]);
  if (lead < 0x80) return {Utf8Status::kComplete, 1};
  // Table 3-7 of the Unicode standard: the second byte's range depends on the lead byte (this
  // excludes overlongs, surrogates and code points past U+10FFFF); later bytes are 80..BF.
  size_t length;
  uint8_t second_min = 0x80, second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_min = 0xA0;
    if (lead == 0xED) second_max = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_min = 0x90;
    if (lead == 0xF4) second_max = 0x8F;
  } else {
    return {Utf8Status::kInvalid, 1};
  }
  for (size_t i = 1; i < length; ++i) {
    if (i >= bytes.size()) return {Utf8Status::kIncomplete, i};
    const auto byte = static_cast<uint8_t>(bytes[i]);
    const uint8_t min = i == 1 ? second_min : 0x80;
    const uint8_t max = i == 1 ? second_max : 0xBF;
    if (byte < min || byte > max) return {Utf8Status::kInvalid, i};
  }
  return {Utf8Status::kComplete, length};
}

std::optional<size_t> first_invalid_utf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const Utf8Sequence seq = next_utf8_sequence(bytes.substr(i));
    if (seq.status != Utf8Status::kComplete) return i;
    i += seq.length;
  }
  return std::nullopt;
}

std::string take_valid_utf8(std::string& pending, bool at_end) {
  std::string out;
  const std::string_view bytes = pending;
  size_t i = 0;
  while (i < bytes.size()) {
    const Utf8Sequence seq = next_utf8_sequence(bytes.substr(i));
    if (seq.status == Utf8Status::kIncomplete && !at_end) break;
    if (seq.status == Utf8Status::kComplete) {
      out.append(bytes.substr(i, seq.length));
    } else {
      out.append(kReplacementChar);
    }
    i += seq.length;
  }
  pending.erase(0, i);
  return out;
}

}  // namespace bitnet::tokenizer
