// safetensors reader/writer: round trips through write_safetensors, and the reader's
// validation of untrusted files (every error must name the file and, where relevant, the tensor).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/safetensors.h"
#include "bitnet/error.h"

namespace bitnet {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

// A fresh directory per test, removed when the test ends.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ =
        fs::temp_directory_path() / ("bitnet_st_" + std::string(info ? info->name() : "x") + "_" +
                                     std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected bitnet::Error";
  return "";
}

// Writes u64 header length, the header text and `data` verbatim.
void write_raw(const fs::path& path, const std::string& header, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// A file holding one tensor per name, each F32 [2] filled with byte values derived from i.
void write_simple(const fs::path& path, const std::vector<std::string>& names) {
  std::vector<TensorSpec> specs;
  for (const auto& n : names) specs.push_back({n, DType::F32, {2}});
  write_safetensors(path, specs, [](size_t i, std::span<uint8_t> buf) {
    for (size_t k = 0; k < buf.size(); ++k) buf[k] = static_cast<uint8_t>(i * 16 + k);
  });
}

// The reader's error for a one-tensor file whose header entry for "w" is `entry`.
std::string entry_error(const TempDir& dir, const json& entry, size_t data_bytes = 16) {
  const fs::path path = dir / "bad.safetensors";
  write_raw(path, json{{"w", entry}}.dump(), std::vector<uint8_t>(data_bytes, 0));
  std::string msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("'w'"));
  return msg;
}

TEST(Safetensors, RoundTripSeveralDtypesAndShapes) {
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  const std::vector<TensorSpec> specs = {
      {"f32", DType::F32, {2, 3}},     {"bf16", DType::BF16, {3}},     {"scalar_i8", DType::I8, {}},
      {"empty_u8", DType::U8, {0, 5}}, {"i32", DType::I32, {3, 1, 2}}, {"f16", DType::F16, {5}},
      {"u8", DType::U8, {7}},
  };
  auto byte_value = [](size_t i, size_t k) { return static_cast<uint8_t>(i * 37 + k * 11 + 1); };
  write_safetensors(path, specs,
                    [&](size_t i, std::span<uint8_t> buf) {
                      ASSERT_EQ(buf.size(), specs[i].byte_size());
                      for (size_t k = 0; k < buf.size(); ++k) buf[k] = byte_value(i, k);
                    },
                    {{"format", "pt"}, {"note", "hello"}});

  SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const TensorView& v = file.tensors().at(specs[i].name);
    EXPECT_EQ(v.name, specs[i].name);
    EXPECT_EQ(v.dtype, specs[i].dtype);
    EXPECT_EQ(v.shape, specs[i].shape);
    ASSERT_EQ(v.bytes.size(), specs[i].byte_size());
    int64_t numel = 1;
    for (int64_t d : specs[i].shape) numel *= d;
    EXPECT_EQ(v.numel(), numel);
    EXPECT_EQ(v.bytes.size(), static_cast<size_t>(numel) * dtype_size(v.dtype));
    for (size_t k = 0; k < v.bytes.size(); ++k) ASSERT_EQ(v.bytes[k], byte_value(i, k)) << k;
    ASSERT_NE(v.file, nullptr);
    EXPECT_EQ(*v.file, path);
  }
  EXPECT_EQ(file.tensors().at("scalar_i8").numel(), 1);
  EXPECT_EQ(file.tensors().at("scalar_i8").describe(), "[] I8");
  EXPECT_EQ(file.tensors().at("empty_u8").numel(), 0);
  EXPECT_EQ(file.tensors().at("f32").describe(), "[2, 3] F32");
  EXPECT_EQ(file.tensors().at("i32").describe(), "[3, 1, 2] I32");

