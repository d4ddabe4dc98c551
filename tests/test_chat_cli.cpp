// `bitnet chat` end to end: scripted through a pipe, and on a real terminal under tmux (typing,
// Ctrl-C while a reply streams, /exit).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

#include "bitnet/chat.h"
#include "test_util.h"

namespace bitnet {
namespace {

using test::cached_model;
using test::run_cli;
using test::tiny_spec;
using ::testing::HasSubstr;
using ::testing::Not;

std::string model_dir() {
  return cached_model("bf16", tiny_spec()).string();
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

TEST(ChatCli, ScriptedRepliesMatchTheLibrary) {
  const auto r =
      run_cli({"chat", "-m", model_dir(), "--system", "Be brief.", "--temp", "0", "-n", "10", "-q"},
              "Hello there\nHow are you?\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto model = Model::load(model_dir());
  const Tokenizer tokenizer = Tokenizer::load(model_dir());
  Session session(model);
  ChatSession chat(session, tokenizer, ChatFormat::bitnet, "Be brief.");
  GenerateOptions options;
  options.max_new_tokens = 10;
  options.sampling.temperature = 0;
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  const std::string first = chat.send("Hello there", options).result.text;
  const std::string second = chat.send("How are you?", options).result.text;
  EXPECT_EQ(r.out, first + "\n" + second + "\n");
  // Not a terminal: no prompt decoration, plain (undimmed) speed lines on stderr.
  EXPECT_EQ(count(r.err, "| reply: "), 2u) << r.err;
  EXPECT_THAT(r.err, Not(HasSubstr("\x1b[")));

  const auto quiet =
      run_cli({"chat", "-m", model_dir(), "--temp", "0", "-n", "4", "-q", "--no-stats"}, "Hello\n");
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
}

TEST(ChatCli, CommandsAndBadInputKeepTheChatRunning) {
  const auto r = run_cli({"chat", "-m", model_dir(), "-c", "48", "--temp", "0", "-n", "4", "-q"},
                         "/help\n/bogus\n\n   \n" + std::string(300, 'z') +
                             " is longer than the context\n/system Be nice.\n/system\n"
                             "/stats\nhi\n/reset\n/stats\n/exit\nnever sent\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("/reset"));  // the help text
  EXPECT_THAT(r.err, HasSubstr("unknown command '/bogus' (/help lists the commands)"));
  EXPECT_EQ(count(r.err, "the message is empty"), 2u) << r.err;
  EXPECT_THAT(r.err, HasSubstr("does not fit in the context of 48 tokens"));
  EXPECT_THAT(r.err, HasSubstr("system prompt: Be nice."));
  const Tokenizer tokenizer = Tokenizer::load(model_dir());
  const size_t start = ChatEncoder(tokenizer, ChatFormat::bitnet).encode_start("Be nice.").size();
  EXPECT_EQ(count(r.err, "context: " + std::to_string(start) + " / 48 tokens"), 2u) << r.err;
  EXPECT_THAT(r.err, HasSubstr("(conversation cleared)"));
  EXPECT_EQ(count(r.err, "| reply: "), 1u) << "only 'hi' gets a reply, not what follows /exit";
}

TEST(ChatCli, LongChatsDropTheOldestTurns) {
  std::string script;
  for (int i = 0; i < 8; ++i) script += "message " + std::to_string(i) + " about nothing\n";
  const auto r =
      run_cli({"chat", "-m", model_dir(), "-c", "64", "--temp", "0", "-n", "8", "-q"}, script);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("the context is full: dropped the oldest"));
  EXPECT_EQ(count(r.err, "| reply: "), 8u) << r.err;
}

TEST(ChatCli, StartUpErrorsExitWithTheReason) {
  test::TempDir tmp;
  auto missing = run_cli({"chat", "-m", (tmp / "absent").string()});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("absent: no such file or directory"));

  std::filesystem::copy(model_dir(), tmp / "no_tokenizer");
  std::filesystem::remove(tmp / "no_tokenizer" / "tokenizer.json");
  auto no_tokenizer = run_cli({"chat", "-m", (tmp / "no_tokenizer").string()});
  EXPECT_NE(no_tokenizer.exit_code, 0);
  EXPECT_THAT(no_tokenizer.err, HasSubstr("tokenizer.json"));

  auto unknown = run_cli({"chat", "-m", model_dir(), "--chat-template", "chatml"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("unknown chat template 'chatml' (built-in: bitnet, llama3)"));

  std::filesystem::copy(model_dir(), tmp / "odd_template");
  test::write_file(tmp / "odd_template" / "tokenizer_config.json",
                   R"({"bos_token": "<|begin_of_text|>", "chat_template": "{{ messages }}"})");
  auto odd = run_cli({"chat", "-m", (tmp / "odd_template").string()});
  EXPECT_NE(odd.exit_code, 0);
  EXPECT_THAT(odd.err, HasSubstr("not one of the built-in formats"));
  EXPECT_THAT(odd.err, HasSubstr("--chat-template bitnet|llama3"));
  // Naming a format overrides the unrecognized template.
  auto forced = run_cli(
      {"chat", "-m", (tmp / "odd_template").string(), "--chat-template", "bitnet", "-n", "2", "-q"},
      "hello\n");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
}

// ---- on a terminal, under tmux ----

class Tmux {
 public:
  explicit Tmux(const std::string& script)
      : socket_("bitnet_test_" + std::to_string(::getpid()) + "_" +
                std::to_string(std::random_device{}())) {
    run("-f /dev/null new-session -d -s chat -x 160 -y 40 'sh " + script + "'");
  }
  ~Tmux() { run("kill-server"); }
  Tmux(const Tmux&) = delete;
  Tmux& operator=(const Tmux&) = delete;

  void type(const std::string& text) { run("send-keys -t chat -l '" + text + "'"); }
  void key(const std::string& name) { run("send-keys -t chat " + name); }
  // The whole pane with its scrollback, wrapped lines joined.
  std::string capture() {
    return test::shell_output(command("capture-pane -p -J -S -5000 -t chat")).output;
  }

  // Polls the pane until `done` holds; false after the timeout (generous: a loaded CI machine
  // can take seconds to start the program, and a passing run returns at once).
  bool wait_for(const std::function<bool(const std::string&)>& done, std::string& pane,
                double seconds = 30.0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      pane = capture();
      if (done(pane)) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
  }

 private:
  std::string command(const std::string& args) const {
    return "tmux -L " + socket_ + " " + args + " 2>/dev/null";
  }
  void run(const std::string& args) const {
    [[maybe_unused]] const int status = std::system(command(args).c_str());
  }
  std::string socket_;
};

std::string last_nonblank_line(const std::string& pane) {
  size_t end = pane.find_last_not_of(" \n");
  if (end == std::string::npos) return "";
  const size_t begin = pane.rfind('\n', end);
  return pane.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin + 1));
}

// Non-blank characters shown after the last line that starts with `marker`.
size_t shown_after(const std::string& pane, const std::string& marker) {
  const size_t at = pane.rfind(marker);
  if (at == std::string::npos) return 0;
  size_t n = 0;
  for (size_t i = at + marker.size(); i < pane.size(); ++i) n += pane[i] != ' ' && pane[i] != '\n';
  return n;
}

TEST(ChatTerminal, TypingCtrlCAndExitUnderTmux) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0) GTEST_SKIP() << "tmux is not installed";
  // A context long enough that a reply is still streaming when Ctrl-C arrives.
  RandomModelSpec spec = tiny_spec();
  spec.max_seq_len = 32768;
  const auto dir = cached_model("bf16_long_context", spec);
  test::TempDir tmp;
  // The shell traps SIGINT (a trap, unlike an ignore, is not inherited) so that Ctrl-C reaches
  // only bitnet's own handler and the shell stays to report the exit status.
  test::write_file(tmp / "chat.sh", std::string("trap : INT\n'") + BITNET_CLI_PATH + "' chat -m '" +
                                        dir.string() +
                                        "' -c 32768 -n 100000 -t 1 --device cpu --seed 1 -q\n"
                                        "echo CHAT-EXITED-$?\nsleep 30\n");
  Tmux tmux((tmp / "chat.sh").string());
  std::string pane;
  auto at_prompt = [](const std::string& p) { return last_nonblank_line(p) == ">"; };

