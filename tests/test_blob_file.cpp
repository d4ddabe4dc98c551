// The converted-file container: layout, checksums and the errors for damaged files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "base/blob_file.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "test_util.h"

namespace bitnet {
namespace {

using ::testing::HasSubstr;

std::string error_of(const std::filesystem::path& path, ThreadPool& pool) {
  try {
    BlobFile file(path);
    file.verify(pool);
  } catch (const Error& e) {
    return e.what();
  }
  return "(opened without error)";
}

void patch_byte(const std::filesystem::path& path, uint64_t offset, uint8_t xor_mask) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ xor_mask));
}

class BlobFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (size_t i = 0; i < big_.size(); ++i) big_[i] = static_cast<uint8_t>(i * 7 + 3);
    BlobFileWriter writer;
    writer.add<uint8_t>("big", big_);
    writer.add<float>("floats", floats_);
    writer.add<uint8_t>("empty", std::span<const uint8_t>());
    writer.write(path_, {{"kind", "test"}, {"n", 3}}, pool_);
  }

  test::TempDir dir_;
  std::filesystem::path path_ = dir_ / "m.bitnet";
  ThreadPool pool_{2};
  std::vector<uint8_t> big_ = std::vector<uint8_t>(100003);
  std::vector<float> floats_ = {1.5f, -2.0f, 3.25f};
};

TEST_F(BlobFileTest, RoundTripsAlignedBlobsAndMeta) {
  BlobFile file(path_);
  file.verify(pool_);
  EXPECT_TRUE(BlobFile::has_magic(path_));
  EXPECT_EQ(file.meta()["kind"], "test");
  const auto big = file.blob("big", big_.size());
  EXPECT_EQ(std::vector<uint8_t>(big.begin(), big.end()), big_);
  const auto floats = file.blob("floats", floats_.size() * sizeof(float));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(floats.data()) % kBlobAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % kBlobAlignment, 0u);
  EXPECT_EQ(std::memcmp(floats.data(), floats_.data(), floats.size()), 0);
  EXPECT_EQ(file.blob("empty", 0).size(), 0u);
}

// The writer emits 2 MiB chunks: blobs that straddle chunk boundaries come back intact.
TEST_F(BlobFileTest, BlobsLargerThanAWriteChunkRoundTrip) {
  std::vector<uint8_t> large((size_t{5} << 20) + 7);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<uint8_t>(i * 131 + (i >> 20));
  BlobFileWriter writer;
  writer.add<float>("floats", floats_);
  writer.add<uint8_t>("large", large);
  writer.add<uint8_t>("big", big_);
  const auto path = dir_ / "large.bitnet";
  writer.write(path, {{"kind", "large"}}, pool_);
  BlobFile file(path);
  file.verify(pool_);
  const auto got = file.blob("large", large.size());
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), large);
  const auto got_big = file.blob("big", big_.size());
  EXPECT_EQ(std::vector<uint8_t>(got_big.begin(), got_big.end()), big_);
}

TEST_F(BlobFileTest, WriteFailuresNameTheFile) {
  BlobFileWriter writer;
  writer.add<uint8_t>("big", big_);
  const auto missing_dir = dir_ / "no" / "such" / "m.bitnet";
  try {
    writer.write(missing_dir, {}, pool_);
    FAIL() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing_dir.string() + ": cannot create"));
  }
}

// A new file replaces the old one whole (written aside, then renamed): a reader that has the old
// file mapped keeps its bytes, and no PATH.partial is left behind.
TEST_F(BlobFileTest, RewritingReplacesTheFileWhole) {
  BlobFile old_file(path_);
  const auto old_big = old_file.blob("big", big_.size());
  BlobFileWriter writer;
  const std::vector<uint8_t> other(10, 42);
  writer.add<uint8_t>("other", other);
  writer.write(path_, {{"kind", "second"}}, pool_);
  EXPECT_EQ(std::vector<uint8_t>(old_big.begin(), old_big.end()), big_);
  EXPECT_EQ(BlobFile(path_).meta()["kind"], "second");
  EXPECT_FALSE(std::filesystem::exists(path_.string() + ".partial"));
}

TEST_F(BlobFileTest, MissingOrWrongSizedBlobsAreNamed) {
  BlobFile file(path_);
  EXPECT_THROW(file.blob("nope", 1), Error);
  try {
    file.blob("floats", 16);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("blob 'floats' has 12 bytes, expected 16"));
  }
}

TEST_F(BlobFileTest, TruncatedFileIsReportedBySize) {
  std::filesystem::resize_file(path_, std::filesystem::file_size(path_) - 1);
  EXPECT_THAT(error_of(path_, pool_), HasSubstr("truncated or appended to"));
  std::filesystem::resize_file(path_, 20);
  EXPECT_THAT(error_of(path_, pool_), HasSubstr("truncated or appended to"));
}

TEST_F(BlobFileTest, OtherVersionIsRefusedWithAdvice) {
  patch_byte(path_, 8, 0x40);  // another version
  EXPECT_THAT(error_of(path_, pool_),
              HasSubstr("format version " + std::to_string(kBlobFileVersion ^ 0x40) +
                        ", this build reads version " + std::to_string(kBlobFileVersion) +
                        " (convert the model again)"));
}

TEST_F(BlobFileTest, CorruptedBlobOrHeaderFailsItsChecksum) {
  const uint64_t size = std::filesystem::file_size(path_);
  patch_byte(path_, size - 200, 0x10);  // inside "big"
  EXPECT_THAT(error_of(path_, pool_), HasSubstr("checksum mismatch in blob 'big'"));
  BlobFile unverified(path_);  // opening alone checks the header, not every blob
  EXPECT_THROW(unverified.verified_text("big"), Error);
  patch_byte(path_, size - 200, 0x10);
  patch_byte(path_, 45, 0x01);  // inside the JSON header
  EXPECT_THAT(error_of(path_, pool_), HasSubstr("header checksum mismatch"));
}

// Blob entries are untrusted even behind a valid header checksum: a negative or fractional
// offset, size or checksum is an error naming the blob, not a wrapped or undefined conversion.
TEST_F(BlobFileTest, BlobFieldsMustBeNonNegativeIntegers) {
  const std::string original = test::read_file(path_);
  for (const char* field : {"offset", "bytes", "xxh3"}) {
    for (const nlohmann::json& bad :
         {nlohmann::json(1e300), nlohmann::json(-64), nlohmann::json(64.5), nlohmann::json("64")}) {
      SCOPED_TRACE(std::string(field) + " = " + bad.dump());
      test::write_file(path_, original);
      test::edit_blob_file_header(path_, [&](nlohmann::json& header) {
        for (auto& blob : header["blobs"]) {
          if (blob["name"] == "floats") blob[field] = bad;
        }
      });
      const std::string msg = error_of(path_, pool_);
      EXPECT_THAT(msg, HasSubstr(path_.string()));
      EXPECT_THAT(msg, HasSubstr("blob 'floats': " + std::string(field) +
                                 " must be a non-negative integer, found " + bad.dump()));
    }
  }
}

TEST_F(BlobFileTest, OtherFilesAreNotTakenForModels) {
  test::write_file(dir_ / "x.json",
                   "{\"not\": \"a model\", \"padding\": \"....................................\"}");
  EXPECT_FALSE(BlobFile::has_magic(dir_ / "x.json"));
  EXPECT_THAT(error_of(dir_ / "x.json", pool_), HasSubstr("not a converted bitnet model file"));
}

}  // namespace
}  // namespace bitnet