  // The data section starts 8-byte aligned and the header carries the metadata.
  std::ifstream in(path, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  const json j = json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(j["__metadata__"]["note"], "hello");
  size_t total = 0;
  for (const auto& s : specs) total += s.byte_size();
  EXPECT_EQ(fs::file_size(path), 8 + header_len + total);
}

TEST(Safetensors, DataSectionIsAlignedForEveryHeaderLength) {
  TempDir dir;
  // Tensor names of growing length shift the header length through every residue mod 8.
  for (int len = 1; len <= 16; ++len) {
    const fs::path path = dir / ("a" + std::to_string(len) + ".safetensors");
    write_safetensors(path, {{std::string(static_cast<size_t>(len), 'x'), DType::BF16, {1}}},
                      [](size_t, std::span<uint8_t> b) { b[0] = 0xAB, b[1] = 0xCD; });
    std::ifstream in(path, std::ios::binary);
    uint64_t header_len = 0;
    in.read(reinterpret_cast<char*>(&header_len), 8);
    EXPECT_EQ((8 + header_len) % 8, 0u) << len;
    SafetensorsFile f(path);
    const auto& bytes = f.tensors().begin()->second.bytes;
    ASSERT_EQ(bytes.size(), 2u);
    EXPECT_EQ(bytes[0], 0xAB);
    EXPECT_EQ(bytes[1], 0xCD);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes.data()) % 8, 0u);
  }
}

TEST(Safetensors, EmptyFileListRoundTrips) {
  TempDir dir;
  write_safetensors(dir / "e.safetensors", {}, [](size_t, std::span<uint8_t>) {});
  SafetensorsFile f(dir / "e.safetensors");
  EXPECT_TRUE(f.tensors().empty());
}

TEST(Safetensors, FileShorterThanEightBytes) {
  TempDir dir;
  for (size_t size : {0u, 1u, 7u}) {
    const fs::path path = dir / "short.safetensors";
    write_bytes(path, std::vector<uint8_t>(size, 0));
    EXPECT_THAT(error_of([&] { SafetensorsFile f(path); }), HasSubstr(path.string())) << size;
  }
}

TEST(Safetensors, HeaderLengthLargerThanFile) {
  TempDir dir;
  const fs::path path = dir / "long.safetensors";
  std::vector<uint8_t> bytes(20, ' ');
  const uint64_t len = 1000;
  std::memcpy(bytes.data(), &len, 8);
  write_bytes(path, bytes);
  const std::string msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("1000"));

  // A length near 2^64 must not wrap around in the bounds check.
  const uint64_t huge = ~uint64_t{0} - 4;
  std::memcpy(bytes.data(), &huge, 8);
  write_bytes(path, bytes);
  EXPECT_THAT(error_of([&] { SafetensorsFile f(path); }), HasSubstr(path.string()));
}

TEST(Safetensors, HeaderNotJson) {
  TempDir dir;
  const fs::path path = dir / "nojson.safetensors";
  write_raw(path, "{\"w\": {not json", {});
  EXPECT_THAT(error_of([&] { SafetensorsFile f(path); }), HasSubstr(path.string()));
}

TEST(Safetensors, HeaderNotAnObject) {
  TempDir dir;
  const fs::path path = dir / "array.safetensors";
  write_raw(path, "[1, 2, 3]", {});
  const std::string msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("object"));
}

TEST(Safetensors, EntryMissingDtypeShapeOrOffsets) {
  TempDir dir;
  const json full = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}};
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    SCOPED_TRACE(key);
    json entry = full;
    entry.erase(key);
    entry_error(dir, entry);
  }
  entry_error(dir, json{{"dtype", 3}, {"shape", {4}}, {"data_offsets", {0, 16}}});
  entry_error(dir, json{{"dtype", "F32"}, {"shape", 4}, {"data_offsets", {0, 16}}});
  entry_error(dir, json{{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0}}});
  entry_error(dir, json{{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 8, 16}}});
  entry_error(dir, json::array({1, 2}));
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string msg =
      entry_error(dir, json{{"dtype", "Q4"}, {"shape", {4}}, {"data_offsets", {0, 16}}});
  EXPECT_THAT(msg, HasSubstr("Q4"));
}

TEST(Safetensors, NegativeOrNonIntegerShape) {
  TempDir dir;
  for (const json& shape :
       {json::array({-1}), json::array({2.5}), json::array({"4"}), json::array({2, -2})}) {
    SCOPED_TRACE(shape.dump());
    entry_error(dir, json{{"dtype", "U8"}, {"shape", shape}, {"data_offsets", {0, 4}}});
  }
}

TEST(Safetensors, NegativeDataOffsets) {
  TempDir dir;
  entry_error(dir, json{{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {-4, 0}}});
  entry_error(dir, json{{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {0, 4.0}}});
}