  ASSERT_TRUE(tmux.wait_for(
      [&](const std::string& p) {
        return p.find("/help lists commands") != std::string::npos && at_prompt(p);
      },
      pane))
      << pane;
  // A random model may end a reply on its own before Ctrl-C arrives (then Ctrl-C lands at the
  // prompt, which must survive it); at least one of the replies must be stopped by Ctrl-C.
  int replies = 0, stopped = 0;
  for (const std::string message : {"Hello bot", "Second message", "Third one", "Fourth"}) {
    if (replies >= 2 && stopped >= 1) break;
    tmux.type(message);
    tmux.key("Enter");
    ASSERT_TRUE(tmux.wait_for(
        [&](const std::string& p) { return shown_after(p, "> " + message) > 0; }, pane))
        << "no streamed reply to '" << message << "':\n"
        << pane;
    ++replies;
    const size_t stops_before = count(pane, "(stopped)");
    const size_t ended_before = count(pane, "tokens/s");
    // A short reply may already have ended (speed line and prompt shown) in this snapshot.
    const bool reply_ended = at_prompt(pane);
    tmux.key("C-c");
    ASSERT_TRUE(tmux.wait_for(
        [&](const std::string& p) {
          return at_prompt(p) &&
                 (count(p, "(stopped)") > stops_before || count(p, "Ctrl-C again") > 0);
        },
        pane))
        << "Ctrl-C did not return to the prompt:\n"
        << pane;
    stopped += count(pane, "(stopped)") > stops_before;
    EXPECT_GE(count(pane, "tokens/s"), ended_before + (reply_ended ? 0 : 1))
        << "no speed line after the reply:\n"
        << pane;
  }
  EXPECT_GE(stopped, 1) << pane;
  tmux.type("/exit");
  tmux.key("Enter");
  ASSERT_TRUE(tmux.wait_for(
      [](const std::string& p) { return p.find("CHAT-EXITED-0") != std::string::npos; }, pane))
      << pane;
}

}  // namespace
}  // namespace bitnet
