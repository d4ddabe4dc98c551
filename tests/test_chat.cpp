// Chat: template recognition and rendering, the token ids of multi-turn conversations, KV-cache
// reuse across turns and dropping old turns when the context fills.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "bitnet/chat.h"
#include "bitnet/error.h"
#include "test_util.h"

namespace bitnet {
namespace {

using test::cached_model;
using test::tiny_spec;
using ::testing::HasSubstr;

const std::filesystem::path kLlama3TokenizerDir =
    BITNET_SOURCE_DIR "/../shared/data/llama3-tokenizer";

// BitNet 2B-4T's own tokenizer_config.json template (the role capitalized by a filter).
constexpr const char* kBitNetHubTemplate =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}{% if "
    "loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor "
    "%}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const Tokenizer& llama3_tokenizer() {
  static const Tokenizer tokenizer = Tokenizer::load(kLlama3TokenizerDir);
  return tokenizer;
}

#define SKIP_WITHOUT_LLAMA3_TOKENIZER()                                 \
  if (!std::filesystem::exists(kLlama3TokenizerDir / "tokenizer.json")) \
  GTEST_SKIP() << "no Llama 3 tokenizer at " << kLlama3TokenizerDir.string()

TEST(ChatTemplate, RecognizesTheKnownTemplatesByTheirText) {
  const Tokenizer tiny = Tokenizer::load(cached_model("bf16", tiny_spec()));
  EXPECT_EQ(recognize_chat_template(tiny.chat_template()), ChatFormat::bitnet);
  EXPECT_EQ(recognize_chat_template(kBitNetHubTemplate), ChatFormat::bitnet);
  EXPECT_EQ(recognize_chat_template("{{ messages }}"), std::nullopt);
  EXPECT_EQ(recognize_chat_template(""), std::nullopt);
  EXPECT_EQ(choose_chat_format(tiny, ""), ChatFormat::bitnet);
  EXPECT_EQ(choose_chat_format(tiny, "llama3"), ChatFormat::llama3);
  try {
    parse_chat_format("chatml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bitnet, llama3"));
  }
  SKIP_WITHOUT_LLAMA3_TOKENIZER();
  EXPECT_EQ(recognize_chat_template(llama3_tokenizer().chat_template()), ChatFormat::llama3);
}