TEST(Safetensors, TruncatedFileHasOffsetsOutOfRange) {
  TempDir dir;
  const fs::path path = dir / "trunc.safetensors";
  write_safetensors(path, {{"a", DType::F32, {4}}, {"b", DType::F32, {8}}},
                    [](size_t, std::span<uint8_t> b) { std::fill(b.begin(), b.end(), 1); });
  ASSERT_NO_THROW(SafetensorsFile f(path));
  fs::resize_file(path, fs::file_size(path) - 5);
  const std::string msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("'b'"));
}

TEST(Safetensors, BeginAfterEnd) {
  TempDir dir;
  entry_error(dir, json{{"dtype", "U8"}, {"shape", {0}}, {"data_offsets", {8, 4}}});
}

TEST(Safetensors, ByteCountDoesNotMatchShape) {
  TempDir dir;
  const std::string msg =
      entry_error(dir, json{{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 8}}});
  EXPECT_THAT(msg, HasSubstr("16"));
  entry_error(dir, json{{"dtype", "BF16"}, {"shape", json::array()}, {"data_offsets", {0, 4}}});
  entry_error(dir, json{{"dtype", "I8"}, {"shape", {0}}, {"data_offsets", {0, 1}}});
}

TEST(Safetensors, ShapeProductOverflow) {
  TempDir dir;
  const uint64_t big = uint64_t{1} << 40;
  entry_error(dir, json{{"dtype", "U8"}, {"shape", {big, big}}, {"data_offsets", {0, 0}}});
  // 2^32 * 2^32 wraps to 0 in uint64: must still be rejected, not accepted as empty.
  const uint64_t b32 = uint64_t{1} << 32;
  entry_error(dir, json{{"dtype", "U8"}, {"shape", {b32, b32}}, {"data_offsets", {0, 0}}});
  entry_error(dir, json{{"dtype", "F32"}, {"shape", {b32, 3, b32}}, {"data_offsets", {0, 0}}});
}

TEST(Safetensors, ZeroDimDoesNotHideHugeDims) {
  TempDir dir;
  // numel is 0 whatever follows a 0 dim, but each dim must still fit TensorView's int64_t shape
  // (2^64 - 1 would read as -1) and their product stays bounded.
  const uint64_t max = ~uint64_t{0}, b40 = uint64_t{1} << 40;
  for (const json& shape : {json::array({0, max}), json::array({max, 0}),
                            json::array({0, uint64_t{1} << 63}), json::array({b40, 0, b40})}) {
    SCOPED_TRACE(shape.dump());
    const std::string msg =
        entry_error(dir, json{{"dtype", "U8"}, {"shape", shape}, {"data_offsets", {0, 0}}});
    EXPECT_THAT(msg, HasSubstr("shape is too large"));
  }
  // Small dims beside a 0 are fine: an empty tensor.
  const fs::path path = dir / "empty.safetensors";
  write_raw(
      path,
      json{{"w", {{"dtype", "U8"}, {"shape", {0, 1 << 20}}, {"data_offsets", {0, 0}}}}}.dump(), {});
  SafetensorsFile f(path);
  EXPECT_EQ(f.tensors().at("w").numel(), 0);
}

