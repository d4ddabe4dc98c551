#include "bitnet/error.h"
#include "bitnet/model.h"
#include "bitnet/session.h"

namespace bitnet {

const char* format_name(TernaryFormat format) {
  return format == TernaryFormat::i2 ? "i2" : "t5";
}

const char* format_name(LmHeadFormat format) {
  switch (format) {
    case LmHeadFormat::bf16:
      return "bf16";
    case LmHeadFormat::int8:
      return "int8";
    case LmHeadFormat::q4:
      return "q4";
  }
  return "?";
}

TernaryFormat parse_ternary_format(const std::string& name) {
  if (name == "i2") return TernaryFormat::i2;
  if (name == "t5") return TernaryFormat::t5;
  throw Error("unknown ternary format '" + name + "' (choices: i2, t5)");
}

LmHeadFormat parse_lm_head_format(const std::string& name) {
  if (name == "bf16") return LmHeadFormat::bf16;
  if (name == "int8") return LmHeadFormat::int8;
  if (name == "q4") return LmHeadFormat::q4;
  throw Error("unknown lm_head format '" + name + "' (choices: bf16, int8, q4)");
}

const char* kv_cache_type_name(KvCacheType type) {
  switch (type) {
    case KvCacheType::f32:
      return "f32";
    case KvCacheType::f16:
      return "f16";
    case KvCacheType::q8:
      return "q8";
  }
  return "?";
}

KvCacheType parse_kv_cache_type(const std::string& name) {
  if (name == "f32") return KvCacheType::f32;
  if (name == "f16") return KvCacheType::f16;
  if (name == "q8") return KvCacheType::q8;
  throw Error("unknown KV cache type '" + name + "' (choices: f32, f16, q8)");
}

}  // namespace bitnet
