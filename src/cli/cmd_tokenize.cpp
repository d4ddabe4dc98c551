// bitnet tokenize: text to token ids as JSON, one string or many (JSON lines on stdin).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "bitnet/tokenizer.h"
#include "cli/commands.h"

namespace bitnet::cli {

Action add_tokenize(CLI::App& app) {
  struct Args {
    std::string model, text;
    bool no_bos = false, jsonl = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  add_model_option(*cmd, args->model);
  cmd->add_option("text", args->text, "Text to tokenize");
  cmd->add_flag("--no-bos", args->no_bos, "Do not prepend the BOS token");
  cmd->add_flag("--jsonl", args->jsonl,
                "Read one JSON string per line from stdin, print one array per line");
  return [args] {
    const Tokenizer tokenizer = Tokenizer::load(resolve_model_path(args->model));
    if (!args->jsonl) {
      std::printf("%s\n",
                  nlohmann::json(tokenizer.encode(args->text, !args->no_bos)).dump().c_str());
      return 0;
    }
    std::string line;
    for (int line_no = 1; std::getline(std::cin, line); ++line_no) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error("stdin line " + std::to_string(line_no) + ": malformed JSON: " + e.what());
      }
      if (!j.is_string())
        throw Error("stdin line " + std::to_string(line_no) + ": expected a JSON string");
      std::printf(
          "%s\n",
          nlohmann::json(tokenizer.encode(j.get<std::string>(), !args->no_bos)).dump().c_str());
    }
    return 0;
  };
}

}  // namespace bitnet::cli
