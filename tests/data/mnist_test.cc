// IDX reading and (Fashion-)MNIST loading. Files are built byte by byte here (and gzipped with
// zlib directly), so the reader is checked against the format, not against a writer of ours.
#include "axlearn/data/mnist.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "axlearn/core/error.h"

namespace axlearn::data {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// Header for an unsigned-byte IDX file: 0, 0, 0x08, ndim, then big-endian u32 dims.
Bytes idx_header(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  Bytes b = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(uint8_t(d >> shift));
  }
  return b;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class MnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("axlearn_mnist_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_plain(const std::string& name, const Bytes& bytes) {
    std::string path = (dir_ / name).string();
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return path;
  }

  std::string write_gzip(const std::string& name, const Bytes& bytes) {
    std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(f);
    return path;
  }

  fs::path dir_;
};

// Runs fn, expecting an axlearn::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error_containing(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected axlearn::Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  }
}

TEST_F(MnistTest, ReadsPlainIdx3WithDimsAndBytes) {
  Bytes data;
  for (int i = 0; i < 2 * 3 * 4; ++i) data.push_back(uint8_t(i * 37 % 256));
  std::string path = write_plain("x-idx3-ubyte", concat(idx_header({2, 3, 4}), data));
  IdxArray a = read_idx(path, 3);
  EXPECT_EQ(a.dims, (Shape{2, 3, 4}));
  EXPECT_EQ(a.data, data);
}

TEST_F(MnistTest, ReadsGzippedIdx1) {
  Bytes data = {9, 0, 3, 255, 7};
  std::string path = write_gzip("y-idx1-ubyte.gz", concat(idx_header({5}), data));
  IdxArray a = read_idx(path);
  EXPECT_EQ(a.dims, (Shape{5}));
  EXPECT_EQ(a.data, data);
}

TEST_F(MnistTest, ReadsDimensionsAbove255AsBigEndian) {
  // 258 = 0x00000102: a little-endian reader would see 0x02010000.
  Bytes data(258, 1);
  IdxArray a = read_idx(write_gzip("big.gz", concat(idx_header({258}), data)));
  EXPECT_EQ(a.dims, (Shape{258}));
  EXPECT_EQ(a.data.size(), 258u);
}

TEST_F(MnistTest, LoadSplitScalesPixelsAndKeepsLabels) {
  Bytes pixels = {0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40};  // 3 images of 2x2
  std::string images = write_gzip("i.gz", concat(idx_header({3, 2, 2}), pixels));
  std::string labels = write_plain("l", concat(idx_header({3}), {7, 0, 9}));
  MnistSplit s = load_mnist_split(images, labels);

  EXPECT_EQ(s.images.shape(), (Shape{3, 4}));
  EXPECT_EQ(s.images.dtype(), float32);
  std::vector<float> got = s.images.to_vector<float>();
  ASSERT_EQ(got.size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) EXPECT_FLOAT_EQ(got[i], pixels[i] / 255.0) << i;

  EXPECT_EQ(s.labels.shape(), (Shape{3}));
  EXPECT_EQ(s.labels.dtype(), int32);
  EXPECT_EQ(s.labels.to_vector<int32_t>(), (std::vector<int32_t>{7, 0, 9}));
}

TEST_F(MnistTest, LoadDirFindsGzippedAndPlainFiles) {
  write_gzip("train-images-idx3-ubyte.gz", concat(idx_header({2, 1, 3}), Bytes(6, 255)));
  write_gzip("train-labels-idx1-ubyte.gz", concat(idx_header({2}), {1, 2}));
  write_plain("t10k-images-idx3-ubyte", concat(idx_header({1, 1, 3}), {0, 0, 0}));
  write_plain("t10k-labels-idx1-ubyte", concat(idx_header({1}), {5}));
  MnistDataset ds = load_mnist_dir(dir_.string());
  EXPECT_EQ(ds.train.images.shape(), (Shape{2, 3}));
  EXPECT_EQ(ds.test.images.shape(), (Shape{1, 3}));
  EXPECT_EQ(ds.train.images.to_vector<float>(), std::vector<float>(6, 1.0f));
  EXPECT_EQ(ds.test.labels.to_vector<int32_t>(), (std::vector<int32_t>{5}));
}

