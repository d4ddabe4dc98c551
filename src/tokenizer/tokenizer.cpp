// Tokenizer: reads tokenizer.json / tokenizer_config.json and runs the HF pipeline for byte-level
// BPE: added tokens -> pre-tokenizer (regex split) -> BPE -> post-processor (BOS).

#include "bitnet/tokenizer.h"

#include <malloc.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/blob_file.h"
#include "bitnet/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"

namespace bitnet {
namespace {

using nlohmann::json;
using tokenizer::BpeModel;
using tokenizer::PreTokenizer;

json parse_json(std::string_view text, const std::string& file_name) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    throw Error(file_name + ": invalid JSON: " + e.what());
  }
}

// SAX events of tokenizer.json, built into a JSON document as json::parse would, except that the
// entries of model.vocab go to a vector (the document gets an empty "vocab" object): building
// them into a JSON object, a map of 128k strings, took most of the load time.
class TokenizerJsonReader {
 public:
  TokenizerJsonReader(json& doc, tokenizer::VocabEntries& vocab) : dom_(doc), vocab_(vocab) {}

  bool null() { return in_vocab() ? vocab_value(nullptr) : dom_.null(); }
  bool boolean(bool v) { return in_vocab() ? vocab_value(v) : dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) {
    return in_vocab() ? vocab_value(v) : dom_.number_integer(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return in_vocab() ? vocab_value(v) : dom_.number_unsigned(v);
  }
  bool number_float(json::number_float_t v, const std::string& text) {
    return in_vocab() ? vocab_value(v) : dom_.number_float(v, text);
  }
  bool string(std::string& v) { return in_vocab() ? vocab_value(v) : dom_.string(v); }
  bool binary(json::binary_t& v) { return in_vocab() ? vocab_value(nullptr) : dom_.binary(v); }

  bool start_object(std::size_t n) {
    if (in_vocab()) return enter_nested_in_vocab();
    if (keys_.size() == 2 && keys_[0] == "model" && keys_[1] == "vocab") {
      vocab_.clear();  // a repeated "vocab" key: the last one counts, as in a JSON object
      vocab_depth_ = 1;
      return dom_.start_object(0) && dom_.end_object();
    }
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(std::string& k) {
    if (in_vocab()) {
      if (vocab_depth_ == 1) token_ = k;
      return true;
    }
    keys_.back() = k;
    return dom_.key(k);
  }
  bool end_object() {
    return end_container([&] { return dom_.end_object(); });
  }
  bool start_array(std::size_t n) {
    if (in_vocab()) return enter_nested_in_vocab();
    keys_.emplace_back();  // array elements have no key: nothing below matches model.vocab
    return dom_.start_array(n);
  }
  bool end_array() {
    return end_container([&] { return dom_.end_array(); });
  }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& last_token, const Exception& e) {
    return dom_.parse_error(position, last_token, e);
  }

 private:
  bool in_vocab() const { return vocab_depth_ > 0; }
  template <class T>
  bool vocab_value(T&& v) {
    if (vocab_depth_ == 1) vocab_.emplace_back(token_, json(std::forward<T>(v)));
    return true;
  }
  template <class DomEnd>
  bool end_container(DomEnd dom_end) {
    if (in_vocab()) {
      --vocab_depth_;
      return true;
    }
    keys_.pop_back();
    return dom_end();
  }
  // An object or array as a vocab value is an error BpeModel reports; its contents are skipped.
  bool enter_nested_in_vocab() {
    if (vocab_depth_ == 1) vocab_.emplace_back(token_, json::object());
    ++vocab_depth_;
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  tokenizer::VocabEntries& vocab_;
  std::vector<std::string> keys_;  // per open container: its current key
  int vocab_depth_ = 0;            // 1 inside model.vocab, more inside a value nested in it
  std::string token_;
};

// tokenizer.json, with model.vocab's entries in `vocab` (see TokenizerJsonReader).
json parse_tokenizer_json(std::string_view text, const std::string& file_name,
                          tokenizer::VocabEntries& vocab) {
  json doc;
  TokenizerJsonReader reader(doc, vocab);
  try {
    json::sax_parse(text, &reader);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    throw Error(file_name + ": invalid JSON: " + e.what());
  }
  return doc;
}

const json& field_or_null(const json& object, const char* key) {
  static const json null_value;
  const auto it = object.find(key);
  return it == object.end() ? null_value : *it;
}

const json& required_model(const json& tokenizer, const std::string& source_name) {
  const json& model = field_or_null(tokenizer, "model");
  if (model.is_null()) throw Error(source_name + ": model: missing (expected a BPE model)");
  return model;
}

bool is_ascii_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

struct AddedToken {
  std::string content;
  int32_t id;
  bool lstrip;  // absorbs ASCII whitespace on its left (HF: any Unicode whitespace)
  bool rstrip;  // absorbs ASCII whitespace on its right
};

struct Tokenizer::Impl {
  Impl(const json& tokenizer, const tokenizer::VocabEntries& vocab, const json& config,
       const std::string& source_name, const std::string& config_name);

  void parse_added_tokens(const json& node, const std::string& where);
  // Arrays are indexed by id: a lone huge id would allocate gigabytes. The error names `where`,
  // built only on failure (the vocabulary has 128k entries).
  [[noreturn]] void id_out_of_range(int64_t id, const std::string& where) const;
  void parse_post_processor(const json& node, const std::string& where);
  void parse_template(const json& node, const std::string& where);
  void parse_config(const json& config, const std::string& config_name);
  int32_t id_of(const std::string& token, const std::string& where) const;
  void encode_text(std::string_view text, std::vector<int32_t>& ids) const;

  BpeModel bpe;
  PreTokenizer pre_tokenizer;
  std::vector<AddedToken> added_tokens;
  // Indices into added_tokens by first byte, longest content first: the first hit wins.
  std::array<std::vector<size_t>, 256> added_by_first_byte;
  std::unordered_map<std::string, int32_t> added_ids;  // content -> id

  std::vector<std::string> token_bytes;  // by id: raw bytes, or an added token's content
  std::vector<bool> has_token;           // false for ids no token uses
  std::vector<bool> special;

  // Added around the text when encode's add_bos is true.
  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;
  bool has_template = false;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  std::string chat_template;
  // Ids may leave gaps, but no more than twice the number of tokens listed, plus 1024.
  int64_t id_limit = 0;
};

Tokenizer::Impl::Impl(const json& tokenizer, const tokenizer::VocabEntries& vocab,
                      const json& config, const std::string& source_name,
                      const std::string& config_name)
    : bpe(required_model(tokenizer, source_name), vocab, source_name + ": model"),
      pre_tokenizer(field_or_null(tokenizer, "pre_tokenizer"), source_name + ": pre_tokenizer") {
  const json& normalizer = field_or_null(tokenizer, "normalizer");
  if (!normalizer.is_null() && !(normalizer.value("type", "") == "Sequence" &&
                                 field_or_null(normalizer, "normalizers").empty())) {
    throw Error(source_name + ": normalizer: unsupported (byte-level BPE expects null)");
  }
  const json& decoder = field_or_null(tokenizer, "decoder");
  if (!decoder.is_object() || decoder.value("type", "") != "ByteLevel") {
    throw Error(source_name + ": decoder: expected a ByteLevel decoder, got " + decoder.dump());
  }

  const json& added = field_or_null(tokenizer, "added_tokens");
  id_limit =
      2 * static_cast<int64_t>(bpe.vocab().size() + (added.is_array() ? added.size() : 0)) + 1024;
  for (const auto& [text, id] : bpe.vocab()) {
    if (id >= id_limit) id_out_of_range(id, source_name + ": model.vocab[\"" + text + "\"]");
    if (static_cast<size_t>(id) >= token_bytes.size()) {
      token_bytes.resize(static_cast<size_t>(id) + 1);
      has_token.resize(static_cast<size_t>(id) + 1);
    }
    // Like HF's ByteLevel decoder, a token outside the byte-level alphabet decodes as its text.
    token_bytes[id] = tokenizer::byte_level_to_bytes(text).value_or(text);
    has_token[id] = true;
  }
  special.resize(token_bytes.size());
  parse_added_tokens(added, source_name + ": added_tokens");
  parse_post_processor(field_or_null(tokenizer, "post_processor"),
                       source_name + ": post_processor");
  parse_config(config, config_name);
}

void Tokenizer::Impl::parse_added_tokens(const json& node, const std::string& where) {
  if (node.is_null()) return;
  if (!node.is_array()) throw Error(where + ": expected an array");
  for (size_t i = 0; i < node.size(); ++i) {
    const json& entry = node[i];
    const std::string entry_where = where + "[" + std::to_string(i) + "]";
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        entry["id"].get<int64_t>() < 0 || entry["id"].get<int64_t>() > INT32_MAX ||
        !entry.contains("content") || !entry["content"].is_string() ||
        entry["content"].get_ref<const std::string&>().empty()) {
      throw Error(entry_where + ": expected {\"id\": non-negative integer, \"content\": string}");
    }
    const auto flag = [&](const char* key) {
      const json& value = field_or_null(entry, key);
      if (!value.is_null() && !value.is_boolean()) {
        throw Error(entry_where + "." + key + ": expected true or false");
      }
      return value.is_boolean() && value.get<bool>();
    };
    if (flag("single_word")) throw Error(entry_where + ".single_word: true is not supported");
    if (const int64_t id = entry["id"].get<int64_t>(); id >= id_limit)
      id_out_of_range(id, entry_where + ".id");
    AddedToken token{entry["content"].get<std::string>(), entry["id"].get<int32_t>(),
                     flag("lstrip"), flag("rstrip")};
    const size_t id = token.id;
    if (id >= token_bytes.size()) {
      token_bytes.resize(id + 1);
      has_token.resize(id + 1);
      special.resize(id + 1);
    }
    token_bytes[id] = token.content;
    has_token[id] = true;
    special[id] = flag("special");
    added_ids[token.content] = token.id;
    added_tokens.push_back(std::move(token));
  }
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    added_by_first_byte[static_cast<uint8_t>(added_tokens[i].content[0])].push_back(i);
  }
  for (auto& indices : added_by_first_byte) {
    std::stable_sort(indices.begin(), indices.end(), [&](size_t a, size_t b) {
      return added_tokens[a].content.size() > added_tokens[b].content.size();
    });
  }
}

