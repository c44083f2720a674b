// safetensors: bitwise round trips for every dtype, the writer's layout, files built byte by
// byte the way Python's struct + json would write them, and every kind of malformed file
// rejected with an Error naming the file and the problem (never a crash).
#include "axlearn/io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "axlearn/core/ops.h"

namespace axlearn::io {
namespace {
namespace fs = std::filesystem;

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A file as `struct.pack("<Q", len(header)) + header + data` builds it.
std::string st_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string bytes_of(const Tensor& t) {
  Array a = contiguous(t.array());
  return std::string(static_cast<const char*>(a.raw()), a.nbytes());
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_st_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name = "t.safetensors") const { return dir_ + "/" + name; }

  std::string write_raw(const std::string& bytes, const std::string& name = "t.safetensors") {
    std::ofstream f(path(name), std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    return path(name);
  }

  std::string read_raw(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  // The load must fail with an Error mentioning the file and every one of `needles`.
  void expect_rejected(const std::string& bytes, const std::vector<std::string>& needles) {
    const std::string p = write_raw(bytes);
    try {
      load_safetensors(p);
      ADD_FAILURE() << "accepted a malformed file; expected: " << needles[0];
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("safetensors file '" + p + "'"), std::string::npos) << msg;
      for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
    }
  }

  std::string dir_;
};

// Random bytes valid for the dtype (BOOL only 0/1), covering NaN payloads, infinities and
// subnormals for the floats.
Tensor random_tensor(Dtype dtype, const Shape& shape, std::mt19937& rng) {
  const size_t n = size_t(num_elements(shape)) * size_of(dtype);
  std::string raw(n, '\0');
  for (char& c : raw) c = char(dtype == bool_ ? rng() % 2 : rng() % 256);
  return from_buffer(raw.data(), shape, dtype);
}

TEST_F(SafetensorsTest, RoundTripIsBitwiseForEveryDtype) {
  std::mt19937 rng(7);
  std::vector<std::pair<std::string, Tensor>> tensors;
  const std::vector<Dtype> dtypes = {bool_,   uint8,    uint32,  int32,  int64,
                                     float16, bfloat16, float32, float64};
  for (Dtype d : dtypes) {
    tensors.emplace_back(std::string("t_") + dtype_name(d), random_tensor(d, {3, 5}, rng));
  }
  // Special values a text round trip would lose: -0, NaN with payload, inf, a subnormal.
  const uint32_t specials[] = {0x80000000u, 0x7fc12345u, 0xff800000u, 0x00000001u};
  tensors.emplace_back("specials", from_buffer(specials, {4}, float32));
  tensors.emplace_back("scalar", array(std::vector<double>{-3.25}, {}, float64));
  tensors.emplace_back("empty", zeros({0, 3}, bfloat16));
  // A non-contiguous view is written densely.
  tensors.emplace_back("transposed", transpose(reshape(arange(6, float32), {2, 3}), {1, 0}));
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode ✓"}};
  save_safetensors(path(), tensors, meta);

  SafetensorsFile f = load_safetensors(path());
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), tensors.size());
  std::map<std::string, Tensor> want(tensors.begin(), tensors.end());
  std::string prev;
  for (const auto& [name, t] : f.tensors) {
    EXPECT_LT(prev, name) << "tensors come back in name order";
    prev = name;
    ASSERT_TRUE(want.count(name)) << name;
    const Tensor& w = want.at(name);
    EXPECT_EQ(t.dtype(), w.dtype()) << name;
    EXPECT_EQ(t.shape(), w.shape()) << name;
    EXPECT_EQ(bytes_of(t), bytes_of(w)) << name;
  }
  EXPECT_EQ(load_safetensors_tensor(path(), "transposed").to_vector<float>(),
            (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST_F(SafetensorsTest, WriterSortsKeysAlignsHeaderAndLaysDataOutInNameOrder) {
  save_safetensors(path(),
                   {{"b", array(std::vector<int32_t>{7, 8, 9}, {3})},
                    {"a", array(std::vector<float>{1.0f}, {1, 1})}},
                   {{"k", "v"}});
  const std::string raw = read_raw(path());
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw[size_t(i)]);
  EXPECT_EQ(n % 8, 0u) << "header padded to a multiple of 8";
  ASSERT_EQ(raw.size(), 8 + n + 4 + 12);
  const std::string header = raw.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' ') + 1, header.find_last_of('}') + 1) << "space padding";
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json({1, 1}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json({0, 4}));
  EXPECT_EQ(j["b"]["dtype"], "I32");
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({4, 16}));
  EXPECT_EQ(j["__metadata__"], nlohmann::json({{"k", "v"}}));
  EXPECT_LT(header.find("\"__metadata__\""), header.find("\"a\""));
  EXPECT_LT(header.find("\"a\""), header.find("\"b\""));
  const std::string data = raw.substr(8 + n);
  EXPECT_EQ(data,
            std::string("\x00\x00\x80\x3f\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00", 16));
}