TEST(ChatTemplate, RendersWhatTheTemplatesRender) {
  const std::vector<ChatMessage> messages = {
      {"system", "  Be brief. "}, {"user", "Hi\n"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  EXPECT_EQ(render_chat(ChatFormat::bitnet, "<|begin_of_text|>", messages, true),
            "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
            "Hello!<|eot_id|>User: Bye<|eot_id|>Assistant: ");
  EXPECT_EQ(render_chat(ChatFormat::bitnet, "<|begin_of_text|>", messages, false),
            "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: "
            "Hello!<|eot_id|>User: Bye<|eot_id|>");
  EXPECT_EQ(render_chat(ChatFormat::llama3, "<|begin_of_text|>", messages, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe "
            "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_"
            "header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|"
            "end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_THROW(render_chat_message(ChatFormat::bitnet, {"tool", "x"}), Error);
}

TEST(ChatTokens, Llama3FormatIdsAgainstTheRealTokenizer) {
  SKIP_WITHOUT_LLAMA3_TOKENIZER();
  const Tokenizer& tok = llama3_tokenizer();
  const ChatEncoder encoder(tok, ChatFormat::llama3);
  EXPECT_EQ(encoder.end_of_turn_id(), 128009);
  const auto text = [&](const char* s) { return tok.encode(s, false); };
  // <|begin_of_text|>=128000, <|start_header_id|>=128006, <|end_header_id|>=128007,
  // <|eot_id|>=128009, "system"=9125, "user"=882, "assistant"=78191, "\n\n"=271.
  EXPECT_EQ(encoder.encode_start("You are a pirate."),
            concat({{128000, 128006, 9125, 128007, 271}, text("You are a pirate."), {128009}}));
  EXPECT_EQ(
      encoder.encode_user_turn(" Hello there "),
      concat(
          {{128006, 882, 128007, 271}, text("Hello there"), {128009, 128006, 78191, 128007, 271}}));
  EXPECT_EQ(encoder.encode_start(""), std::vector<int32_t>{128000});

  // Per-turn pieces, as ChatSession runs them, tokenize like the whole rendered transcript.
  const std::vector<ChatMessage> messages = {{"system", "You are a pirate."},
                                             {"user", "Where is the treasure?"},
                                             {"assistant", "Arr, buried on the island."},
                                             {"user", "Which island?"},
                                             {"assistant", "Skull Island, matey!"},
                                             {"user", "Thanks"}};
  const std::vector<int32_t> incremental = concat({encoder.encode_start(messages[0].content),
                                                   encoder.encode_user_turn(messages[1].content),
                                                   text(messages[2].content.c_str()),
                                                   {128009},
                                                   encoder.encode_user_turn(messages[3].content),
                                                   text(messages[4].content.c_str()),
                                                   {128009},
                                                   encoder.encode_user_turn(messages[5].content)});
  EXPECT_EQ(
      incremental,
      tok.encode(render_chat(ChatFormat::llama3, "<|begin_of_text|>", messages, true), false));
}

TEST(ChatTokens, BitNetFormatIdsAgainstTheRealTokenizer) {
  SKIP_WITHOUT_LLAMA3_TOKENIZER();
  const Tokenizer& tok = llama3_tokenizer();
  const ChatEncoder encoder(tok, ChatFormat::bitnet);
  const auto text = [&](const std::string& s) { return tok.encode(s, false); };
  // "System"=2374, "User"=1502, "Assistant"=72803, ":"=25, " "=220.
  EXPECT_EQ(encoder.encode_start("Be brief."),
            concat({{128000, 2374, 25}, text(" Be brief."), {128009}}));
  EXPECT_EQ(encoder.encode_user_turn("Hi"),
            concat({{1502, 25}, text(" Hi"), {128009, 72803, 25, 220}}));

  // The assistant prompt ends in a space that BPE on the whole transcript merges into the
  // reply's first word; replies starting with a digit split the same either way, so the
  // per-turn pieces must equal the whole transcript's ids exactly.
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "What is 6 x 7?"}, {"assistant", "42, of course."},
      {"user", "And 2 + 2?"},  {"assistant", "4."},        {"user", "Thanks!"}};
  const std::vector<int32_t> incremental = concat({encoder.encode_start(messages[0].content),
                                                   encoder.encode_user_turn(messages[1].content),
                                                   text(messages[2].content),
                                                   {128009},
                                                   encoder.encode_user_turn(messages[3].content),
                                                   text(messages[4].content),
                                                   {128009},
                                                   encoder.encode_user_turn(messages[5].content)});
  const std::string rendered = render_chat(ChatFormat::bitnet, "<|begin_of_text|>", messages, true);
  EXPECT_EQ(incremental, tok.encode(rendered, false));
  EXPECT_EQ(tok.decode(incremental), rendered);
}

GenerateOptions greedy(int max_new_tokens, const Tokenizer& tokenizer, const Model& model) {
  GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  options.sampling.temperature = 0;
  options.stop_ids = default_stop_ids(model.config(), tokenizer);
  return options;
}

// Runs `ids` in one prefill on a fresh session and returns the last logits.
std::vector<float> one_prefill_logits(std::shared_ptr<const Model> model,
                                      const std::vector<int32_t>& ids, int context = 0) {
  SessionOptions options;
  options.context_length = context;
  Session session(std::move(model), options);
  const auto logits = session.feed(ids);
  return {logits.begin(), logits.end()};
}

TEST(ChatSession, TwoTurnsReuseTheCacheAndMatchOnePrefillOfTheTranscript) {
  const auto dir = cached_model("bf16", tiny_spec());
  auto model = Model::load(dir);
  const Tokenizer tok = Tokenizer::load(dir);
  const GenerateOptions options = greedy(12, tok, *model);

  Session session(model);
  ChatSession chat(session, tok, ChatFormat::bitnet, "You are terse.");
  const std::vector<int32_t> start = chat.history();
  const auto first = chat.send("Hello there", options);
  const std::vector<int32_t> after_first = chat.history();
  const int position_after_first = session.position();
  const auto second = chat.send("Tell me more", options);
  EXPECT_EQ(first.dropped_turns + second.dropped_turns, 0);

  const ChatEncoder& enc = chat.encoder();
  const int32_t eot = enc.end_of_turn_id();
  const auto user1 = enc.encode_user_turn("Hello there");
  const auto user2 = enc.encode_user_turn("Tell me more");
  EXPECT_EQ(start, enc.encode_start("You are terse."));
  EXPECT_EQ(chat.history(),
            concat({start, user1, first.result.ids, {eot}, user2, second.result.ids, {eot}}));
  // The second turn ran only what the cache lacked: the end of reply 1 and the new message.
  const std::vector<int32_t> pending_after_first(after_first.begin() + position_after_first,
                                                 after_first.end());
  EXPECT_LE(pending_after_first.size(), 2u);
  EXPECT_EQ(pending_after_first.back(), eot);
  EXPECT_EQ(second.result.prompt_ids, concat({pending_after_first, user2}));

  // Greedy replies equal generation after one prefill of the transcript so far.
  for (const auto& [prefix, reply] :
       {std::pair{concat({start, user1}), first.result.ids},
        std::pair{concat({start, user1, first.result.ids, {eot}, user2}), second.result.ids}}) {
    Session fresh(model);
    auto expected = generate(fresh, tok, prefix, options);
    if (expected.finish_reason == FinishReason::stop) expected.ids.pop_back();
    EXPECT_EQ(reply, expected.ids);
  }
  // And the cache holds what one prefill of the whole history computes: bit-identical logits.
  const std::vector<int32_t>& history = chat.history();
  const std::vector<int32_t> pending(history.begin() + session.position(), history.end());
  ASSERT_FALSE(pending.empty());
  const auto incremental = session.feed(pending);
  EXPECT_EQ(std::vector<float>(incremental.begin(), incremental.end()),
            one_prefill_logits(model, history));
}

TEST(ChatSession, DropsTheOldestTurnsWhenTheContextFillsAndKeepsTheSystemPrompt) {
  const auto dir = cached_model("bf16", tiny_spec());
  auto model = Model::load(dir);
  const Tokenizer tok = Tokenizer::load(dir);
  const GenerateOptions options = greedy(10, tok, *model);
  SessionOptions session_options;
  session_options.context_length = 96;
  Session session(model, session_options);
  ChatSession chat(session, tok, ChatFormat::bitnet, "Remember the system prompt.");
  const std::vector<int32_t> start = chat.history();
  int trims = 0;
  chat.on_context_trimmed = [&](int dropped, int kept) {
    EXPECT_GT(dropped, 0);
    EXPECT_GE(kept, 0);
    ++trims;
  };
  int dropped_total = 0;
  for (int turn = 0; turn < 12; ++turn) {
    const auto reply = chat.send("message number " + std::to_string(turn) + " says hello", options);
    dropped_total += reply.dropped_turns;
    EXPECT_LE(session.position(), 96);
    ASSERT_GE(chat.history().size(), start.size());
    EXPECT_TRUE(std::equal(start.begin(), start.end(), chat.history().begin()))
        << "turn " << turn << ": the system prompt must stay at the start";
  }
  EXPECT_GT(trims, 0);
  EXPECT_GT(dropped_total, 0);
  EXPECT_LT(chat.turns(), 12);
  // After the trims the cache still matches a fresh prefill of the kept transcript.
  const std::vector<int32_t>& history = chat.history();
  const std::vector<int32_t> pending(history.begin() + session.position(), history.end());
  ASSERT_FALSE(pending.empty());
  const auto incremental = session.feed(pending);
  EXPECT_EQ(std::vector<float>(incremental.begin(), incremental.end()),
            one_prefill_logits(model, history, 96));
}

TEST(ChatSession, BadMessagesLeaveTheConversationUsable) {
  const auto dir = cached_model("bf16", tiny_spec());
  auto model = Model::load(dir);
  const Tokenizer tok = Tokenizer::load(dir);
  const GenerateOptions options = greedy(4, tok, *model);
  SessionOptions session_options;
  session_options.context_length = 48;
  Session session(model, session_options);
  ChatSession chat(session, tok, ChatFormat::bitnet);
  chat.send("hi", options);
  const std::vector<int32_t> before = chat.history();
  EXPECT_THROW(chat.send("  \n\t ", options), Error);
  try {
    chat.send(std::string(400, 'x') + " is far too long for this context", options);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("does not fit in the context of 48 tokens"));
  }
  EXPECT_THROW(chat.set_system_prompt(std::string(300, 'y') + " too long"), Error);
  EXPECT_EQ(chat.history(), before);
  EXPECT_EQ(chat.send("hi again", options).dropped_turns, 0);
  chat.reset();
  EXPECT_EQ(chat.turns(), 0);
  EXPECT_EQ(chat.history(), chat.encoder().encode_start(""));
}

}  // namespace
}  // namespace bitnet
