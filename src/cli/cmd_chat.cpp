// bitnet chat: an interactive, multi-turn chat on the terminal (or one message per line from a
// pipe), reusing the KV cache across turns.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "bitnet/chat.h"
#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "cli/commands.h"

namespace bitnet::cli {
namespace {

struct ChatArgs {
  std::string model;
  std::string system;
  std::string chat_template;
  int n_predict = 1024;
  int64_t seed = -1;
  bool quiet = false;
  bool no_stats = false;
  SessionArgs session;
  SamplingParams sampling;
};

constexpr const char* kHelp =
    "  /help          this list\n"
    "  /reset         forget the conversation (the system prompt stays)\n"
    "  /system TEXT   set the system prompt and start over (/system alone shows it)\n"
    "  /stats         context use\n"
    "  /exit          leave (or Ctrl-D); Ctrl-C stops a reply\n";

// Ctrl-C. The handler sets a flag, which a streaming reply polls, and writes a byte to a pipe,
// which the line reader polls next to stdin. So a Ctrl-C that lands after a reply's last token,
// before the prompt's read() blocks, still reaches the prompt instead of being lost.
std::atomic<bool> g_interrupted{false};
int g_interrupt_pipe[2] = {-1, -1};

extern "C" void on_sigint(int) {
  g_interrupted.store(true);
  const char byte = 1;
  [[maybe_unused]] const ssize_t written = ::write(g_interrupt_pipe[1], &byte, 1);
}

void install_sigint_handler() {
  if (::pipe2(g_interrupt_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    throw Error(std::string("chat: cannot create the Ctrl-C pipe: ") + std::strerror(errno));
  }
  struct sigaction action = {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
}

// Consumes a pending Ctrl-C: true if there was one. The pipe is drained first, so a Ctrl-C that
// arrives in between leaves its byte for the next poll rather than being lost.
bool take_interrupt() {
  char drain[64];
  while (::read(g_interrupt_pipe[0], drain, sizeof drain) > 0) {
  }
  return g_interrupted.exchange(false);
}

// Reads lines from stdin with read(2), waiting in poll(2) on stdin and the Ctrl-C pipe, so that
// Ctrl-C at the prompt is seen at once.
class LineReader {
 public:
  enum class Status { line, end, interrupted };

  Status read(std::string& line) {
    for (;;) {
      const size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Status::line;
      }
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {g_interrupt_pipe[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;  // the pipe now says why
        return Status::end;
      }
      if (fds[1].revents != 0) {
        if (take_interrupt()) {
          buffer_.clear();  // the terminal dropped the half-typed line too
          return Status::interrupted;
        }
        continue;
      }
      char chunk[4096];
      const ssize_t got = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (got > 0) {
        buffer_.append(chunk, static_cast<size_t>(got));
      } else if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      } else {
        if (buffer_.empty()) return Status::end;
        line = std::move(buffer_);  // a last line without a newline
        buffer_.clear();
        return Status::line;
      }
    }
  }

 private:
  std::string buffer_;
};

// Notices go to stderr, dimmed when it is a terminal.
void notice(const std::string& text) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  std::fprintf(stderr, tty ? "\x1b[2m%s\x1b[0m\n" : "%s\n", text.c_str());
  std::fflush(stderr);
}

// A model can emit any byte; on a terminal, control characters (escape sequences, bells,
// carriage returns) would act on the terminal instead of showing, so they become U+FFFD.
std::string printable(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const bool c0 = (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f;
    const bool c1 = c == 0xC2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9F;
    if (c0 || c1) {
      out += "\xEF\xBF\xBD";
      i += c1 ? 1 : 0;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string format_rate(size_t tokens, double seconds) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.1f",
                seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
  return buffer;
}

std::string context_use(const ChatSession& chat) {
  const int used = chat.tokens_used(), context = chat.context_length();
  const std::string turns = std::to_string(chat.turns()) + " turn(s)";
  if (used >= context) {
    return "context: full (" + std::to_string(context) + " tokens, " + turns +
           "; the next message drops the oldest turns)";
  }
  return "context: " + std::to_string(used) + " / " + std::to_string(context) + " tokens (" +
         std::to_string(used * 100 / context) + "%), " + turns;
}

class ChatLoop {
 public:
  ChatLoop(const ChatArgs& args, ChatSession& chat, GenerateOptions options)
      : args_(args), chat_(chat), options_(std::move(options)) {}

  int run() {
    const bool interactive = isatty(STDIN_FILENO) != 0;
    if (interactive) {
      notice("bitnet chat (" + std::string(chat_format_name(chat_.encoder().format())) +
             " format, context " + std::to_string(chat_.context_length()) +
             " tokens). /help lists commands; Ctrl-C stops a reply; Ctrl-D or /exit leaves.");
    }
    LineReader reader;
    int interrupts_in_a_row = 0;
    std::string line;
    for (;;) {
      if (interactive) {
        std::fputs("> ", stdout);
        std::fflush(stdout);
      }
      const LineReader::Status status = reader.read(line);
      if (status == LineReader::Status::end) break;
      if (status == LineReader::Status::interrupted) {
        if (!interactive || ++interrupts_in_a_row == 2) break;
        std::fputc('\n', stdout);
        notice("(Ctrl-C again, Ctrl-D or /exit to leave)");
        continue;
      }
      interrupts_in_a_row = 0;
      if (!line.empty() && line[0] == '/') {
        if (!command(line)) break;
      } else {
        send(line);
      }
    }
    if (interactive) std::fputc('\n', stdout);
    return 0;
  }

 private:
  // Runs a slash command; false means leave.
  bool command(const std::string& line) {
    const size_t space = line.find(' ');
    const std::string name = line.substr(0, space);
    const std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    if (name == "/exit" || name == "/quit") return false;
    if (name == "/help") {
      std::fputs(kHelp, stderr);
    } else if (name == "/reset") {
      chat_.reset();
      notice("(conversation cleared)");
    } else if (name == "/system") {
      if (rest.find_first_not_of(" \t") == std::string::npos) {
        notice(chat_.system_prompt().empty() ? "(no system prompt; /system TEXT sets one)"
                                             : "system prompt: " + chat_.system_prompt());
        return true;
      }
      try {
        chat_.set_system_prompt(rest);
        notice("(system prompt set; conversation cleared)");
      } catch (const Error& e) {
        std::fprintf(stderr, "bitnet: error: %s\n", e.what());
      }
    } else if (name == "/stats") {
      notice(context_use(chat_));
    } else {
      std::fprintf(stderr, "bitnet: unknown command '%s' (/help lists the commands)\n",
                   name.c_str());
    }
    return true;
  }

  void send(const std::string& line) {
    take_interrupt();
    static const bool terminal = isatty(STDOUT_FILENO) != 0;
    auto stream = [](const std::string& piece) {
      const std::string shown = terminal ? printable(piece) : piece;
      std::fwrite(shown.data(), 1, shown.size(), stdout);
      std::fflush(stdout);
      return !g_interrupted.load();
    };
    ChatSession::Reply reply;
    try {
      reply = chat_.send(line, options_, stream);
    } catch (const Error& e) {
      std::fprintf(stderr, "bitnet: error: %s\n", e.what());
      return;
    }
    // A Ctrl-C that stopped the reply is spent; one that came after its last token waits for
    // the prompt.
    if (reply.interrupted) take_interrupt();
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (reply.interrupted) notice("(stopped)");
    if (!args_.no_stats) {
      const GenerateResult& r = reply.result;
      notice("prompt: " + std::to_string(r.prompt_ids.size()) + " tokens, " +
             format_rate(r.prompt_ids.size(), r.prompt_seconds) +
             " tokens/s | reply: " + std::to_string(r.ids.size()) + " tokens, " +
             format_rate(static_cast<size_t>(r.gen_tokens_timed), r.gen_seconds) + " tokens/s | " +
             context_use(chat_));
    }
  }

  const ChatArgs& args_;
  ChatSession& chat_;
  GenerateOptions options_;
};

int chat(const ChatArgs& args) {
  const std::string model_dir = resolve_model_path(args.model).string();
  LoadOptions load_options;
  SessionOptions session_options;
  args.session.apply(load_options, session_options);
  const auto [model, tokenizer] = load_model_and_tokenizer(model_dir, args.quiet, load_options);
  const ChatFormat format = choose_chat_format(tokenizer, args.chat_template);
  Session session(model, session_options);
  ChatSession chat(session, tokenizer, format, args.system);
  chat.on_context_trimmed = [](int dropped, int kept) {
    notice("(the context is full: dropped the oldest " + std::to_string(dropped) +
           " turn(s), keeping the system prompt and " + std::to_string(kept) + " turn(s))");
  };

  GenerateOptions options;
  options.max_new_tokens = args.n_predict;
  options.sampling = args.sampling;
  options.sampling.seed =
      args.seed >= 0 ? static_cast<uint64_t>(args.seed) : std::random_device{}();
  options.stop_ids = default_stop_ids(model->config(), tokenizer);

  install_sigint_handler();
  return ChatLoop(args, chat, options).run();
}

}  // namespace

Action add_chat(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with the model in the terminal");
  add_model_option(*cmd, args->model);
  cmd->add_option("--system", args->system, "System prompt");
  cmd->add_option("--chat-template", args->chat_template,
                  "Chat format: bitnet or llama3 (default: recognized from the tokenizer's "
                  "chat_template)");
  cmd->add_option("-n,--n-predict", args->n_predict, "Maximum tokens per reply")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_sampling_options(*cmd, args->sampling);
  cmd->add_option("-s,--seed", args->seed, "Sampling seed (default: random)");
  add_session_options(*cmd, args->session);
  cmd->add_flag("--no-stats", args->no_stats, "Do not print speeds after each reply");
  cmd->add_flag("-q,--quiet", args->quiet, "No loading progress on stderr");
  return [args] {
    args->sampling.validate();
    return chat(*args);
  };
}

}  // namespace bitnet::cli