void Tokenizer::Impl::id_out_of_range(int64_t id, const std::string& where) const {
  throw Error(where + ": id " + std::to_string(id) + " is out of range: ids must be below " +
              std::to_string(id_limit) + " (twice the number of tokens listed, plus 1024)");
}

void Tokenizer::Impl::parse_post_processor(const json& node, const std::string& where) {
  if (node.is_null()) return;
  const std::string type = node.is_object() ? node.value("type", "") : "";
  if (type == "ByteLevel") return;  // only adjusts offsets, which we do not report
  if (type == "TemplateProcessing") return parse_template(node, where);
  if (type == "Sequence") {
    const json& processors = field_or_null(node, "processors");
    if (!processors.is_array()) throw Error(where + ".processors: expected an array");
    for (size_t i = 0; i < processors.size(); ++i) {
      parse_post_processor(processors[i], where + ".processors[" + std::to_string(i) + "]");
    }
    return;
  }
  throw Error(where + ".type: unsupported post-processor \"" + type +
              "\" (expected TemplateProcessing, ByteLevel or Sequence)");
}

// The "single" template lists SpecialToken and Sequence ($A) pieces; the special tokens before
// $A become the prefix (Llama 3's BOS), those after it the suffix.
void Tokenizer::Impl::parse_template(const json& node, const std::string& where) {
  if (has_template) throw Error(where + ": more than one TemplateProcessing");
  has_template = true;
  const json& single = field_or_null(node, "single");
  const json& special_tokens = field_or_null(node, "special_tokens");
  if (!single.is_array()) throw Error(where + ".single: expected an array of template pieces");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string piece_where = where + ".single[" + std::to_string(i) + "]";
    const json& piece = single[i];
    if (piece.is_object() && piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const json& special_token = field_or_null(piece, "SpecialToken");
    if (!piece.is_object() || !special_token.is_object() ||
        !field_or_null(special_token, "id").is_string()) {
      throw Error(piece_where +
                  ": expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
    }
    const std::string name = special_token["id"].get<std::string>();
    const json& ids = special_tokens.is_object()
                          ? field_or_null(field_or_null(special_tokens, name.c_str()), "ids")
                          : json();
    if (!ids.is_array()) {
      throw Error(where + ".special_tokens[\"" + name + "\"].ids: expected an array of ids");
    }
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<uint64_t>() >= token_bytes.size() || !has_token[id.get<size_t>()]) {
        throw Error(where + ".special_tokens[\"" + name + "\"].ids: " + id.dump() +
                    " is not a token id");
      }
      (seen_sequence ? suffix_ids : prefix_ids).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) throw Error(where + ".single: no {\"Sequence\": {\"id\": \"A\"}} piece");
}

