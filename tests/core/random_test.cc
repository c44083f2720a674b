// random.h against jax.random: bitwise equality with vectors written by gen_random_vectors.py
// (jax 0.10.2, threefry2x32, partitionable), Threefry known-answer tests, layout invariants of the
// counter scheme, sample statistics, and user errors.
#include "axlearn/core/random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/compile.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn {
namespace {

using nlohmann::json;

const json& vectors() {
  static const json j = [] {
    const std::string path =
        std::string(AXLEARN_SOURCE_DIR) + "/tests/core/testdata/random_vectors.json";
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot open " + path);
    return json::parse(f);
  }();
  return j;
}

Tensor key_of(const json& j) {
  return array(std::vector<uint32_t>{j[0].get<uint32_t>(), j[1].get<uint32_t>()}, {2});
}

Shape shape_of(const json& j) { return j.get<Shape>(); }

// Raw bit patterns of the elements (16, 32 or 64 bits wide), row-major.
std::vector<uint64_t> bit_patterns(const Tensor& t) {
  Array a = contiguous(t.array());
  const size_t width = size_of(a.dtype);
  std::vector<uint64_t> out(size_t(a.size()));
  const char* p = static_cast<const char*>(a.raw());
  for (size_t i = 0; i < out.size(); ++i) {
    uint64_t v = 0;
    std::memcpy(&v, p + i * width, width);  // little-endian
    out[i] = v;
  }
  return out;
}

// Counts positions where the bits differ and reports the first few.
::testing::AssertionResult same_bits(const std::vector<uint64_t>& got,
                                     const std::vector<uint64_t>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " values, expected " << want.size();
  }
  int bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ < 5) {
      os << "\n  [" << i << "] got 0x" << std::hex << got[i] << " want 0x" << want[i] << std::dec;
    }
  }
  if (bad) return ::testing::AssertionFailure() << bad << " values differ" << os.str();
  return ::testing::AssertionSuccess();
}

std::vector<uint64_t> u64s(const json& j) { return j.get<std::vector<uint64_t>>(); }

std::vector<uint64_t> key_bits(const Tensor& k) {
  EXPECT_EQ(k.dtype(), uint32);
  return bit_patterns(k);
}

// ---- Threefry itself ----

TEST(RandomTest, ThreefryMatchesRandom123KnownAnswers) {
  // Known-answer vectors of Threefry2x32-20 from the Random123 distribution.
  EXPECT_EQ(threefry2x32({0, 0}, {0, 0}), (std::array<uint32_t, 2>{0x6b200159u, 0x99ba4efeu}));
  EXPECT_EQ(threefry2x32({0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 2>{0x1cb996fcu, 0xbb002be7u}));
  EXPECT_EQ(threefry2x32({0x13198a2eu, 0x03707344u}, {0x243f6a88u, 0x85a308d3u}),
            (std::array<uint32_t, 2>{0xc4923a9cu, 0x483df7a0u}));
}

// ---- keys ----

TEST(RandomTest, KeyFromSeedMatchesJax) {
  for (const char* section : {"key", "key_x64"}) {
    for (const json& c : vectors()[section]) {
      const uint64_t seed = c["seed"].get<uint64_t>();
      EXPECT_TRUE(same_bits(key_bits(random::key(seed)), u64s(c["key"]))) << "seed " << seed;
    }
  }
}

TEST(RandomTest, SplitMatchesJax) {
  for (const json& c : vectors()["split"]) {
    const int num = c["num"].get<int>();
    Tensor keys = random::split(key_of(c["key"]), num);
    ASSERT_EQ(keys.shape(), (Shape{num, 2}));
    std::vector<uint64_t> want;
    for (const json& row : c["out"]) {
      for (const json& v : row) want.push_back(v.get<uint64_t>());
    }
    EXPECT_TRUE(same_bits(bit_patterns(keys), want)) << "num " << num << " key " << c["key"];
  }
}

TEST(RandomTest, FoldInMatchesJax) {
  for (const json& c : vectors()["fold_in"]) {
    Tensor k = random::fold_in(key_of(c["key"]), c["data"].get<uint32_t>());
    ASSERT_EQ(k.shape(), Shape{2});
    EXPECT_TRUE(same_bits(key_bits(k), u64s(c["out"]))) << "data " << c["data"];
  }
}

TEST(RandomTest, ChainsOfSplitAndFoldInMatchJax) {
  for (const json& c : vectors()["chain"]) {
    Tensor k = random::key(c["seed"].get<uint64_t>());
    for (const json& op : c["ops"]) {
      if (op[0] == "split") {
        Tensor keys = random::split(k, op[1].get<int>());
        const int64_t i = op[2].get<int64_t>();
        k = reshape(slice_axis(keys, 0, i, i + 1), {2});
      } else {
        k = random::fold_in(k, op[1].get<uint32_t>());
      }
    }
    EXPECT_TRUE(same_bits(key_bits(k), u64s(c["key"]))) << c["ops"];
  }
}

// ---- bits ----

TEST(RandomTest, RandomBitsMatchJax) {
  for (const json& c : vectors()["bits"]) {
    const Shape shape = shape_of(c["shape"]);
    const int width = c["bit_width"].get<int>();
    Tensor bits = random::random_bits(key_of(c["key"]), shape, width);
    EXPECT_EQ(bits.shape(), shape);
    EXPECT_EQ(bits.dtype(), width == 32 ? uint32 : width == 8 ? uint8 : int64);
    EXPECT_TRUE(same_bits(bit_patterns(bits), u64s(c["bits"])))
        << "shape " << shape_str(shape) << " width " << width;
  }
}

TEST(RandomTest, RandomBitsAreThreefryOfTheRowMajorIndex) {
  // Element i of any draw is threefry(key, (i >> 32, i)) folded by xor, whatever the shape.
  const std::array<uint32_t, 2> k = {0x12345678u, 0x9abcdef0u};
  Tensor key = array(std::vector<uint32_t>{k[0], k[1]}, {2});
  std::vector<uint32_t> got = random::random_bits(key, {3, 4, 5}).to_vector<uint32_t>();
  ASSERT_EQ(got.size(), 60u);
  for (uint32_t i = 0; i < 60; ++i) {
    auto y = threefry2x32(k, {0, i});
    EXPECT_EQ(got[i], y[0] ^ y[1]) << "element " << i;
  }
}

TEST(RandomTest, RandomBitsDoNotDependOnHowTheShapeIsWritten) {
  Tensor key = random::key(99);
  std::vector<uint32_t> flat = random::random_bits(key, {24}).to_vector<uint32_t>();
  EXPECT_EQ(random::random_bits(key, {4, 6}).to_vector<uint32_t>(), flat);
  EXPECT_EQ(random::random_bits(key, {2, 3, 4}).to_vector<uint32_t>(), flat);
  // A longer draw extends a shorter one: counters are the flat index, not scaled by the size.
  std::vector<uint32_t> prefix = random::random_bits(key, {10}).to_vector<uint32_t>();
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), flat.begin()));
}

