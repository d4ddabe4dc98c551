#include "bitnet/chat.h"

#include <algorithm>

#include "bitnet/error.h"

namespace bitnet {
namespace {

constexpr const char* kEndOfTurn = "<|eot_id|>";

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Jinja's `| trim` (Python's str.strip() on the ASCII whitespace that matters here).
std::string trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return std::string(text.substr(begin, text.find_last_not_of(kSpace) - begin + 1));
}

void check_role(const std::string& role) {
  if (role != "system" && role != "user" && role != "assistant") {
    throw Error("unknown chat role '" + role + "' (expected system, user or assistant)");
  }
}

}  // namespace

const char* chat_format_name(ChatFormat format) {
  return format == ChatFormat::bitnet ? "bitnet" : "llama3";
}

ChatFormat parse_chat_format(const std::string& name) {
  if (name == "bitnet") return ChatFormat::bitnet;
  if (name == "llama3") return ChatFormat::llama3;
  throw Error("unknown chat template '" + name + "' (built-in: bitnet, llama3)");
}

std::optional<ChatFormat> recognize_chat_template(std::string_view jinja) {
  if (!contains(jinja, kEndOfTurn)) return std::nullopt;
  // Llama 3.1+ templates inject a dated system message and tool calls, which this renderer
  // does not reproduce: better to refuse them than to prompt the model differently.
  if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|end_header_id|>") &&
      !contains(jinja, "Knowledge Date") && !contains(jinja, "tools")) {
    return ChatFormat::llama3;
  }
  // BitNet 2B-4T writes the role as `message['role'] | capitalize + ': '`; spelled-out variants
  // use 'User: ' literals. Either way the assistant prompt is 'Assistant: '.
  if (contains(jinja, "'Assistant: '") &&
      (contains(jinja, "capitalize + ': '") || contains(jinja, "'User: '"))) {
    return ChatFormat::bitnet;
  }
  return std::nullopt;
}

ChatFormat choose_chat_format(const Tokenizer& tokenizer, const std::string& override_name) {
  if (!override_name.empty()) return parse_chat_format(override_name);
  const std::string& jinja = tokenizer.chat_template();
  if (jinja.empty()) {
    throw Error(
        "the tokenizer has no chat_template (tokenizer_config.json); choose one of the "
        "built-in formats with --chat-template bitnet|llama3");
  }
  if (auto format = recognize_chat_template(jinja)) return *format;
  throw Error(
      "the tokenizer's chat_template is not one of the built-in formats (bitnet: BitNet "
      "2B-4T's 'Role: text<|eot_id|>', llama3: Llama 3's header style); choose one with "
      "--chat-template bitnet|llama3");
}

std::string render_chat_message(ChatFormat format, const ChatMessage& message) {
  check_role(message.role);
  const std::string content = trim(message.content);
  if (format == ChatFormat::llama3) {
    return "<|start_header_id|>" + message.role + "<|end_header_id|>\n\n" + content + kEndOfTurn;
  }
  std::string role = message.role;
  role[0] = static_cast<char>(role[0] - 'a' + 'A');  // Jinja's capitalize on a known role
  return role + ": " + content + kEndOfTurn;
}

std::string render_generation_prompt(ChatFormat format) {
  return format == ChatFormat::llama3 ? "<|start_header_id|>assistant<|end_header_id|>\n\n"
                                      : "Assistant: ";
}

std::string render_chat(ChatFormat format, const std::string& bos_text,
                        const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string text = messages.empty() ? "" : bos_text;
  for (const ChatMessage& m : messages) text += render_chat_message(format, m);
  if (add_generation_prompt || format == ChatFormat::llama3)
    text += render_generation_prompt(format);
  return text;
}

ChatEncoder::ChatEncoder(const Tokenizer& tokenizer, ChatFormat format)
    : tokenizer_(tokenizer), format_(format) {
  const auto eot = tokenizer.token_id(kEndOfTurn);
  if (!eot) throw Error("the tokenizer has no <|eot_id|> token, which the chat format needs");
  end_of_turn_id_ = *eot;
  auto bos = tokenizer.bos_id();
  if (!bos) bos = tokenizer.token_id("<|begin_of_text|>");
  if (!bos) throw Error("the tokenizer has no BOS token, which the chat format needs");
  bos_text_ = tokenizer.token_bytes(*bos);
}

std::vector<int32_t> ChatEncoder::encode_start(const std::string& system) const {
  std::string text = bos_text_;
  if (!trim(system).empty()) text += render_chat_message(format_, {"system", system});
  return tokenizer_.encode(text, /*add_bos=*/false);
}

std::vector<int32_t> ChatEncoder::encode_user_turn(const std::string& text) const {
  return tokenizer_.encode(
      render_chat_message(format_, {"user", text}) + render_generation_prompt(format_),
      /*add_bos=*/false);
}

