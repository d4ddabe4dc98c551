// bitnet: the command-line front end. One file per subcommand.
#include <cstdio>
#include <vector>

#include "bitnet/error.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bitnet: inference for BitNet b1.58 ternary language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "bitnet 0.1.0");
  std::vector<std::pair<CLI::App*, bitnet::cli::Action>> commands;
  auto add = [&](bitnet::cli::Action (*register_fn)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    bitnet::cli::Action action = register_fn(app);
    commands.emplace_back(app.get_subcommands({})[before], std::move(action));
  };
  add(bitnet::cli::add_run);
  add(bitnet::cli::add_tokenize);
  add(bitnet::cli::add_make_model);
  add(bitnet::cli::add_bench);
  add(bitnet::cli::add_convert);
  add(bitnet::cli::add_serve);
  add(bitnet::cli::add_loadgen);
  add(bitnet::cli::add_chat);
  add(bitnet::cli::add_check);
  add(bitnet::cli::add_info);
  add(bitnet::cli::add_demo);
  add(bitnet::cli::add_perplexity);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : commands) {
      if (sub->parsed()) return action();
    }
  } catch (const bitnet::Error& e) {
    std::fprintf(stderr, "bitnet: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bitnet: error: %s\n", e.what());
    return 1;
  }
  return 1;
}
