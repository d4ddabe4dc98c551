// bitnet loadgen: concurrent streaming clients against a bitnet serve (or any OpenAI-compatible
// server), reporting aggregate tokens/s, time to first token and inter-token latency.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "bitnet/error.h"
#include "cli/commands.h"
#include "server/sse_client.h"

namespace bitnet::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct LoadgenArgs {
  std::string url = "http://127.0.0.1:8080";
  std::vector<int> concurrency = {1, 4, 8};
  int max_tokens = 64;
  int rounds = 2;
  std::string prompt = "Once upon a time";
  std::string endpoint = "completion";
  std::string api_key;
  float temperature = 0.8f;
  bool json_output = false;
};

struct RequestRecord {
  bool ok = false;
  int tokens = 0;
  double ttft = 0;
  std::vector<double> gaps;  // between consecutive text chunks
};

struct LevelReport {
  int concurrency = 0, requests = 0, failed = 0;
  int64_t tokens = 0;
  double seconds = 0, tokens_per_s = 0;
  double ttft_p50 = 0, ttft_p95 = 0, itl_p50 = 0, itl_p95 = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// "http://host:port" -> host, port.
std::pair<std::string, int> parse_url(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  if (rest.empty() || rest.find('/') != std::string::npos)
    throw Error("--url must look like http://HOST:PORT, got '" + url + "'");
  if (colon == std::string::npos) return {rest, 80};
  return {rest.substr(0, colon), std::stoi(rest.substr(colon + 1))};
}

RequestRecord one_request(const LoadgenArgs& args, const std::string& host, int port,
                          uint64_t seed) {
  const bool chat = args.endpoint == "chat";
  json body = {{"max_tokens", args.max_tokens},
               {"temperature", args.temperature},
               {"seed", seed},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (chat) {
    body["messages"] = json::array({{{"role", "user"}, {"content", args.prompt}}});
  } else {
    body["prompt"] = args.prompt;
  }
  RequestRecord record;
  const auto start = Clock::now();
  auto last = start;
  bool first = true;
  const auto result = server::post_sse(
      host, port, chat ? "/v1/chat/completions" : "/v1/completions", body.dump(),
      [&](const std::string& data) {
        if (data == "[DONE]") return true;
        const json event = json::parse(data, nullptr, false);
        if (event.is_discarded()) return false;
        if (event.contains("usage") && event["usage"].is_object())
          record.tokens = event["usage"].value("completion_tokens", 0);
        if (!event.contains("choices") || event["choices"].empty()) return true;
        const json& choice = event["choices"][0];
        const json text = chat ? choice["delta"].value("content", json("")) : choice["text"];
        if (!text.is_string() || text.get<std::string>().empty()) return true;
        const auto now = Clock::now();
        if (first) {
          record.ttft = std::chrono::duration<double>(now - start).count();
          first = false;
        } else {
          record.gaps.push_back(std::chrono::duration<double>(now - last).count());
        }
        last = now;
        return true;
      },
      600, args.api_key);
  record.ok = result.status == 200 && result.error.empty() && !first;
  return record;
}

LevelReport run_level(const LoadgenArgs& args, const std::string& host, int port, int clients) {
  std::vector<std::vector<RequestRecord>> records(static_cast<size_t>(clients));
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int r = 0; r < args.rounds; ++r) {
        records[static_cast<size_t>(c)].push_back(
            one_request(args, host, port, static_cast<uint64_t>(c * 1000 + r)));
      }
    });
  }
  for (auto& t : threads) t.join();
  LevelReport report;
  report.concurrency = clients;
  report.seconds = since(start);
  std::vector<double> ttfts, gaps;
  for (const auto& client : records) {
    for (const RequestRecord& r : client) {
      ++report.requests;
      if (!r.ok) {
        ++report.failed;
        continue;
      }
      report.tokens += r.tokens;
      ttfts.push_back(r.ttft);
      gaps.insert(gaps.end(), r.gaps.begin(), r.gaps.end());
    }
  }
  report.tokens_per_s = static_cast<double>(report.tokens) / report.seconds;
  report.ttft_p50 = percentile(ttfts, 0.5);
  report.ttft_p95 = percentile(ttfts, 0.95);
  report.itl_p50 = percentile(gaps, 0.5);
  report.itl_p95 = percentile(gaps, 0.95);
  return report;
}

int run(const LoadgenArgs& args) {
  signal(SIGPIPE, SIG_IGN);
  const auto [host, port] = parse_url(args.url);
  std::vector<LevelReport> reports;
  if (!args.json_output) {
    std::printf("%-7s %8s %6s %9s %9s %10s %10s %10s %10s %8s\n", "streams", "requests", "failed",
                "tokens", "tok/s", "ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "speedup");
  }
  for (int clients : args.concurrency) {
    const LevelReport r = run_level(args, host, port, clients);
    reports.push_back(r);
    const double speedup =
        reports.front().tokens_per_s > 0 ? r.tokens_per_s / reports.front().tokens_per_s : 0.0;
    if (!args.json_output) {
      std::printf("%-7d %8d %6d %9lld %9.2f %9.1fms %9.1fms %9.1fms %9.1fms %7.2fx\n",
                  r.concurrency, r.requests, r.failed, static_cast<long long>(r.tokens),
                  r.tokens_per_s, r.ttft_p50 * 1e3, r.ttft_p95 * 1e3, r.itl_p50 * 1e3,
                  r.itl_p95 * 1e3, speedup);
      std::fflush(stdout);
    }
  }
  if (args.json_output) {
    json out = json::array();
    for (const LevelReport& r : reports) {
      out.push_back({{"concurrency", r.concurrency},
                     {"requests", r.requests},
                     {"failed", r.failed},
                     {"tokens", r.tokens},
                     {"seconds", r.seconds},
                     {"tokens_per_s", r.tokens_per_s},
                     {"ttft_p50_s", r.ttft_p50},
                     {"ttft_p95_s", r.ttft_p95},
                     {"itl_p50_s", r.itl_p50},
                     {"itl_p95_s", r.itl_p95}});
    }
    std::printf("%s\n", out.dump().c_str());
  }
  const bool any_failed =
      std::any_of(reports.begin(), reports.end(), [](const LevelReport& r) { return r.failed; });
  return any_failed ? 1 : 0;
}

}  // namespace

Action add_loadgen(CLI::App& app) {
  auto args = std::make_shared<LoadgenArgs>();
  CLI::App* cmd = app.add_subcommand(
      "loadgen", "Load-test a server with concurrent streaming requests and report throughput");
  cmd->add_option("--url", args->url, "Server base URL")->capture_default_str();
  cmd->add_option("-c,--concurrency", args->concurrency, "Concurrent streams per level")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("-n,--max-tokens", args->max_tokens, "max_tokens of each request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--rounds", args->rounds, "Requests each stream sends, one after another")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt (or user message)")->capture_default_str();
  cmd->add_option("--endpoint", args->endpoint, "completion or chat")
      ->capture_default_str()
      ->check(CLI::IsMember({"completion", "chat"}));
  cmd->add_option("--temp", args->temperature, "Temperature")->capture_default_str();
  cmd->add_option("--api-key", args->api_key, "Bearer token");
  cmd->add_flag("--json", args->json_output, "Print one JSON array instead of a table");
  return [args] { return run(*args); };
}

}  // namespace bitnet::cli
