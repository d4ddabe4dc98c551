// Model lookup: existing paths, and HuggingFace repo ids in a (fake) hub cache.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <optional>

#include "bitnet/error.h"
#include "bitnet/model_path.h"
#include "test_util.h"

namespace bitnet {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

// Sets (or unsets, with nullopt) an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Only `hub` is set: the other variables must not leak in from the machine running the tests.
struct HubEnv {
  explicit HubEnv(const fs::path& hub)
      : hub_cache("HF_HUB_CACHE", hub.string()),
        hf_home("HF_HOME", std::nullopt),
        xdg("XDG_CACHE_HOME", std::nullopt) {}
  ScopedEnv hub_cache, hf_home, xdg;
};

fs::path make_snapshot(const fs::path& hub, const std::string& repo_dir, const std::string& rev) {
  const fs::path dir = hub / repo_dir / "snapshots" / rev;
  fs::create_directories(dir);
  write_file(dir / "config.json", "{}");
  return dir;
}

const std::string kRepoDir = "models--microsoft--bitnet-b1.58-2B-4T";

TEST(ModelPath, AnExistingPathIsUsedAsIs) {
  TempDir tmp;
  fs::create_directories(tmp / "org" / "name");
  EXPECT_EQ(resolve_model_path((tmp / "org" / "name").string()), tmp / "org" / "name");
}

TEST(ModelPath, TheSnapshotNamedByRefsMainWins) {
  TempDir hub;
  HubEnv env(hub.path());
  const fs::path a = make_snapshot(hub.path(), kRepoDir, "aaaa");
  const fs::path b = make_snapshot(hub.path(), kRepoDir, "bbbb");
  fs::last_write_time(b, fs::last_write_time(a) + std::chrono::hours(1));
  fs::create_directories(hub / kRepoDir / "refs");
  write_file(hub / kRepoDir / "refs" / "main", "aaaa\n");
  EXPECT_EQ(resolve_model_path(""), a);
  EXPECT_EQ(resolve_model_path("microsoft/bitnet-b1.58-2B-4T"), a);
}

TEST(ModelPath, WithoutRefsMainTheNewestSnapshotWins) {
  TempDir hub;
  HubEnv env(hub.path());
  const fs::path a = make_snapshot(hub.path(), kRepoDir, "aaaa");
  const fs::path b = make_snapshot(hub.path(), kRepoDir, "bbbb");
  fs::last_write_time(a, fs::last_write_time(b) + std::chrono::hours(1));
  EXPECT_EQ(resolve_model_path(""), a);
  // refs/main naming a snapshot that is gone falls back to the newest one too.
  fs::create_directories(hub / kRepoDir / "refs");
  write_file(hub / kRepoDir / "refs" / "main", "cccc");
  EXPECT_EQ(resolve_model_path(""), a);
}

TEST(ModelPath, TheCacheComesFromHfHubCacheThenHfHomeThenHome) {
  TempDir tmp;
  const fs::path from_home = make_snapshot(tmp / "home/.cache/huggingface/hub", kRepoDir, "r1");
  const fs::path from_hf_home = make_snapshot(tmp / "hf/hub", kRepoDir, "r2");
  const fs::path from_hub_cache = make_snapshot(tmp / "hubcache", kRepoDir, "r3");
  ScopedEnv home("HOME", (tmp / "home").string()), xdg("XDG_CACHE_HOME", std::nullopt);
  {
    ScopedEnv hub("HF_HUB_CACHE", (tmp / "hubcache").string());
    ScopedEnv hf_home("HF_HOME", (tmp / "hf").string());
    EXPECT_EQ(resolve_model_path(""), from_hub_cache);
  }
  {
    ScopedEnv hub("HF_HUB_CACHE", std::nullopt);
    ScopedEnv hf_home("HF_HOME", (tmp / "hf").string());
    EXPECT_EQ(resolve_model_path(""), from_hf_home);
  }
  ScopedEnv hub("HF_HUB_CACHE", std::nullopt), hf_home("HF_HOME", std::nullopt);
  EXPECT_EQ(huggingface_hub_cache(), tmp / "home/.cache/huggingface/hub");
  EXPECT_EQ(resolve_model_path(""), from_home);
  EXPECT_EQ(resolve_model_path("microsoft/bitnet-b1.58-2B-4T"), from_home);
}

TEST(ModelPath, AMissingModelSaysWhereItLookedAndHowToGetIt) {
  TempDir hub;
  HubEnv env(hub.path());
  try {
    resolve_model_path("");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr((hub / kRepoDir).string()));
    EXPECT_THAT(e.what(), HasSubstr("huggingface-cli download microsoft/bitnet-b1.58-2B-4T"));
  }
  try {
    resolve_model_path("someone/other-model");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("someone/other-model: no such file or directory"));
    EXPECT_THAT(e.what(), HasSubstr((hub / "models--someone--other-model").string()));
    EXPECT_THAT(e.what(), HasSubstr("huggingface-cli download someone/other-model"));
  }
  // A snapshot without config.json is an incomplete download.
  const fs::path partial = hub / kRepoDir / "snapshots" / "abc";
  fs::create_directories(partial);
  try {
    resolve_model_path("");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(partial.string() + ": no config.json"));
  }
  // A path that is not a repo id gets no download advice.
  try {
    resolve_model_path("/no/such/dir/anywhere");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/no/such/dir/anywhere: no such file or directory"));
    EXPECT_THAT(e.what(), ::testing::Not(HasSubstr("huggingface-cli")));
  }
}

TEST(ModelPath, CommandsFindTheDefaultModelInTheCache) {
  TempDir hub;
  HubEnv env(hub.path());
  const fs::path snapshot = hub / kRepoDir / "snapshots" / "rev1";
  write_random_model(snapshot, test::tiny_spec());
  const auto run = test::run_cli({"run", "-p", "Hello", "-n", "3", "--temp", "0", "-q"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  const auto info = test::run_cli({"info", "-m", "microsoft/bitnet-b1.58-2B-4T", "--json"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr(snapshot.string()));

  fs::remove_all(hub / kRepoDir);
  for (const char* command : {"run", "chat", "info", "check"}) {
    const auto missing = test::run_cli({command, "-q"});
    EXPECT_NE(missing.exit_code, 0) << command;
    EXPECT_THAT(missing.err, HasSubstr((hub / kRepoDir).string())) << command;
    EXPECT_THAT(missing.err, HasSubstr("huggingface-cli download")) << command;
  }
}

}  // namespace
}  // namespace bitnet