TEST_F(MnistTest, TruncatedDataNamesFileAndOffset) {
  // Header promises 2*2*2 = 8 data bytes after its 16 bytes; only 5 follow.
  std::string path = write_plain("short", concat(idx_header({2, 2, 2}), {1, 2, 3, 4, 5}));
  expect_error_containing([&] { read_idx(path); }, {path, "truncated", "offset 21", "found 5"});
}

TEST_F(MnistTest, TruncatedHeaderNamesFileAndOffset) {
  Bytes header = idx_header({2, 2, 2});
  header.resize(10);  // cut inside the second dimension (bytes 8..11)
  std::string path = write_gzip("hdr.gz", header);
  expect_error_containing([&] { read_idx(path); }, {path, "truncated", "offset 10"});
}

TEST_F(MnistTest, TruncatedGzipStreamThrows) {
  Bytes data(4000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 2654435761u >> 24);
  std::string whole = write_gzip("whole.gz", concat(idx_header({4000}), data));
  std::ifstream f(whole, std::ios::binary);
  Bytes compressed((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  compressed.resize(compressed.size() / 2);
  std::string path = write_plain("cut.gz", compressed);
  expect_error_containing([&] { read_idx(path); }, {path, "offset"});
}

TEST_F(MnistTest, BadMagicNamesFile) {
  Bytes bytes = concat(idx_header({2}), {1, 2});
  bytes[1] = 0x08;
  std::string path = write_plain("bad", bytes);
  expect_error_containing([&] { read_idx(path); }, {path, "magic", "offset 0"});
}

TEST_F(MnistTest, NonByteElementTypeIsRejected) {
  std::string path = write_plain("float", concat(idx_header({1}, 0x0D), {0, 0, 0, 0}));
  expect_error_containing([&] { read_idx(path); }, {path, "element type 0xd"});
}

TEST_F(MnistTest, WrongRankIsRejected) {
  std::string path = write_plain("rank", concat(idx_header({2, 1}), {1, 2}));
  expect_error_containing([&] { read_idx(path, 3); }, {path, "2 dimensions, expected 3"});
}

TEST_F(MnistTest, TrailingBytesAreRejected) {
  std::string path = write_plain("long", concat(idx_header({2}), {1, 2, 3}));
  expect_error_containing([&] { read_idx(path); }, {path, "unexpected data", "offset 10"});
}

TEST_F(MnistTest, MismatchedCountsNameBothFiles) {
  std::string images = write_plain("i", concat(idx_header({3, 1, 1}), {1, 2, 3}));
  std::string labels = write_plain("l", concat(idx_header({2}), {1, 2}));
  expect_error_containing([&] { load_mnist_split(images, labels); },
                          {images, labels, "3 images", "2 labels"});
}

TEST_F(MnistTest, LabelOutOfRangeNamesOffset) {
  std::string images = write_plain("i", concat(idx_header({3, 1, 1}), {1, 2, 3}));
  std::string labels = write_plain("l", concat(idx_header({3}), {1, 10, 2}));
  expect_error_containing([&] { load_mnist_split(images, labels); },
                          {labels, "label 10", "offset 9"});
}

TEST_F(MnistTest, MissingFileAndDirectoryAreErrors) {
  std::string missing = (dir_ / "nope").string();
  expect_error_containing([&] { read_idx(missing); }, {missing, "cannot open"});
  expect_error_containing([&] { load_mnist_dir(missing); }, {missing, "does not exist"});
  // Directory exists but holds only the training images.
  write_plain("train-images-idx3-ubyte", concat(idx_header({1, 1, 1}), {0}));
  expect_error_containing([&] { load_mnist_dir(dir_.string()); },
                          {dir_.string(), "train-labels-idx1-ubyte"});
}

// The installed Debian dataset: the test split has 10000 28x28 images, 1000 of each class.
TEST(FashionMnistTest, InstalledTestSplitHasBalancedClasses) {
  std::string dir = kFashionMnistDir;
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << dir << " not installed";
  MnistSplit s =
      load_mnist_split(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(s.images.shape(), (Shape{10000, 784}));
  std::vector<int> counts(10);
  for (int32_t y : s.labels.to_vector<int32_t>()) counts.at(size_t(y))++;
  EXPECT_EQ(counts, std::vector<int>(10, 1000));
  std::vector<float> px = s.images.to_vector<float>();
  auto [lo, hi] = std::minmax_element(px.begin(), px.end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
  EXPECT_EQ(fashion_mnist_class_names().size(), 10u);
}

}  // namespace
}  // namespace axlearn::data
