#include "tokenizer/bpe.h"

#include <nlohmann/json.hpp>

#include <queue>

#include "bitnet/error.h"
#include "tokenizer/byte_level.h"

namespace bitnet::tokenizer {
namespace {

using nlohmann::json;

// Bounds the cache's memory on long-running servers; long pieces are rarely repeated.
constexpr size_t kMaxCachedPieces = 1 << 18;
constexpr size_t kMaxCachedPieceBytes = 64;

std::string in_quotes(std::string_view text) {
  return "\"" + std::string(text) + "\"";
}

}  // namespace

BpeModel::BpeModel(const json& model, const VocabEntries& vocab, const std::string& where) {
  if (!model.is_object()) throw Error(where + ": expected an object");
  const auto type = model.find("type");
  if (type != model.end() && *type != "BPE") {
    throw Error(where + ".type: unsupported model " + type->dump() + " (expected \"BPE\")");
  }
  const auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && *dropout != 0) {
    throw Error(where + ".dropout: BPE dropout is not supported at inference");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "") {
      throw Error(where + "." + key + ": not supported by byte-level BPE");
    }
  }
  const auto ignore_merges = model.find("ignore_merges");
  if (ignore_merges != model.end()) {
    if (!ignore_merges->is_boolean()) throw Error(where + ".ignore_merges: expected a boolean");
    ignore_merges_ = ignore_merges->get<bool>();
  }

  const auto vocab_object = model.find("vocab");
  if (vocab_object == model.end() || !vocab_object->is_object()) {
    throw Error(where + ".vocab: expected an object of token -> id");
  }
  vocab_.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      throw Error(where + ".vocab[" + in_quotes(token) + "]: expected a non-negative integer id");
    }
    // Like a JSON object, a repeated token keeps its last id.
    vocab_.insert_or_assign(token, id.get<int32_t>());
  }
  for (int byte = 0; byte < 256; ++byte) {
    const auto it = vocab_.find(byte_to_byte_level(static_cast<uint8_t>(byte)));
    if (it == vocab_.end()) {
      throw Error(where + ".vocab: no token for byte " + std::to_string(byte) +
                  "; byte-level BPE needs all 256");
    }
    byte_ids_[byte] = it->second;
  }

  const auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) {
    throw Error(where + ".merges: expected an array");
  }
  merges_.reserve(merges->size());
  std::string merged;  // reused: left + right
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& entry = (*merges)[rank];
    const auto entry_where = [&] { return where + ".merges[" + std::to_string(rank) + "]"; };
    std::string_view left, right;
    if (entry.is_string()) {
      // Byte-level tokens never hold a literal space (it is "Ġ"), so the space is unambiguous.
      const std::string_view text = entry.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space != std::string::npos && space > 0 && space + 1 < text.size() &&
          text.find(' ', space + 1) == std::string::npos) {
        left = text.substr(0, space);
        right = text.substr(space + 1);
      }
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get_ref<const std::string&>();
      right = entry[1].get_ref<const std::string&>();
    }
    if (left.empty() || right.empty()) {
      throw Error(entry_where() + ": expected \"a b\" string or [a, b] array");
    }
    const auto lookup = [&](std::string_view token, const char* role) {
      const auto it = vocab_.find(token);
      if (it == vocab_.end()) {
        throw Error(entry_where() + ": " + role + " token " + in_quotes(token) +
                    " is not in model.vocab");
      }
      return it->second;
    };
    const int32_t left_id = lookup(left, "left");
    const int32_t right_id = lookup(right, "right");
    merged.assign(left).append(right);
    const int32_t merged_id = lookup(merged, "merged");
    // Like HF, a repeated pair takes its last rank.
    merges_[pair_key(left_id, right_id)] = Merge{static_cast<int32_t>(rank), merged_id};
  }
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    const std::lock_guard lock(cache_mutex_);
    const auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> piece_ids;
  if (ignore_merges_) {
    const auto it = vocab_.find(bytes_to_byte_level(piece));
    if (it != vocab_.end()) piece_ids.push_back(it->second);
  }
  if (piece_ids.empty()) piece_ids = merge_bytes(piece);
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  if (cacheable) {
    const std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kMaxCachedPieces) cache_.clear();
    cache_.emplace(std::string(piece), std::move(piece_ids));
  }
}

// Applies merges lowest rank first, leftmost first among equal ranks (as HF does), over a linked
// list of symbols with a heap of candidate pairs; stale candidates are skipped when popped.
std::vector<int32_t> BpeModel::merge_bytes(std::string_view piece) const {
  struct Symbol {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev;
    int32_t next;  // -1 at the ends
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index; merged symbols keep the left one's index
    int32_t left_id;
    int32_t right;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_ids_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it == merges_.end()) return;
    queue.push(
        {it->second.rank, left, symbols[left].id, right, symbols[right].id, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    if (left.id != c.left_id || left.next != c.right || symbols[c.right].id != c.right_id) {
      continue;  // one side was merged since this candidate was queued
    }
    Symbol& right = symbols[c.right];
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -1;
    consider(left.prev);
    consider(c.left);
  }
  std::vector<int32_t> ids;
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

}  // namespace bitnet::tokenizer
