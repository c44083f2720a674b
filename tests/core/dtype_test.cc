// dtypes: 16-bit float conversions against an exact reference (every bit pattern, every tie),
// jax.numpy's promotion table, names, casts, and 16-bit arithmetic through tensors.
#include "axlearn/core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::random_values;

// Reference decoders written from the IEEE layouts (independent of dtype.cc).
double decode_f16(uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(double(m), -24);
  return sign * std::ldexp(double(1024 + m), e - 25);
}
double decode_bf16(uint16_t b) {
  const int e = (b >> 7) & 0xff;
  const int m = b & 0x7f;
  const double sign = (b & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(double(m), -133);
  return sign * std::ldexp(double(128 + m), e - 134);
}

// Correct round-to-nearest-even into a 16-bit format, done on exact doubles. `grid` holds every
// non-negative finite value in bit order plus one virtual value past the largest (the next power
// of two, whose bit pattern is +inf): an overflowing value rounds to it, i.e. to inf.
struct RoundingReference {
  std::vector<double> grid;
  uint16_t inf_bits;

  RoundingReference(double (*decode)(uint16_t), uint16_t inf, double virtual_next) : inf_bits(inf) {
    for (uint32_t b = 0; b < inf; ++b) grid.push_back(decode(uint16_t(b)));
    grid.push_back(virtual_next);
  }
  bool is_nan_bits(uint16_t b) const { return (b & 0x7fff) > inf_bits; }

  uint16_t round(double x) const {
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    if (a >= grid.back()) return sign | inf_bits;
    size_t hi = size_t(std::lower_bound(grid.begin(), grid.end(), a) - grid.begin());
    if (grid[hi] == a) return uint16_t(sign | hi);
    size_t lo = hi - 1;
    const double mid = (grid[lo] + grid[hi]) / 2;  // exact: one more bit than the format
    size_t pick = a < mid ? lo : a > mid ? hi : (lo % 2 == 0 ? lo : hi);
    return uint16_t(sign | pick);
  }
};

const RoundingReference& f16_reference() {
  static const RoundingReference r(decode_f16, 0x7c00, 65536.0);
  return r;
}
const RoundingReference& bf16_reference() {
  static const RoundingReference r(decode_bf16, 0x7f80, std::ldexp(1.0, 128));
  return r;
}

// Edge inputs shared by the f32 -> 16-bit tests: signed zeros, infinities, NaN, f32 subnormals,
// and for each consecutive pair of the format's values the midpoint and its f32 neighbours.
std::vector<float> edge_floats(const RoundingReference& ref) {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          INFINITY,
                          -INFINITY,
                          std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::denorm_min(),
                          -1e-40f,
                          1e-45f,
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::min(),
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          65536.0f,
                          3.0e38f};
  for (size_t i = 0; i + 1 < ref.grid.size(); ++i) {
    const float mid = float((ref.grid[i] + ref.grid[i + 1]) / 2);
    if (double(mid) != (ref.grid[i] + ref.grid[i + 1]) / 2) continue;  // not an f32: skip
    for (float f :
         {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), float(ref.grid[i])}) {
      v.push_back(f);
      v.push_back(-f);
    }
  }
  return v;
}

std::vector<float> random_bit_floats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> v(n);
  for (float& f : v) f = f32_from_bits(uint32_t(gen()));
  return v;
}

TEST(Float16Test, ToFloatMatchesIeeeLayoutForAllBitPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = decode_f16(uint16_t(h));
    const float got = float16_t::to_float(uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << "bits " << h;
    } else {
      ASSERT_EQ(double(got), want) << "bits " << h;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << "bits " << h;
    }
  }
}

TEST(Float16Test, AllBitPatternsRoundTripThroughFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float16_t x;
    x.bits = uint16_t(h);
    const uint16_t back = float16_t(float(x)).bits;
    if (f16_reference().is_nan_bits(uint16_t(h))) {
      ASSERT_TRUE(f16_reference().is_nan_bits(back)) << "NaN bits " << h << " became " << back;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << "NaN sign, bits " << h;
    } else {
      ASSERT_EQ(back, h);
    }
  }
}

TEST(BFloat16Test, AllBitPatternsRoundTripThroughFloat) {
  for (uint32_t b = 0; b < 65536; ++b) {
    bfloat16_t x;
    x.bits = uint16_t(b);
    const float f = float(x);
    const double want = decode_bf16(uint16_t(b));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_TRUE(bf16_reference().is_nan_bits(bfloat16_t(f).bits)) << "NaN bits " << b;
    } else {
      ASSERT_EQ(double(f), want) << "bits " << b;
      ASSERT_EQ(bfloat16_t(f).bits, b);
    }
  }
}