TEST(RandomTest, EmptyShapesGiveEmptyResults) {
  Tensor key = random::key(1);
  EXPECT_EQ(random::random_bits(key, {0, 3}).shape(), (Shape{0, 3}));
  EXPECT_EQ(random::normal(key, {2, 0}).to_vector<float>().size(), 0u);
  EXPECT_EQ(random::uniform(key, {0}, float64, -1, 1).to_vector<double>().size(), 0u);
  EXPECT_EQ(random::split(key, 0).shape(), (Shape{0, 2}));
}

TEST(RandomTest, LargeDrawsMatchTheScalarReference) {
  // Big enough for the multi-threaded path; sampled positions against threefry2x32 directly.
  const int64_t n = int64_t(1) << 20;
  const std::array<uint32_t, 2> k = {7, 11};
  std::vector<uint32_t> got =
      random::random_bits(array(std::vector<uint32_t>{k[0], k[1]}, {2}), {n}).to_vector<uint32_t>();
  for (int64_t i = 0; i < n; i += 4099) {
    auto y = threefry2x32(k, {0, uint32_t(i)});
    ASSERT_EQ(got[size_t(i)], y[0] ^ y[1]) << "element " << i;
  }
  auto last = threefry2x32(k, {0, uint32_t(n - 1)});
  EXPECT_EQ(got.back(), last[0] ^ last[1]);
}

TEST(RandomTest, SplitKeysAreTheCounterPairs) {
  // split(key, n)[i] is the raw threefry pair of counter i; fold_in(key, d) that of counter d.
  const std::array<uint32_t, 2> k = {3, 5};
  Tensor key = array(std::vector<uint32_t>{k[0], k[1]}, {2});
  std::vector<uint32_t> keys = random::split(key, 4).to_vector<uint32_t>();
  for (uint32_t i = 0; i < 4; ++i) {
    auto y = threefry2x32(k, {0, i});
    EXPECT_EQ(keys[2 * i], y[0]);
    EXPECT_EQ(keys[2 * i + 1], y[1]);
  }
  auto y = threefry2x32(k, {0, 77});
  EXPECT_EQ(random::fold_in(key, 77).to_vector<uint32_t>(), (std::vector<uint32_t>{y[0], y[1]}));
}

// ---- samplers ----