int32_t Tokenizer::Impl::id_of(const std::string& token, const std::string& where) const {
  const auto added = added_ids.find(token);
  if (added != added_ids.end()) return added->second;
  const auto vocab = bpe.vocab().find(token);
  if (vocab != bpe.vocab().end()) return vocab->second;
  throw Error(where + ": \"" + token + "\" is not in the vocabulary");
}

// BOS rule: a TemplateProcessing post-processor decides alone (HF runs it). Without one, BOS is
// prepended when tokenizer_config.json defines bos_token and add_bos_token is true or absent:
// HF's Llama 3 tokenizer adds <|begin_of_text|> although the tokenizer.json we ship with has
// only a ByteLevel post-processor.
void Tokenizer::Impl::parse_config(const json& config, const std::string& config_name) {
  if (config.is_null()) return;
  if (!config.is_object()) throw Error(config_name + ": expected a JSON object");
  const auto special_token = [&](const char* key) -> std::optional<int32_t> {
    const json& value = field_or_null(config, key);
    const std::string where = config_name + ": " + key;
    if (value.is_null()) return std::nullopt;
    if (value.is_string()) return id_of(value.get<std::string>(), where);
    if (value.is_object() && field_or_null(value, "content").is_string()) {
      return id_of(value["content"].get<std::string>(), where);
    }
    throw Error(where + ": expected a token string or {\"content\": ...}");
  };
  bos = special_token("bos_token");
  eos = special_token("eos_token");

  const json& add_bos_token = field_or_null(config, "add_bos_token");
  if (!add_bos_token.is_null() && !add_bos_token.is_boolean()) {
    throw Error(config_name + ": add_bos_token: expected true or false");
  }
  if (!has_template && bos && (add_bos_token.is_null() || add_bos_token.get<bool>())) {
    prefix_ids = {*bos};
  }

  const json& chat = field_or_null(config, "chat_template");
  if (chat.is_string()) {
    chat_template = chat.get<std::string>();
  } else if (chat.is_array()) {  // named templates: [{"name": ..., "template": ...}]
    for (const json& entry : chat) {
      if (entry.is_object() && entry.value("name", "") == "default" &&
          field_or_null(entry, "template").is_string()) {
        chat_template = entry["template"].get<std::string>();
      }
    }
    if (chat_template.empty()) {
      throw Error(config_name + ": chat_template: no entry named \"default\"");
    }
  } else if (!chat.is_null()) {
    throw Error(config_name + ": chat_template: expected a string");
  }
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
  std::string scratch;
  std::vector<std::string_view> pieces;
  pre_tokenizer.split(text, scratch, pieces);
  for (std::string_view piece : pieces) bpe.encode_piece(piece, ids);
}