// Bytes as Python writes them with struct.pack("<Q", len(h)) + h + data, where h is
// json.dumps(...) of a dict in insertion order (", " and ": " separators, no padding, header
// length not a multiple of 8) and the buffer does not follow name order.
TEST_F(SafetensorsTest, ReadsAFileBuiltByPythonStructAndJson) {
  const std::string header =
      R"({"__metadata__": {"format": "pt"}, )"
      R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [10, 18]}, )"
      R"("ids": {"dtype": "I64", "shape": [1, 1], "data_offsets": [18, 26]}, )"
      R"("h": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, )"
      R"("m": {"dtype": "BOOL", "shape": [3], "data_offsets": [4, 7]}, )"
      R"("f16": {"dtype": "F16", "shape": [], "data_offsets": [8, 10]}, )"
      R"("b": {"dtype": "U8", "shape": [1], "data_offsets": [7, 8]}})";
  ASSERT_NE(header.size() % 8, 0u);
  std::string data;
  data += std::string("\x80\x3f\x20\xc0", 4);                  // bf16 1.0, -2.5
  data += std::string("\x01\x00\x01", 3);                      // bool
  data += std::string("\xfe", 1);                              // u8 254
  data += std::string("\x00\x3c", 2);                          // f16 1.0
  data += std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8);  // f32 1.0, -2.5
  data += std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8);  // i64 -1
  const std::string p = write_raw(st_bytes(header, data));

  std::vector<TensorInfo> infos = read_safetensors_header(p);
  ASSERT_EQ(infos.size(), 6u);
  EXPECT_EQ(infos[0].name, "b");
  EXPECT_EQ(infos[5].name, "w");
  EXPECT_EQ(infos[5].dtype, float32);
  EXPECT_EQ(infos[5].shape, (Shape{2}));
  EXPECT_EQ(infos[5].begin, 10u);
  EXPECT_EQ(infos[5].end, 18u);

  SafetensorsFile f = load_safetensors(p);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  std::map<std::string, Tensor> t(f.tensors.begin(), f.tensors.end());
  EXPECT_EQ(t.at("w").to_vector<double>(), (std::vector<double>{1.0, -2.5}));
  EXPECT_EQ(t.at("h").dtype(), bfloat16);
  EXPECT_EQ(t.at("h").to_vector<double>(), (std::vector<double>{1.0, -2.5}));
  EXPECT_EQ(t.at("m").to_vector<int32_t>(), (std::vector<int32_t>{1, 0, 1}));
  EXPECT_EQ(t.at("b").to_vector<int32_t>(), (std::vector<int32_t>{254}));
  EXPECT_EQ(t.at("f16").shape(), Shape{});
  EXPECT_EQ(t.at("f16").item<double>(), 1.0);
  EXPECT_EQ(t.at("ids").shape(), (Shape{1, 1}));
  EXPECT_EQ(t.at("ids").item<int64_t>(), -1);
}

TEST_F(SafetensorsTest, EmptyHeaderWithPaddingIsAValidFile) {
  SafetensorsFile f = load_safetensors(write_raw(st_bytes("{}      ", "")));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());
}

TEST_F(SafetensorsTest, RejectsTruncatedLengthField) {
  expect_rejected(std::string("\x10\x00\x00", 3), {"file truncated: 3 bytes"});
}

TEST_F(SafetensorsTest, RejectsHeaderLengthLargerThanFile) {
  expect_rejected(le64(1000) + "{}", {"header length 1000 is larger than the 2 bytes"});
}

TEST_F(SafetensorsTest, RejectsHeaderLengthOverLimit) {
  expect_rejected(le64(uint64_t(1) << 62) + "{}", {"exceeds the limit of 100000000 bytes"});
  expect_rejected(le64(~uint64_t(0)) + "{}", {"exceeds the limit"});
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  expect_rejected(st_bytes("{\"a\": ", ""), {"header is not valid JSON"});
  expect_rejected(st_bytes(std::string("{}\0\0\0\0\0\0", 8), ""), {"header is not valid JSON"});
  expect_rejected(st_bytes("{\"\xff\": 1}", ""), {"header is not valid JSON"});
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  expect_rejected(st_bytes("[1, 2]", ""), {"header must be a JSON object, got array"});
  expect_rejected(st_bytes("\"x\"", ""), {"header must be a JSON object, got string"});
}