void expect_sampler_matches(const char* section) {
  for (const json& c : vectors()[section]) {
    const Shape shape = shape_of(c["shape"]);
    const Dtype dtype = dtype_from_name(c["dtype"].get<std::string>());
    Tensor key = key_of(c["key"]);
    Tensor x;
    std::string what = std::string(section) + " " + dtype_name(dtype) + " " + shape_str(shape);
    if (std::string(section) == "uniform") {
      const double lo = c["minval"].get<double>(), hi = c["maxval"].get<double>();
      x = random::uniform(key, shape, dtype, lo, hi);
      what += " [" + std::to_string(lo) + ", " + std::to_string(hi) + ")";
    } else if (std::string(section) == "normal") {
      x = random::normal(key, shape, dtype);
    } else {
      const double lo = c["lower"].get<double>(), hi = c["upper"].get<double>();
      x = random::truncated_normal(key, lo, hi, shape, dtype);
      what += " (" + std::to_string(lo) + ", " + std::to_string(hi) + ")";
    }
    EXPECT_EQ(x.shape(), shape) << what;
    EXPECT_EQ(x.dtype(), dtype) << what;
    EXPECT_TRUE(same_bits(bit_patterns(x), u64s(c["bits"]))) << what;
  }
}

TEST(RandomTest, UniformMatchesJaxBitwise) { expect_sampler_matches("uniform"); }
TEST(RandomTest, NormalMatchesJaxBitwise) { expect_sampler_matches("normal"); }
TEST(RandomTest, TruncatedNormalMatchesJaxBitwise) { expect_sampler_matches("truncated_normal"); }

TEST(RandomTest, BernoulliMatchesJax) {
  for (const json& c : vectors()["bernoulli"]) {
    const Shape shape = shape_of(c["shape"]);
    Tensor b = random::bernoulli(key_of(c["key"]), c["p"].get<double>(), shape);
    EXPECT_EQ(b.dtype(), bool_);
    EXPECT_EQ(b.shape(), shape);
    std::vector<int> want = c["out"].get<std::vector<int>>();
    std::vector<int> got = b.to_vector<int>();
    EXPECT_EQ(got, want) << "p " << c["p"] << " shape " << shape_str(shape);
  }
}

TEST(RandomTest, PermutationMatchesJax) {
  for (const json& c : vectors()["permutation"]) {
    const int64_t n = c["n"].get<int64_t>();
    Tensor p = random::permutation(key_of(c["key"]), n);
    EXPECT_EQ(p.dtype(), int32);
    EXPECT_EQ(p.shape(), Shape{n});
    EXPECT_EQ(p.to_vector<int32_t>(), c["out"].get<std::vector<int32_t>>()) << "n " << n;
  }
}

TEST(RandomTest, ErfInvKernelsMatchXla) {
  auto check = [](const json& c, auto zero) {
    using T = decltype(zero);
    std::vector<uint64_t> xs = u64s(c["x"]), ys = u64s(c["y"]);
    int bad = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      T x, y;
      std::memcpy(&x, &xs[i], sizeof(T));  // little-endian: the low bytes hold the pattern
      T got;
      if constexpr (sizeof(T) == 4) {
        got = cpu::erfinv_f32(x);
      } else {
        got = cpu::erfinv_f64(x);
      }
      uint64_t gb = 0;
      std::memcpy(&gb, &got, sizeof(T));
      std::memcpy(&y, &ys[i], sizeof(T));
      if (gb != ys[i] && bad++ < 5) {
        ADD_FAILURE() << "erfinv(" << std::hexfloat << x << ") = " << got << ", XLA gives " << y;
      }
    }
    EXPECT_EQ(bad, 0);
  };
  check(vectors()["erfinv_f32"], float{});
  check(vectors()["erfinv_f64"], double{});
}

// ---- distributions ----

TEST(RandomTest, NormalHasUnitMeanAndVariance) {
  const int64_t n = 100000;
  std::vector<double> x = random::normal(random::key(2024), {n}).to_vector<double>();
  double mean = std::accumulate(x.begin(), x.end(), 0.0) / double(n);
  double var = 0;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= double(n - 1);
  // Standard errors: 1/sqrt(n) = 0.0032 for the mean, sqrt(2/n) = 0.0045 for the variance.
  EXPECT_NEAR(mean, 0.0, 0.015);
  EXPECT_NEAR(var, 1.0, 0.025);
  const int64_t beyond_2 =
      std::count_if(x.begin(), x.end(), [](double v) { return std::fabs(v) > 2; });
  EXPECT_NEAR(double(beyond_2) / double(n), 0.0455, 0.004);
}