TEST(TensorSet, OpenDirWithSingleFile) {
  TempDir dir;
  write_simple(dir / "model.safetensors", {"a", "b"});
  const TensorSet set = TensorSet::open_dir(dir.path());
  EXPECT_EQ(set.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(set.source_name(), (dir / "model.safetensors").string());
  ASSERT_NE(set.find("b"), nullptr);
  EXPECT_EQ(set.get("b").bytes[0], 16);
  EXPECT_EQ(set.find("zzz"), nullptr);
  const std::string msg = error_of([&] { set.get("zzz"); });
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'zzz'"));
}

json index_for(const std::map<std::string, std::string>& weight_map) {
  return json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
}

void write_index(const TempDir& dir, const json& index) {
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
}

TEST(TensorSet, OpenDirWithShardedIndex) {
  TempDir dir;
  write_simple(dir / "model-00001-of-00002.safetensors", {"a", "b"});
  write_simple(dir / "model-00002-of-00002.safetensors", {"c"});
  write_index(dir, index_for({{"a", "model-00001-of-00002.safetensors"},
                              {"b", "model-00001-of-00002.safetensors"},
                              {"c", "model-00002-of-00002.safetensors"}}));
  const TensorSet set = TensorSet::open_dir(dir.path());
  EXPECT_EQ(set.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(set.source_name(), (dir / "model.safetensors.index.json").string());
  EXPECT_EQ(set.get("a").bytes[0], 0);
  EXPECT_EQ(set.get("b").bytes[0], 16);
  EXPECT_EQ(set.get("c").bytes[0], 0);
  EXPECT_EQ(*set.get("c").file, dir / "model-00002-of-00002.safetensors");
  EXPECT_THAT(error_of([&] { set.get("d"); }), HasSubstr("model.safetensors.index.json"));
}

TEST(TensorSet, IndexNamingMissingShard) {
  TempDir dir;
  write_simple(dir / "model-00001-of-00002.safetensors", {"a"});
  write_index(dir, index_for({{"a", "model-00001-of-00002.safetensors"},
                              {"b", "model-00002-of-00002.safetensors"}}));
  EXPECT_THAT(error_of([&] { TensorSet::open_dir(dir.path()); }),
              HasSubstr("model-00002-of-00002.safetensors"));
}

TEST(TensorSet, IndexWithPathOutsideTheDirectory) {
  TempDir dir;
  write_simple(dir / "model-00001-of-00001.safetensors", {"a"});
  using namespace std::string_literals;
  for (const std::string& evil :
       {"../evil"s, "../evil.safetensors"s, "sub/x.safetensors"s, "/etc/passwd"s, ""s, "."s,
        "model-00001-of-00001.safetensors\0.txt"s}) {
    SCOPED_TRACE(evil);
    write_index(dir, index_for({{"a", "model-00001-of-00001.safetensors"}, {"b", evil}}));
    const std::string msg = error_of([&] { TensorSet::open_dir(dir.path()); });
    EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
    EXPECT_THAT(msg, HasSubstr("weight_map['b'] is not the name of a file"));
  }
}

TEST(TensorSet, MalformedIndex) {
  TempDir dir;
  std::ofstream(dir / "model.safetensors.index.json") << "{ not json";
  EXPECT_THAT(error_of([&] { TensorSet::open_dir(dir.path()); }),
              HasSubstr("model.safetensors.index.json"));
  write_index(dir, json{{"metadata", json::object()}});
  EXPECT_THAT(error_of([&] { TensorSet::open_dir(dir.path()); }), HasSubstr("weight_map"));
  write_index(dir, json{{"weight_map", {{"a", 5}}}});
  EXPECT_THAT(error_of([&] { TensorSet::open_dir(dir.path()); }), HasSubstr("'a'"));
}

TEST(TensorSet, DuplicateTensorAcrossShards) {
  TempDir dir;
  write_simple(dir / "model-00001-of-00002.safetensors", {"a", "dup"});
  write_simple(dir / "model-00002-of-00002.safetensors", {"dup", "c"});
  write_index(dir, index_for({{"a", "model-00001-of-00002.safetensors"},
                              {"dup", "model-00001-of-00002.safetensors"},
                              {"c", "model-00002-of-00002.safetensors"}}));
  const std::string msg = error_of([&] { TensorSet::open_dir(dir.path()); });
  EXPECT_THAT(msg, HasSubstr("'dup'"));
  EXPECT_THAT(msg, HasSubstr(".safetensors"));
}

TEST(TensorSet, DirectoryWithNeitherFile) {
  TempDir dir;
  write_simple(dir / "other.safetensors", {"a"});
  const std::string msg = error_of([&] { TensorSet::open_dir(dir.path()); });
  EXPECT_THAT(msg, HasSubstr(dir.path().string()));
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
}

TEST(TensorSet, ErrorInShardNamesTheShard) {
  TempDir dir;
  write_simple(dir / "model-00001-of-00001.safetensors", {"a"});
  fs::resize_file(dir / "model-00001-of-00001.safetensors", 4);
  write_index(dir, index_for({{"a", "model-00001-of-00001.safetensors"}}));
  EXPECT_THAT(error_of([&] { TensorSet::open_dir(dir.path()); }),
              HasSubstr("model-00001-of-00001.safetensors"));
}

}  // namespace
}  // namespace bitnet