TEST_F(SafetensorsTest, RejectsUnsupportedAndMistypedDtypes) {
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "I16", "shape": [1], "data_offsets": [0, 2]}})", "ab"),
      {"tensor 'x'", "unsupported dtype 'I16'"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", "abcd"),
      {"tensor 'x'", "unsupported dtype 'f32'"});
  expect_rejected(st_bytes(R"({"x": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}})", "abcd"),
                  {"tensor 'x'", "dtype must be a string"});
}

TEST_F(SafetensorsTest, RejectsShapeThatDoesNotMatchOffsets) {
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", "abcd"),
      {"tensor 'x'", "[0, 4] hold 4 bytes but F32 shape [2] needs 8"});
}

TEST_F(SafetensorsTest, RejectsOverlappingOffsets) {
  expect_rejected(st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                           R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                           "abcdef"),
                  {"tensor 'b': data_offsets [2, 6] overlap tensor 'a' [0, 4]"});
  // A zero-size tensor inside another one also overlaps it.
  expect_rejected(st_bytes(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
                           R"( "z": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]}})",
                           "abcd"),
                  {"tensor 'z'", "overlap tensor 'a'"});
}

TEST_F(SafetensorsTest, RejectsOffsetsOutOfRange) {
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", "abcd"),
      {"tensor 'x': data_offsets [4, 8] extend past the end of the data buffer (4 bytes"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [0], "data_offsets": [5, 4]}})", "abcd"),
      {"tensor 'x'", "[5, 4] begin after end"});
  expect_rejected(st_bytes(R"({"x": {"dtype": "U8", "shape": [2],)"
                           R"( "data_offsets": [18446744073709551615, 1]}})",
                           "ab"),
                  {"tensor 'x'", "begin after end"});
}

TEST_F(SafetensorsTest, RejectsTruncatedData) {
  save_safetensors(path("good.safetensors"),
                   {{"a", zeros({4}, float32)}, {"b", ones({3}, float64)}});
  std::string raw = read_raw(path("good.safetensors"));
  raw.resize(raw.size() - 5);
  expect_rejected(raw, {"tensor 'b'", "[16, 40] extend past the end of the data buffer (35 bytes",
                        "file truncated?"});
}

TEST_F(SafetensorsTest, RejectsGapsInTheBuffer) {
  expect_rejected(st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
                           R"( "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                           "abcdef"),
                  {"gap in the data buffer: bytes [2, 4) belong to no tensor (before tensor 'b')"});
  expect_rejected(
      st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}})", "abc"),
      {"bytes [0, 1) belong to no tensor (before tensor 'a')"});
  expect_rejected(
      st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", "abcd"),
      {"bytes [2, 4) after the last tensor"});
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  expect_rejected(st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
                           R"( "a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})",
                           "abcd"),
                  {"duplicate key 'a'", "tensor name given twice"});
  expect_rejected(
      st_bytes(R"({"a": {"dtype": "U8", "dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})",
               "ab"),
      {"duplicate key 'dtype'"});
}

TEST_F(SafetensorsTest, RejectsNegativeAndNonIntegerDims) {
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [2, -1], "data_offsets": [0, 0]}})", ""),
      {"tensor 'x': shape[1] is negative (-1)"});
  expect_rejected(st_bytes(R"({"x": {"dtype": "U8", "shape": [2.5], "data_offsets": [0, 0]}})", ""),
                  {"tensor 'x': shape[0] must be a non-negative integer, got 2.5"});
  expect_rejected(st_bytes(R"({"x": {"dtype": "U8", "shape": 4, "data_offsets": [0, 4]}})", "abcd"),
                  {"tensor 'x': shape must be an array"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0, -4]}})", "abcd"),
      {"tensor 'x': data_offsets[1] is negative"});
  expect_rejected(st_bytes(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0]}})", "abcd"),
                  {"tensor 'x': data_offsets must be [begin, end]"});
}

TEST_F(SafetensorsTest, RejectsSizesThatOverflow) {
  // 2^32 * 2^32 elements wraps to 0 in 64 bits and would match empty offsets.
  expect_rejected(
      st_bytes(
          R"({"x": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
          ""),
      {"tensor 'x'", "overflows the element count"});
  // 2^62 F32 elements fit in the count, not in bytes.
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})",
               ""),
      {"tensor 'x'", "overflows the byte size"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 0]}})",
               ""),
      {"tensor 'x'", "overflows the element count"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1e30]}})", "a"),
      {"tensor 'x': data_offsets[1] must be a non-negative integer"});
}

