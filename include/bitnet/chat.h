#pragma once
// Chat: the known chat templates rendered in C++ (no Jinja engine), and a multi-turn session
// that keeps its token history in step with the Session's KV cache, so each turn prefills only
// its new tokens.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitnet/generate.h"
#include "bitnet/session.h"
#include "bitnet/tokenizer.h"

namespace bitnet {

enum class ChatFormat {
  bitnet,  // BitNet 2B-4T: "<|begin_of_text|>System: ...<|eot_id|>User: ...<|eot_id|>Assistant: "
  llama3,  // Llama 3: "<|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|>"
};

const char* chat_format_name(ChatFormat format);
// "bitnet" or "llama3"; throws bitnet::Error listing the choices.
ChatFormat parse_chat_format(const std::string& name);
// Recognizes a tokenizer_config.json chat_template by its distinctive text; nullopt if unknown.
std::optional<ChatFormat> recognize_chat_template(std::string_view jinja);
// The format named by `override_name` when not empty, else the tokenizer's recognized template.
// Throws bitnet::Error naming the built-in choices when the template is absent or unknown.
ChatFormat choose_chat_format(const Tokenizer& tokenizer, const std::string& override_name);

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// Renders exactly what the template renders for these messages (content trimmed, as the
// templates' `| trim` does): one BOS text, each message with its end-of-turn token, then the
// assistant prompt when add_generation_prompt (Llama 3's template always adds it).
std::string render_chat(ChatFormat format, const std::string& bos_text,
                        const std::vector<ChatMessage>& messages, bool add_generation_prompt);
// One message as the template renders it (no BOS), ending with <|eot_id|>.
std::string render_chat_message(ChatFormat format, const ChatMessage& message);
// The text that prompts the assistant's reply.
std::string render_generation_prompt(ChatFormat format);

// Turns chat messages into token ids piece by piece. Every piece starts right after a special
// token, so the concatenated pieces tokenize like the rendered transcript.
class ChatEncoder {
 public:
  // Throws bitnet::Error when the tokenizer lacks <|eot_id|> or a BOS token.
  ChatEncoder(const Tokenizer& tokenizer, ChatFormat format);

  // BOS plus the system message (BOS alone when system is empty after trimming).
  std::vector<int32_t> encode_start(const std::string& system) const;
  // The user message followed by the assistant prompt.
  std::vector<int32_t> encode_user_turn(const std::string& text) const;
  int32_t end_of_turn_id() const { return end_of_turn_id_; }
  ChatFormat format() const { return format_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  const Tokenizer& tokenizer_;
  ChatFormat format_;
  int32_t end_of_turn_id_;
  std::string bos_text_;
};

// A multi-turn conversation on one Session. history() is what the cache holds (the first
// session.position() tokens) followed by at most a few pending tokens not yet run (the end of
// the last reply and its <|eot_id|>); each send() runs the pending and the new tokens only.
class ChatSession {
 public:
  // The session must be empty (position 0) and is used only through this object.
  ChatSession(Session& session, const Tokenizer& tokenizer, ChatFormat format,
              std::string system_prompt = "");

  struct Reply {
    GenerateResult result;     // result.ids exclude the end token; prompt_ids are the tokens run
    bool interrupted = false;  // on_text returned false
    int dropped_turns = 0;     // oldest turns dropped to make room (0: the cache was reused)
  };

  // Called before the transcript is re-run after dropping turns: (dropped, kept) turn counts.
  std::function<void(int dropped, int kept)> on_context_trimmed;

  // Sends one user message (trimmed; must not be empty) and generates the reply, streaming its
  // text to on_text (return false to stop). options.max_new_tokens caps the reply; the reply
  // also ends when the context is full. Throws bitnet::Error, leaving the conversation as it
  // was, for an empty message or one that cannot fit in the context with the system prompt.
  Reply send(const std::string& user_text, const GenerateOptions& options,
             const std::function<bool(const std::string&)>& on_text = {});

  // Forgets the conversation (the system prompt stays).
  void reset();
  // Sets the system prompt and resets; throws bitnet::Error, changing nothing, when it leaves
  // no room in the context.
  void set_system_prompt(std::string system_prompt);
  const std::string& system_prompt() const { return system_prompt_; }

  const std::vector<int32_t>& history() const { return history_; }
  int tokens_used() const { return static_cast<int>(history_.size()); }
  int context_length() const { return session_.context_length(); }
  int turns() const { return static_cast<int>(turns_.size()); }
  const ChatEncoder& encoder() const { return encoder_; }

 private:
  struct Turn {
    std::vector<int32_t> ids;  // user message + assistant prompt + reply + <|eot_id|>
  };
  std::vector<int32_t> transcript_ids(size_t first_turn) const;

  Session& session_;
  ChatEncoder encoder_;
  std::string system_prompt_;
  std::vector<int32_t> start_ids_;  // BOS + system message
  std::vector<Turn> turns_;
  std::vector<int32_t> history_;
};

}  // namespace bitnet