void expect_rounding_matches(const RoundingReference& ref, const std::vector<float>& inputs,
                             uint16_t (*convert)(float), const char* what) {
  int bad = 0;
  for (float f : inputs) {
    const uint16_t got = convert(f);
    if (std::isnan(f)) {
      if (!ref.is_nan_bits(got) && bad++ < 5) ADD_FAILURE() << what << ": NaN became " << got;
      continue;
    }
    const uint16_t want = ref.round(double(f));
    if (got != want && bad++ < 5) {
      ADD_FAILURE() << what << "(" << std::setprecision(10) << f << " = 0x" << std::hex
                    << f32_bits(f) << "): got 0x" << got << " want 0x" << want << std::dec;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << inputs.size() << " inputs misrounded";
}

TEST(Float16Test, FromFloatRoundsToNearestEvenOnEdgeCases) {
  expect_rounding_matches(f16_reference(), edge_floats(f16_reference()), float16_t::from_float,
                          "f32->f16");
}

TEST(Float16Test, FromFloatRoundsToNearestEvenOnRandomBitPatterns) {
  expect_rounding_matches(f16_reference(), random_bit_floats(1 << 19, 11), float16_t::from_float,
                          "f32->f16");
  // Random values in the f16 range, where the bit patterns above rarely land.
  std::vector<float> in_range;
  for (double d : random_values(1 << 18, -70000, 70000, 12)) in_range.push_back(float(d));
  for (double d : random_values(1 << 16, -1e-4, 1e-4, 13)) in_range.push_back(float(d));
  expect_rounding_matches(f16_reference(), in_range, float16_t::from_float, "f32->f16");
}

TEST(BFloat16Test, FromFloatRoundsToNearestEvenOnEdgeCases) {
  expect_rounding_matches(bf16_reference(), edge_floats(bf16_reference()), bfloat16_t::from_float,
                          "f32->bf16");
}

TEST(BFloat16Test, FromFloatRoundsToNearestEvenOnRandomBitPatterns) {
  expect_rounding_matches(bf16_reference(), random_bit_floats(1 << 19, 21), bfloat16_t::from_float,
                          "f32->bf16");
}

// Doubles just off a tie of the 16-bit format: rounding to f32 first would land on the tie and
// then round to even, the wrong way half the time.
std::vector<double> near_tie_doubles(const RoundingReference& ref, size_t stride) {
  std::vector<double> v;
  for (size_t i = 0; i + 1 < ref.grid.size(); i += stride) {
    const double mid = (ref.grid[i] + ref.grid[i + 1]) / 2;
    const double eps = (ref.grid[i + 1] - ref.grid[i]) * std::ldexp(1.0, -40);
    for (double d : {mid, mid + eps, mid - eps, ref.grid[i] + eps}) {
      v.push_back(d);
      v.push_back(-d);
    }
  }
  for (double d : random_values(20000, -1e5, 1e5, 31)) v.push_back(d);
  v.push_back(1e300);
  v.push_back(-1e300);
  v.push_back(1e-300);
  return v;
}

TEST(Float16Test, FromDoubleRoundsOnceToNearestEven) {
  const auto& ref = f16_reference();
  int bad = 0;
  for (double d : near_tie_doubles(ref, 1)) {
    const uint16_t got = cast_value<float16_t>(d).bits;
    if (got != ref.round(d) && bad++ < 5) {
      ADD_FAILURE() << std::setprecision(17) << d << ": got " << got << " want " << ref.round(d);
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(BFloat16Test, FromDoubleRoundsOnceToNearestEven) {
  const auto& ref = bf16_reference();
  int bad = 0;
  for (double d : near_tie_doubles(ref, 3)) {
    const uint16_t got = cast_value<bfloat16_t>(d).bits;
    if (got != ref.round(d) && bad++ < 5) {
      ADD_FAILURE() << std::setprecision(17) << d << ": got " << got << " want " << ref.round(d);
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(DtypeTest, RoundToOddKeepsExactValuesAndMarksInexactOnes) {
  for (double d : random_values(10000, -1e6, 1e6, 41)) {
    const float f = f64_to_f32_round_to_odd(d);
    if (double(float(d)) == d) {
      EXPECT_EQ(double(f), d);
      continue;
    }
    // Truncation toward zero with the sticky last bit set: d lies strictly between the
    // neighbours of f, and f is odd.
    EXPECT_EQ(f32_bits(f) & 1u, 1u) << d;
    EXPECT_LT(double(std::nextafter(f, -INFINITY)), d);
    EXPECT_GT(double(std::nextafter(f, INFINITY)), d);
  }
  EXPECT_EQ(f64_to_f32_round_to_odd(1.0), 1.0f);
  EXPECT_TRUE(std::isnan(f64_to_f32_round_to_odd(std::nan(""))));
  EXPECT_EQ(f64_to_f32_round_to_odd(INFINITY), INFINITY);
}

TEST(DtypeTest, PromoteTypesMatchesJaxTable) {
  const auto& table = testing::jax_promotion_table();
  ASSERT_EQ(table.size(), size_t(kNumDtypes * kNumDtypes))
      << "missing or short promotion_table.json";
  for (const auto& [pair, want] : table) {
    EXPECT_EQ(promote_types(pair.first, pair.second), want) << pair.first << ", " << pair.second;
  }
}

TEST(DtypeTest, NamesRoundTripAndAliasesParse) {
  for (int i = 0; i < kNumDtypes; ++i) {
    EXPECT_EQ(dtype_from_name(dtype_name(Dtype(i))), Dtype(i));
  }
  EXPECT_STREQ(dtype_name(bfloat16), "bfloat16");
  EXPECT_STREQ(dtype_name(bool_), "bool");
  EXPECT_EQ(dtype_from_name("bf16"), bfloat16);
  EXPECT_EQ(dtype_from_name("f16"), float16);
  EXPECT_EQ(dtype_from_name("i64"), int64);
  EXPECT_EQ(dtype_from_name("u32"), uint32);
  EXPECT_THROW(dtype_from_name("float8"), Error);
  EXPECT_EQ(size_of(bool_), 1u);
  EXPECT_EQ(size_of(bfloat16), 2u);
  EXPECT_EQ(size_of(float16), 2u);
  EXPECT_EQ(size_of(uint32), 4u);
  EXPECT_EQ(size_of(int64), 8u);
  EXPECT_EQ(size_of(float64), 8u);
  EXPECT_TRUE(is_floating(bfloat16));
  EXPECT_FALSE(is_floating(int32));
  EXPECT_TRUE(is_integer(uint8));
  EXPECT_FALSE(is_integer(bool_));
  EXPECT_TRUE(is_unsigned(uint32));
  EXPECT_EQ(compute_dtype(float16), float32);
  EXPECT_EQ(compute_dtype(float64), float64);
}

TEST(DtypeTest, CastValueFollowsNumpy) {
  EXPECT_EQ(cast_value<int32_t>(-2.7), -2);  // truncation toward zero
  EXPECT_EQ(cast_value<int32_t>(2.7f), 2);
  EXPECT_EQ(cast_value<bool>(0.25), true);
  EXPECT_EQ(cast_value<bool>(0.0f), false);
  EXPECT_EQ(cast_value<float>(true), 1.0f);
  EXPECT_EQ(cast_value<int32_t>(bfloat16_t(-3.5f)), -3);
  EXPECT_EQ(cast_value<float16_t>(int32_t(2049)).bits, f16_reference().round(2049.0));  // 2048
  EXPECT_EQ(float(cast_value<bfloat16_t>(float16_t(1.5f))), 1.5f);
}

// ---- through tensors: conversion kernels and 16-bit arithmetic ----

TEST(DtypeTest, AstypeFloat32ToHalfTypesMatchesReference) {
  std::vector<float> in = edge_floats(bf16_reference());
  in.resize(std::min<size_t>(in.size(), 60000));
  auto f16_edges = edge_floats(f16_reference());
  in.insert(in.end(), f16_edges.begin(), f16_edges.end());
  const Shape shape = {int64_t(in.size())};
  Tensor x = from_buffer(in.data(), shape, float32);
  for (Dtype d : {bfloat16, float16}) {
    const auto& ref = d == bfloat16 ? bf16_reference() : f16_reference();
    Tensor y = astype(x, d);
    ASSERT_EQ(y.dtype(), d);
    const Array a = contiguous(y.array());
    const uint16_t* bits = static_cast<const uint16_t*>(a.raw());
    int bad = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const bool ok = std::isnan(in[i]) ? ref.is_nan_bits(bits[i]) : bits[i] == ref.round(in[i]);
      if (!ok && bad++ < 5) {
        ADD_FAILURE() << dtype_name(d) << " astype(" << std::setprecision(10) << in[i] << "): bits "
                      << bits[i];
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST(DtypeTest, AstypeFloat64ToHalfTypesRoundsOnce) {
  for (Dtype d : {bfloat16, float16}) {
    const auto& ref = d == bfloat16 ? bf16_reference() : f16_reference();
    std::vector<double> in = near_tie_doubles(ref, 7);
    Tensor x = array(in, {int64_t(in.size())}, float64);
    Tensor y = astype(x, d);
    const Array a = contiguous(y.array());
    const uint16_t* bits = static_cast<const uint16_t*>(a.raw());
    int bad = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      if (bits[i] != ref.round(in[i]) && bad++ < 5) {
        ADD_FAILURE() << dtype_name(d) << " astype(" << std::setprecision(17) << in[i] << "): bits "
                      << bits[i] << " want " << ref.round(in[i]);
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST(DtypeTest, AstypeFloatToIntTruncatesTowardZero) {
  Tensor x = array(std::vector<float>{-2.7f, -0.5f, 0.5f, 2.7f, 100.9f}, {5});
  EXPECT_EQ(astype(x, int32).to_vector<int32_t>(), (std::vector<int32_t>{-2, 0, 0, 2, 100}));
  EXPECT_EQ(astype(x, bool_).to_vector<bool>(), (std::vector<bool>{true, true, true, true, true}));
  Tensor z = array(std::vector<float>{0.0f, -0.0f, 1.0f}, {3});
  EXPECT_EQ(astype(z, bool_).to_vector<bool>(), (std::vector<bool>{false, false, true}));
  Tensor b = array(std::vector<bool>{true, false}, {2});
  EXPECT_EQ(astype(b, float32).to_vector<float>(), (std::vector<float>{1.0f, 0.0f}));
  Tensor i = array(std::vector<int32_t>{-1, 300}, {2});
  EXPECT_EQ(astype(i, int64).to_vector<int64_t>(), (std::vector<int64_t>{-1, 300}));
}

// 16-bit arithmetic computes in f32 and rounds the result once to nearest even.
TEST(DtypeTest, HalfTypeArithmeticRoundsOnceFromFloat32) {
  const int64_t n = 4096;
  for (Dtype d : {bfloat16, float16}) {
    const auto& ref = d == bfloat16 ? bf16_reference() : f16_reference();
    Tensor a = testing::random_tensor({n}, d, -100, 100, 51);
    Tensor b = testing::random_tensor({n}, d, -100, 100, 52);
    std::vector<float> av = a.to_vector<float>(), bv = b.to_vector<float>();
    struct Case {
      const char* name;
      Tensor out;
      std::function<float(float, float)> f;
    };
    std::vector<Case> cases = {
        {"add", add(a, b), [](float x, float y) { return x + y; }},
        {"multiply", multiply(a, b), [](float x, float y) { return x * y; }},
        {"divide", divide(a, b), [](float x, float y) { return x / y; }},
        {"subtract", subtract(a, b), [](float x, float y) { return x - y; }},
    };
    for (auto& c : cases) {
      ASSERT_EQ(c.out.dtype(), d) << c.name;
      const Array arr = contiguous(c.out.array());
      const uint16_t* bits = static_cast<const uint16_t*>(arr.raw());
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t want = ref.round(double(c.f(av[i], bv[i])));
        if (bits[i] != want && bad++ < 3) {
          ADD_FAILURE() << dtype_name(d) << " " << c.name << "(" << av[i] << ", " << bv[i]
                        << "): bits " << bits[i] << " want " << want;
        }
      }
      EXPECT_EQ(bad, 0) << dtype_name(d) << " " << c.name;
    }
  }
}

TEST(DtypeTest, Bfloat16SumAccumulatesInFloat32) {
  // 300 is a bf16 value, but a bf16 accumulator stalls at 256 (256 + 1 rounds back to 256).
  Tensor x = ones({300}, bfloat16);
  Tensor s = sum(x);
  EXPECT_EQ(s.dtype(), bfloat16);
  EXPECT_EQ(s.item<float>(), 300.0f);
  // Same for a matmul's contraction.
  Tensor m = matmul(ones({1, 300}, bfloat16), ones({300, 1}, bfloat16));
  EXPECT_EQ(m.dtype(), bfloat16);
  EXPECT_EQ(m.item<float>(), 300.0f);
}

}  // namespace
}  // namespace axlearn
