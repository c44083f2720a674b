// EventFileWriter: CRC32C against published vectors, and event files decoded here by an
// independent TFRecord + protobuf reader (and, when python3 is present, by read_events.py).
#include "axlearn/train/event_file_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "axlearn/core/error.h"
#include "axlearn/train/crc32c.h"

namespace axlearn {
namespace {
namespace fs = std::filesystem;

TEST(Crc32cTest, MatchesPublishedVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xff, and ascending 0..31.
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = char(i);
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  // Extending in pieces equals one pass.
  EXPECT_EQ(crc32c_extend(crc32c("1234"), "56789", 5), 0xE3069283u);
}

// Bit-at-a-time CRC-32C, straight from the polynomial: the reference for the table version.
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
  }
  return ~c;
}

TEST(Crc32cTest, MatchesBitwiseReferenceAtEveryLengthAndSplit) {
  std::string s;
  uint32_t x = 12345;
  for (int i = 0; i < 300; ++i) {
    x = x * 1664525u + 1013904223u;
    s.push_back(char(x >> 24));
  }
  for (size_t n : {1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 299, 300}) {
    const std::string part = s.substr(0, n);
    EXPECT_EQ(crc32c(part), crc32c_bitwise(part)) << n;
    for (size_t split : {size_t(0), std::min(size_t(3), n), n / 2, n}) {
      EXPECT_EQ(crc32c_extend(crc32c(part.data(), split), part.data() + split, n - split),
                crc32c_bitwise(part))
          << n << " split at " << split;
    }
  }
}

TEST(Crc32cTest, MaskRoundTrips) {
  for (uint32_t c : {0u, 1u, 0xE3069283u, 0xffffffffu}) {
    EXPECT_EQ(unmask_crc32c(mask_crc32c(c)), c);
    EXPECT_EQ(mask_crc32c(c), ((c >> 15) | (c << 17)) + 0xa282ead8u);
  }
}

// ---- an independent minimal reader ----

struct Field {
  int wire = 0;
  uint64_t varint = 0;  // also fixed32/fixed64 bits
  std::string bytes;
};
using Message = std::multimap<int, Field>;

uint64_t read_varint(const std::string& s, size_t& i) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    if (i >= s.size()) throw std::runtime_error("varint runs past the end");
    uint8_t b = uint8_t(s[i++]);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
}

Message parse(const std::string& s) {
  Message m;
  size_t i = 0;
  while (i < s.size()) {
    uint64_t key = read_varint(s, i);
    Field f;
    f.wire = int(key & 7);
    if (f.wire == 0) {
      f.varint = read_varint(s, i);
    } else if (f.wire == 1 || f.wire == 5) {
      size_t n = f.wire == 1 ? 8 : 4;
      if (i + n > s.size()) throw std::runtime_error("fixed field runs past the end");
      std::memcpy(&f.varint, s.data() + i, n);
      i += n;
    } else if (f.wire == 2) {
      size_t n = read_varint(s, i);
      if (i + n > s.size()) throw std::runtime_error("bytes field runs past the end");
      f.bytes = s.substr(i, n);
      i += n;
    } else {
      throw std::runtime_error("unexpected wire type");
    }
    m.emplace(int(key >> 3), f);
  }
  return m;
}

double as_double(const Field& f) {
  double d;
  std::memcpy(&d, &f.varint, 8);
  return d;
}
float as_float(const Field& f) {
  float x;
  uint32_t u = uint32_t(f.varint);
  std::memcpy(&x, &u, 4);
  return x;
}
const Field& one(const Message& m, int field) {
  EXPECT_EQ(m.count(field), 1u) << "field " << field;
  static const Field kEmpty;
  auto it = m.find(field);
  return it == m.end() ? kEmpty : it->second;
}
std::vector<double> packed_doubles(const Field& f) {
  std::vector<double> v(f.bytes.size() / 8);
  std::memcpy(v.data(), f.bytes.data(), v.size() * 8);
  return v;
}

// Reads every record, checking both masked CRCs independently of the writer's helpers.
std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto masked = [](const void* p, size_t n) {
    uint32_t c = crc32c(p, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
  };
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    EXPECT_LE(i + 12, s.size());
    uint64_t len;
    uint32_t len_crc, data_crc;
    std::memcpy(&len, s.data() + i, 8);
    std::memcpy(&len_crc, s.data() + i + 8, 4);
    EXPECT_EQ(len_crc, masked(s.data() + i, 8));
    EXPECT_LE(i + 12 + len + 4, s.size());
    std::string data = s.substr(i + 12, len);
    std::memcpy(&data_crc, s.data() + i + 12 + len, 4);
    EXPECT_EQ(data_crc, masked(data.data(), data.size()));
    out.push_back(data);
    i += 12 + len + 4;
  }
  return out;
}

class SummaryWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_tb_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(SummaryWriterTest, ScalarsHistogramsAndTextDecode) {
  std::string path;
  const double before = double(std::time(nullptr)) - 1;
  {
    EventFileWriter w(dir_ + "/train");
    path = w.path();
    w.add_scalar("loss", 2.5, 10);
    w.add_scalar("learning_rate", 1e-3, 11);
    w.add_histogram("weights", {0.0, 1.0, 1.0, 2.0, 4.0}, 12, /*num_buckets=*/4);
    w.add_text("note", "hello tensorboard", 13);
    w.flush();
  }
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir_ + "/train"));
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);

  auto records = read_records(path);
  ASSERT_EQ(records.size(), 5u);
  Message first = parse(records[0]);
  EXPECT_EQ(one(first, 3).bytes, "brain.Event:2");
  EXPECT_GE(as_double(one(first, 1)), before);

  auto value_of = [&](size_t r, int64_t step) {
    Message e = parse(records[r]);
    EXPECT_EQ(int64_t(one(e, 2).varint), step);
    Message summary = parse(one(e, 5).bytes);
    return parse(one(summary, 1).bytes);
  };
  Message v = value_of(1, 10);
  EXPECT_EQ(one(v, 1).bytes, "loss");
  EXPECT_EQ(as_float(one(v, 2)), 2.5f);
  v = value_of(2, 11);
  EXPECT_EQ(one(v, 1).bytes, "learning_rate");
  EXPECT_EQ(as_float(one(v, 2)), 1e-3f);

  v = value_of(3, 12);
  EXPECT_EQ(one(v, 1).bytes, "weights");
  Message h = parse(one(v, 5).bytes);
  EXPECT_EQ(as_double(one(h, 1)), 0.0);
  EXPECT_EQ(as_double(one(h, 2)), 4.0);
  EXPECT_EQ(as_double(one(h, 3)), 5.0);
  EXPECT_EQ(as_double(one(h, 4)), 8.0);
  EXPECT_EQ(as_double(one(h, 5)), 22.0);
  // Width 1 buckets over [0, 4]: {0}, {1, 1}, {2}, {4} (max falls in the last).
  EXPECT_EQ(packed_doubles(one(h, 6)), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(packed_doubles(one(h, 7)), (std::vector<double>{1, 2, 1, 1}));

  v = value_of(4, 13);
  EXPECT_EQ(one(v, 1).bytes, "note");
  Message meta = parse(one(v, 9).bytes);
  EXPECT_EQ(one(parse(one(meta, 1).bytes), 1).bytes, "text");
  Message tensor = parse(one(v, 8).bytes);
  EXPECT_EQ(one(tensor, 1).varint, 7u);  // DT_STRING
  EXPECT_EQ(one(tensor, 8).bytes, "hello tensorboard");
}

TEST_F(SummaryWriterTest, HistogramEdgeCases) {
  EventFileWriter w(dir_);
  w.add_histogram("same", {3.0, 3.0, 3.0}, 1);
  w.add_histogram("none", {}, 2);
  EXPECT_THROW(w.add_histogram("nan", {1.0, std::nan("")}, 3), Error);
  EXPECT_THROW(w.add_histogram("inf", {INFINITY}, 3), Error);
  w.flush();
  auto records = read_records(w.path());
  ASSERT_EQ(records.size(), 3u);
  auto histo = [&](size_t r) {
    Message e = parse(records[r]);
    return parse(one(parse(one(parse(one(e, 5).bytes), 1).bytes), 5).bytes);
  };
  Message h = histo(1);
  EXPECT_EQ(packed_doubles(one(h, 6)), (std::vector<double>{3.0}));
  EXPECT_EQ(packed_doubles(one(h, 7)), (std::vector<double>{3.0}));
  h = histo(2);
  EXPECT_EQ(as_double(one(h, 3)), 0.0);
  EXPECT_TRUE(packed_doubles(one(h, 6)).empty());
}

TEST_F(SummaryWriterTest, TwoWritersInOneFolderGetDistinctFiles) {
  EventFileWriter a(dir_), b(dir_);
  EXPECT_NE(a.path(), b.path());
  a.add_scalar("x", 1, 1);
  b.add_scalar("x", 2, 1);
  a.flush();
  b.flush();
  EXPECT_EQ(read_records(a.path()).size(), 2u);
  EXPECT_EQ(read_records(b.path()).size(), 2u);
}

TEST_F(SummaryWriterTest, UnwritableFolderIsAnError) {
  fs::create_directories(dir_);
  std::ofstream(dir_ + "/file") << "x";
  EXPECT_THROW(EventFileWriter(dir_ + "/file/sub"), Error);
}

// tests/train/read_events.py is a plain-Python reader (struct + a small protobuf decoder), a
// second independent check of the framing; skipped when python3 is absent.
TEST_F(SummaryWriterTest, PythonReaderSeesTheSameScalars) {
  if (std::system("python3 -c 'import struct, json' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 not available";
  }
  std::string path;
  {
    EventFileWriter w(dir_);
    path = w.path();
    for (int s = 0; s < 5; ++s) w.add_scalar("train/loss", 10.0 / (s + 1), s);
    w.add_histogram("train/w", {-1.0, 0.5, 1.0}, 4, 2);
  }
  const std::string out = dir_ + "/decoded.jsonl";
  const std::string cmd = std::string("python3 ") + AXLEARN_SOURCE_DIR +
                          "/tests/train/read_events.py '" + path + "' > '" + out + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  std::vector<nlohmann::json> events;
  for (std::string line; std::getline(in, line);) events.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0]["file_version"], "brain.Event:2");
  for (int s = 0; s < 5; ++s) {
    const auto& e = events[size_t(s) + 1];
    EXPECT_EQ(e["step"], s);
    EXPECT_EQ(e["values"][0]["tag"], "train/loss");
    EXPECT_EQ(e["values"][0]["simple_value"].get<double>(), double(float(10.0 / (s + 1))));
  }
  const auto& h = events[6]["values"][0]["histo"];
  EXPECT_EQ(h["num"], 3.0);
  EXPECT_EQ(h["bucket_limit"], (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(h["bucket"], (std::vector<double>{1.0, 2.0}));
}

}  // namespace
}  // namespace axlearn