TEST_F(SafetensorsTest, RejectsMalformedEntriesAndMetadata) {
  expect_rejected(st_bytes(R"({"x": [1]})", ""), {"tensor 'x': entry must be an object"});
  expect_rejected(st_bytes(R"({"x": {"dtype": "U8", "shape": [0]}})", ""),
                  {"tensor 'x': missing field 'data_offsets'"});
  expect_rejected(
      st_bytes(R"({"x": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0], "extra": 1}})", ""),
      {"tensor 'x': unknown field 'extra'"});
  expect_rejected(st_bytes(R"({"__metadata__": {"step": 3}})", ""),
                  {"__metadata__ value of 'step' must be a string, got 3"});
  expect_rejected(st_bytes(R"({"__metadata__": "x"})", ""), {"__metadata__ must be an object"});
  expect_rejected(st_bytes(R"({"x": {"dtype": {"a": {"b": 1}}}})", ""), {"nested deeper"});
  expect_rejected(st_bytes(std::string(10000, '[') + std::string(10000, ']'), ""),
                  {"nested deeper"});
}

TEST_F(SafetensorsTest, RejectsBoolBytesOtherThanZeroOrOne) {
  expect_rejected(st_bytes(R"({"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}})",
                           std::string("\x01\x02\x00", 3)),
                  {"tensor 'm': BOOL byte 2 at offset"});
}

TEST_F(SafetensorsTest, MissingFileAndMissingTensorAreErrors) {
  EXPECT_THROW(load_safetensors(path("absent.safetensors")), Error);
  EXPECT_THROW(read_safetensors_header(dir_), Error);  // a directory
  save_safetensors(path(), {{"a", zeros({2})}});
  try {
    load_safetensors_tensor(path(), "b");
    ADD_FAILURE() << "found a tensor that is not there";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor named 'b'"), std::string::npos) << e.what();
  }
}

// Every truncation and many single-byte corruptions of a valid file either load or throw
// Error; nothing else escapes (run under ASan/UBSan this also checks memory safety).
TEST_F(SafetensorsTest, CorruptedFilesNeverEscapeAsAnythingButError) {
  save_safetensors(path("good.safetensors"),
                   {{"a", arange(3, float32)},
                    {"b", array(std::vector<bool>{true, false}, {2})},
                    {"c", zeros({2, 2}, bfloat16)}},
                   {{"k", "v"}});
  const std::string good = read_raw(path("good.safetensors"));
  size_t accepted = 0, rejected = 0;
  auto attempt = [&](const std::string& bytes) {
    const std::string p = write_raw(bytes, "bad.safetensors");
    try {
      load_safetensors(p);
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    }
  };
  for (size_t len = 0; len < good.size(); ++len) attempt(good.substr(0, len));
  const char replacements[] = {'\0', '\xff', '9', '-', '"', '{', ']', ' '};
  for (size_t i = 0; i < good.size(); ++i) {
    for (char r : replacements) {
      std::string bad = good;
      bad[i] = r;
      attempt(bad);
    }
  }
  EXPECT_GT(rejected, good.size());  // every truncation at least
  EXPECT_GT(accepted, 0u);           // e.g. data bytes changed to other valid values
}

TEST_F(SafetensorsTest, WriterRejectsBadNames) {
  auto expect_save_fails = [&](const std::vector<std::pair<std::string, Tensor>>& ts,
                               const std::string& needle) {
    try {
      save_safetensors(path(), ts);
      ADD_FAILURE() << "saved; expected: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_save_fails({{"a", zeros({1})}, {"a", ones({1})}}, "tensor name 'a' given twice");
  expect_save_fails({{"", zeros({1})}}, "empty name");
  expect_save_fails({{"__metadata__", zeros({1})}}, "reserved");
  expect_save_fails({{"\xff\xfe", zeros({1})}}, "valid UTF-8");
  expect_save_fails({{"u", Tensor()}}, "undefined");
  EXPECT_FALSE(fs::exists(path())) << "a failed save leaves no file";
}

TEST_F(SafetensorsTest, SaveReplacesAtomicallyAndLeavesNoTemporaries) {
  save_safetensors(path(), {{"a", zeros({2})}});
  save_safetensors(path(), {{"a", ones({3})}});
  EXPECT_EQ(load_safetensors_tensor(path(), "a").to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_THROW(save_safetensors(dir_ + "/no/such/dir/x.safetensors", {{"a", zeros({2})}}), Error);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "t.safetensors");
  }
  EXPECT_EQ(files, 1u);
}

}  // namespace
}  // namespace axlearn::io