ChatSession::ChatSession(Session& session, const Tokenizer& tokenizer, ChatFormat format,
                         std::string system_prompt)
    : session_(session), encoder_(tokenizer, format) {
  session_.rewind(0);
  set_system_prompt(std::move(system_prompt));
}

void ChatSession::reset() {
  // The system prompt is the cache's prefix: its entries stay valid.
  session_.rewind(std::min(session_.position(), static_cast<int>(start_ids_.size())));
  turns_.clear();
  history_ = start_ids_;
}

void ChatSession::set_system_prompt(std::string system_prompt) {
  std::vector<int32_t> start = encoder_.encode_start(system_prompt);
  if (start.size() + 1 >= static_cast<size_t>(session_.context_length())) {
    throw Error("the system prompt is " + std::to_string(start.size()) +
                " tokens, too long for the context of " +
                std::to_string(session_.context_length()) + " tokens");
  }
  session_.rewind(0);
  system_prompt_ = std::move(system_prompt);
  start_ids_ = std::move(start);
  reset();
}

std::vector<int32_t> ChatSession::transcript_ids(size_t first_turn) const {
  std::vector<int32_t> ids = start_ids_;
  for (size_t t = first_turn; t < turns_.size(); ++t)
    ids.insert(ids.end(), turns_[t].ids.begin(), turns_[t].ids.end());
  return ids;
}

ChatSession::Reply ChatSession::send(const std::string& user_text, const GenerateOptions& options,
                                     const std::function<bool(const std::string&)>& on_text) {
  const std::string text = trim(user_text);
  if (text.empty()) throw Error("the message is empty");
  const std::vector<int32_t> user_ids = encoder_.encode_user_turn(text);
  const size_t context = static_cast<size_t>(session_.context_length());
  if (start_ids_.size() + user_ids.size() + 1 > context) {
    throw Error("the message is " + std::to_string(user_ids.size()) + " tokens; with the " +
                std::to_string(start_ids_.size()) +
                "-token start of the conversation it does not fit in the context of " +
                std::to_string(context) + " tokens");
  }

  // Drop the oldest turns until the transcript, this message and room for a reply (a whole
  // capped reply, or a quarter of the context for long ones) fit.
  const size_t reply_room =
      std::min(static_cast<size_t>(std::max(options.max_new_tokens, 0)), context / 4) + 1;
  size_t kept_size = history_.size();
  size_t first_turn = 0;
  while (first_turn < turns_.size() && kept_size + user_ids.size() + reply_room > context) {
    kept_size -= turns_[first_turn].ids.size();
    ++first_turn;
  }

  std::vector<int32_t> kept_history = history_;
  if (first_turn > 0) {
    if (on_context_trimmed)
      on_context_trimmed(static_cast<int>(first_turn),
                         static_cast<int>(turns_.size() - first_turn));
    kept_history = transcript_ids(first_turn);
    session_.rewind(std::min(session_.position(), static_cast<int>(start_ids_.size())));
  }
  std::vector<int32_t> prompt(kept_history.begin() + session_.position(), kept_history.end());
  prompt.insert(prompt.end(), user_ids.begin(), user_ids.end());

  GenerateOptions generate_options = options;
  std::vector<int32_t>& stop_ids = generate_options.stop_ids;
  if (std::find(stop_ids.begin(), stop_ids.end(), encoder_.end_of_turn_id()) == stop_ids.end())
    stop_ids.push_back(encoder_.end_of_turn_id());

  Reply reply;
  auto forward_text = [&](const std::string& piece) {
    if (on_text && !on_text(piece)) reply.interrupted = true;
    return !reply.interrupted;
  };
  try {
    reply.result = generate(session_, encoder_.tokenizer(), prompt, generate_options,
                            on_text ? forward_text : std::function<bool(const std::string&)>());
  } catch (...) {
    // The cache may hold part of this turn: re-run the whole transcript next time.
    session_.rewind(0);
    throw;
  }

  // The end token was sampled but never run; the transcript always closes a reply with
  // <|eot_id|> (whatever ended it), as the template renders it.
  std::vector<int32_t>& reply_ids = reply.result.ids;
  if (!reply_ids.empty() &&
      std::find(stop_ids.begin(), stop_ids.end(), reply_ids.back()) != stop_ids.end())
    reply_ids.pop_back();
  Turn turn{user_ids};
  turn.ids.insert(turn.ids.end(), reply_ids.begin(), reply_ids.end());
  turn.ids.push_back(encoder_.end_of_turn_id());

  turns_.erase(turns_.begin(), turns_.begin() + static_cast<std::ptrdiff_t>(first_turn));
  history_ = std::move(kept_history);
  history_.insert(history_.end(), turn.ids.begin(), turn.ids.end());
  turns_.push_back(std::move(turn));
  reply.dropped_turns = static_cast<int>(first_turn);
  return reply;
}

}  // namespace bitnet