namespace {

Tokenizer read_tokenizer(const std::filesystem::path& model_dir) {
  if (std::filesystem::is_regular_file(model_dir) && BlobFile::has_magic(model_dir)) {
    // A converted model file carries its tokenizer files as blobs.
    const BlobFile file(model_dir);
    return Tokenizer::from_json(
        file.verified_text("tokenizer.json"), file.verified_text("tokenizer_config.json"),
        model_dir.string() + ": tokenizer.json", model_dir.string() + ": tokenizer_config.json");
  }
  const std::filesystem::path tokenizer_path = model_dir / "tokenizer.json";
  const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
  const std::string tokenizer_json = read_file(tokenizer_path);
  const std::string config_json =
      std::filesystem::exists(config_path) ? read_file(config_path) : std::string();
  return Tokenizer::from_json(tokenizer_json, config_json, tokenizer_path.string());
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& model_dir) {
  Tokenizer tokenizer = read_tokenizer(model_dir);
  // The parse's JSON tree (70 MB of small nodes for the 2B-4T-shaped test model's 27 MB
  // tokenizer.json) is freed by now, but glibc keeps freed small blocks resident in the parsing
  // thread's arena until trimmed: 100 MB of a converted 2B-4T model's resident memory.
  malloc_trim(0);
  return tokenizer;
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json,
                               std::string_view tokenizer_config_json,
                               const std::string& source_name,
                               const std::string& config_source_name) {
  const std::string config_name =
      !config_source_name.empty()
          ? config_source_name
          : (std::filesystem::path(source_name).parent_path() / "tokenizer_config.json").string();
  tokenizer::VocabEntries vocab;
  const json tokenizer = parse_tokenizer_json(tokenizer_json, source_name, vocab);
  if (!tokenizer.is_object()) throw Error(source_name + ": expected a JSON object");
  const json config =
      tokenizer_config_json.empty() ? json() : parse_json(tokenizer_config_json, config_name);
  try {
    return Tokenizer(std::make_unique<Impl>(tokenizer, vocab, config, source_name, config_name));
  } catch (const json::exception& e) {  // a field of the wrong JSON type that no check names
    throw Error(source_name + ": " + e.what());
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// Invalid UTF-8 is rejected rather than replaced: HF tokenizers only ever sees valid strings, so
// there is no reference behavior to match, and the CLI can report where the input is broken.
std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  if (const auto bad = tokenizer::first_invalid_utf8(text)) {
    throw Error("input is not valid UTF-8 at byte " + std::to_string(*bad));
  }
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  if (add_bos) ids = impl.prefix_ids;
  // Added tokens split the text first, leftmost then longest match.
  size_t segment_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : impl.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      if (text.substr(pos).starts_with(impl.added_tokens[index].content)) {
        match = &impl.added_tokens[index];
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t segment_end = pos;
    size_t after = pos + match->content.size();
    if (match->lstrip) {
      while (segment_end > segment_start && is_ascii_space(text[segment_end - 1])) --segment_end;
    }
    if (match->rstrip) {
      while (after < text.size() && is_ascii_space(text[after])) ++after;
    }
    impl.encode_text(text.substr(segment_start, segment_end - segment_start), ids);
    ids.push_back(match->id);
    segment_start = pos = after;
  }
  impl.encode_text(text.substr(segment_start), ids);
  if (add_bos) ids.insert(ids.end(), impl.suffix_ids.begin(), impl.suffix_ids.end());
  return ids;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->token_bytes.size() || !impl_->has_token[id]) {
    throw Error("token id " + std::to_string(id) + " is out of range (vocabulary size " +
                std::to_string(vocab_size()) + ")");
  }
  return impl_->token_bytes[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += token_bytes(id);
  return text;
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->token_bytes.size());
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  const std::string key(token_text);
  const auto added = impl_->added_ids.find(key);
  if (added != impl_->added_ids.end()) return added->second;
  const auto vocab = impl_->bpe.vocab().find(key);
  if (vocab != impl_->bpe.vocab().end()) return vocab->second;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

std::string TokenStreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  return tokenizer::take_valid_utf8(pending_, /*at_end=*/false);
}

std::string TokenStreamDecoder::flush() {
  return tokenizer::take_valid_utf8(pending_, true);
}

}  // namespace bitnet