TEST(RandomTest, UniformAndBernoulliHaveTheRightMeans) {
  const int64_t n = 100000;
  std::vector<double> u = random::uniform(random::key(5), {n}, float64, -2, 6).to_vector<double>();
  EXPECT_NEAR(std::accumulate(u.begin(), u.end(), 0.0) / double(n), 2.0, 0.05);
  EXPECT_GE(*std::min_element(u.begin(), u.end()), -2.0);
  EXPECT_LT(*std::max_element(u.begin(), u.end()), 6.0);
  std::vector<double> b = random::bernoulli(random::key(6), 0.3, {n}).to_vector<double>();
  EXPECT_NEAR(std::accumulate(b.begin(), b.end(), 0.0) / double(n), 0.3, 0.006);
}

TEST(RandomTest, TruncatedNormalStaysInsideItsBounds) {
  std::vector<double> x =
      random::truncated_normal(random::key(8), -0.5, 1.25, {20000}).to_vector<double>();
  EXPECT_GT(*std::min_element(x.begin(), x.end()), -0.5);
  EXPECT_LT(*std::max_element(x.begin(), x.end()), 1.25);
  // Mean of N(0, 1) truncated to (a, b): (phi(a) - phi(b)) / (Phi(b) - Phi(a)).
  auto phi = [](double v) { return std::exp(-v * v / 2) / std::sqrt(2 * M_PI); };
  auto cdf = [](double v) { return 0.5 * std::erfc(-v / std::sqrt(2.0)); };
  const double want = (phi(-0.5) - phi(1.25)) / (cdf(1.25) - cdf(-0.5));
  EXPECT_NEAR(std::accumulate(x.begin(), x.end(), 0.0) / double(x.size()), want, 0.015);
}

TEST(RandomTest, PermutationIsAPermutation) {
  std::vector<int32_t> p = random::permutation(random::key(3), 5000).to_vector<int32_t>();
  std::vector<int32_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> iota(5000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(p, iota);
}

TEST(RandomTest, DifferentKeysGiveDifferentStreams) {
  Tensor keys = random::split(random::key(0), 2);
  Tensor a = random::random_bits(reshape(slice_axis(keys, 0, 0, 1), {2}), {64});
  Tensor b = random::random_bits(reshape(slice_axis(keys, 0, 1, 2), {2}), {64});
  std::vector<uint32_t> va = a.to_vector<uint32_t>(), vb = b.to_vector<uint32_t>();
  int same = 0;
  for (size_t i = 0; i < va.size(); ++i) same += va[i] == vb[i];
  EXPECT_LE(same, 1);
}

TEST(RandomTest, CompiledSamplersEqualEagerOnes) {
  // Traced with the key as an input: the plan's CSE and fusion must not change any bit.
  auto fn = [](const std::vector<Tensor>& in) {
    Tensor k = in[0];
    Tensor keys = random::split(k, 3);
    auto sub = [&](int64_t i) { return reshape(slice_axis(keys, 0, i, i + 1), {2}); };
    return std::vector<Tensor>{random::normal(sub(0), {257}),
                               random::uniform(sub(1), {3, 5}, float32, -1.3, 2.9),
                               random::truncated_normal(random::fold_in(sub(2), 9), -1, 0.5, {33}),
                               random::random_bits(k, {4})};
  };
  CompiledFn compiled = compile(fn);
  for (uint64_t seed : {0u, 17u}) {
    std::vector<Tensor> want = fn({random::key(seed)});
    std::vector<Tensor> got = compiled({random::key(seed)});
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(same_bits(bit_patterns(got[i]), bit_patterns(want[i])))
          << "output " << i << " seed " << seed;
    }
  }
}

// ---- errors ----

TEST(RandomTest, RejectsMalformedKeysAndArguments) {
  Tensor good = random::key(0);
  EXPECT_THROW(random::split(zeros({2}, float32)), Error);
  EXPECT_THROW(random::fold_in(array(std::vector<uint32_t>{1, 2, 3}, {3}), 1), Error);
  EXPECT_THROW(random::random_bits(good, {4}, 16), Error);
  EXPECT_THROW(random::random_bits(good, {-1}), Error);
  EXPECT_THROW(random::uniform(good, {3}, int32), Error);
  EXPECT_THROW(random::normal(good, {3}, bool_), Error);
  EXPECT_THROW(random::permutation(good, -1), Error);
  try {
    random::normal(zeros({2, 2}, uint32), {3});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 2)"), std::string::npos) << e.what();
  }
}

TEST(RandomTest, SamplesCarryNoGradientIntoTheKey) {
  // d/dx sum(x * normal(key)) is the noise itself; the key path contributes nothing.
  Tensor noise = random::normal(random::key(1), {5}, float64);
  auto f = [&](const std::vector<Tensor>& xs) { return sum(xs[0] * noise); };
  Tensor g = grad(f)({ones({5}, float64)})[0];
  EXPECT_EQ(g.to_vector<double>(), noise.to_vector<double>());
}

}  // namespace
}  // namespace axlearn
