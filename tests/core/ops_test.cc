// ops.h against naive f64 reference loops and numpy semantics: elementwise math with
// broadcasting and promotion, weak-typed scalars, shape ops, indexing, reductions, sorting,
// linear algebra, fused softmax, empty and rank-0 tensors, laziness and printing.
#include "axlearn/core/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "axlearn/core/array.h"
#include "axlearn/core/primitives.h"
#include "axlearn/core/transforms.h"
#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::all_close;
using testing::broadcast_binary_ref;
using testing::random_values;
using testing::ravel;
using testing::tensor_close;
using testing::tensor_of;
using testing::unravel;
using testing::values_of;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------- references

double ref_sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double ref_softplus(double x) { return std::log1p(std::exp(-std::fabs(x))) + std::max(x, 0.0); }
double ref_sign(double x) { return std::isnan(x) ? x : double((x > 0) - (x < 0)); }
double ref_erfinv(double y) {
  if (y <= -1) return y == -1 ? -kInf : kNaN;
  if (y >= 1) return y == 1 ? kInf : kNaN;
  // Newton on erf from a coarse start; converges to full precision for |y| < 0.999.
  double x = y * 0.886;
  for (int i = 0; i < 100; ++i) {
    const double step = (std::erf(x) - y) / (2 / std::sqrt(M_PI) * std::exp(-x * x));
    x -= step;
    if (std::fabs(step) < 1e-17 * std::max(1.0, std::fabs(x))) break;
  }
  return x;
}
double ref_gelu(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double ref_gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ref_remainder(double a, double b) {
  double r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
int64_t ref_floor_div_int(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t ref_remainder_int(int64_t a, int64_t b) { return a - ref_floor_div_int(a, b) * b; }

// Reduces `x` over `axes` (normalised) with f starting from init; the kept axes stay in order.
std::vector<double> ref_reduce(const std::vector<double>& x, const Shape& shape,
                               const std::vector<int>& axes, double init,
                               const std::function<double(double, double)>& f, Shape* out_shape) {
  Shape out;
  for (int i = 0; i < int(shape.size()); ++i) {
    if (std::find(axes.begin(), axes.end(), i) == axes.end()) out.push_back(shape[i]);
  }
  std::vector<double> acc(size_t(num_elements(out)), init);
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    auto idx = unravel(i, shape);
    std::vector<int64_t> o;
    for (int d = 0; d < int(shape.size()); ++d) {
      if (std::find(axes.begin(), axes.end(), d) == axes.end()) o.push_back(idx[d]);
    }
    double& a = acc[size_t(ravel(o, out))];
    a = f(a, x[size_t(i)]);
  }
  *out_shape = out;
  return acc;
}

// lax.dot_general on row-major f64 data; output dims are batch, lhs free, rhs free.
std::vector<double> ref_dot_general(const std::vector<double>& a, const Shape& sa,
                                    const std::vector<double>& b, const Shape& sb,
                                    const std::vector<int>& lc, const std::vector<int>& rc,
                                    const std::vector<int>& lb, const std::vector<int>& rb,
                                    Shape* out_shape) {
  auto free_dims = [](int n, const std::vector<int>& c, const std::vector<int>& bt) {
    std::vector<int> f;
    for (int i = 0; i < n; ++i) {
      if (std::find(c.begin(), c.end(), i) == c.end() &&
          std::find(bt.begin(), bt.end(), i) == bt.end()) {
        f.push_back(i);
      }
    }
    return f;
  };
  const auto lf = free_dims(int(sa.size()), lc, lb), rf = free_dims(int(sb.size()), rc, rb);
  Shape out, contract;
  for (int d : lb) out.push_back(sa[d]);
  for (int d : lf) out.push_back(sa[d]);
  for (int d : rf) out.push_back(sb[d]);
  for (int d : lc) contract.push_back(sa[d]);
  std::vector<double> y(size_t(num_elements(out)), 0.0);
  for (int64_t o = 0; o < int64_t(y.size()); ++o) {
    auto oi = unravel(o, out);
    std::vector<int64_t> ia(sa.size()), ib(sb.size());
    size_t p = 0;
    for (size_t k = 0; k < lb.size(); ++k, ++p) ia[lb[k]] = ib[rb[k]] = oi[p];
    for (int d : lf) ia[d] = oi[p++];
    for (int d : rf) ib[d] = oi[p++];
    double s = 0;
    for (int64_t c = 0; c < num_elements(contract); ++c) {
      auto ci = unravel(c, contract);
      for (size_t k = 0; k < lc.size(); ++k) ia[lc[k]] = ib[rc[k]] = ci[k];
      s += a[size_t(ravel(ia, sa))] * b[size_t(ravel(ib, sb))];
    }
    y[size_t(o)] = s;
  }
  *out_shape = out;
  return y;
}

std::vector<double> ref_transpose(const std::vector<double>& x, const Shape& s,
                                  const std::vector<int>& perm, Shape* out_shape) {
  Shape out;
  for (int p : perm) out.push_back(s[p]);
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < int64_t(y.size()); ++o) {
    auto oi = unravel(o, out);
    std::vector<int64_t> ii(s.size());
    for (size_t k = 0; k < perm.size(); ++k) ii[perm[k]] = oi[k];
    y[size_t(o)] = x[size_t(ravel(ii, s))];
  }
  *out_shape = out;
  return y;
}

// ---------------------------------------------------------------- elementwise unary

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double lo, hi;
  double f64_rtol = 1e-13;
  // Composite ops (gelu) round each intermediate to the 16-bit type, as jax does, so near a
  // cancellation the error is a few ulp of 1 rather than of the result: atol in units of eps.
  double half_atol_eps = 0.1;
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"negative", [](const Tensor& x) { return negative(x); }, [](double x) { return -x; }, -3, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); }, -3, 3},
      {"sign", [](const Tensor& x) { return sign(x); }, ref_sign, -3, 3},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -10,
       10},
      {"expm1", [](const Tensor& x) { return expm1(x); }, [](double x) { return std::expm1(x); },
       -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.01,
       50},
      {"log1p", [](const Tensor& x) { return log1p(x); }, [](double x) { return std::log1p(x); },
       -0.9, 5},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0,
       50},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); },
       0.01, 50},
      {"square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; }, -5, 5},
      {"reciprocal", [](const Tensor& x) { return reciprocal(x); }, [](double x) { return 1 / x; },
       0.1, 10},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, -5,
       5},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, ref_sigmoid, -10, 10},
      {"erf", [](const Tensor& x) { return erf(x); }, [](double x) { return std::erf(x); }, -3, 3},
      {"erfinv", [](const Tensor& x) { return erfinv(x); }, ref_erfinv, -0.99, 0.99, 1e-11},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double x) { return std::sin(x); }, -6, 6},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double x) { return std::cos(x); }, -6, 6},
      {"floor", [](const Tensor& x) { return floor(x); }, [](double x) { return std::floor(x); },
       -5, 5},
      {"ceil", [](const Tensor& x) { return ceil(x); }, [](double x) { return std::ceil(x); }, -5,
       5},
      {"round", [](const Tensor& x) { return round(x); },
       [](double x) { return std::nearbyint(x); }, -5, 5},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return std::max(x, 0.0); },
       -3, 3},
      {"gelu", [](const Tensor& x) { return gelu(x); }, ref_gelu, -4, 4, 1e-13, 4},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, ref_gelu_tanh, -4, 4, 1e-13, 4},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x * ref_sigmoid(x); },
       -6, 6},
      {"softplus", [](const Tensor& x) { return softplus(x); }, ref_softplus, -20, 20},
  };
}

TEST(UnaryOpsTest, Float64MatchesReference) {
  for (const auto& c : unary_cases()) {
    Tensor x = tensor_of(random_values(257, c.lo, c.hi), {257});
    std::vector<double> xv = values_of(x), want;
    for (double v : xv) want.push_back(c.ref(v));
    EXPECT_TRUE(tensor_close(c.op(x), {257}, float64, want, c.f64_rtol, 1e-15)) << c.name;
  }
}

TEST(UnaryOpsTest, Float32MatchesReferenceWithinAFewUlp) {
  for (const auto& c : unary_cases()) {
    // 2-D and larger than a kernel chunk, so vectorised main loops and tails are both exercised.
    Tensor x = tensor_of(random_values(3 * 700, c.lo, c.hi, 99), {3, 700}, float32);
    std::vector<double> xv = values_of(x), want;
    for (double v : xv) want.push_back(c.ref(v));
    EXPECT_TRUE(tensor_close(c.op(x), {3, 700}, float32, want, 2e-6, 5e-7)) << c.name;
  }
}

TEST(UnaryOpsTest, HalfTypesComputeInFloat32AndRound) {
  for (Dtype d : {bfloat16, float16}) {
    for (const auto& c : unary_cases()) {
      Tensor x = tensor_of(random_values(64, c.lo, std::min(c.hi, 10.0), 7), {8, 8}, d);
      std::vector<double> xv = values_of(x), want;
      for (double v : xv) want.push_back(c.ref(v));
      const double eps = d == bfloat16 ? 1.0 / 128 : 1.0 / 1024;
      EXPECT_TRUE(tensor_close(c.op(x), {8, 8}, d, want, eps, eps * c.half_atol_eps))
          << c.name << " " << dtype_name(d);
    }
  }
}

TEST(UnaryOpsTest, SpecialValues) {
  Tensor x = tensor_of({-kInf, -1, -0.0, 0, 1, kInf, kNaN}, {7});
  auto v = [&](const Tensor& t) { return values_of(t); };
  EXPECT_TRUE(all_close(v(exp(x)), {0, std::exp(-1), 1, 1, M_E, kInf, kNaN}, 1e-15, 0));
  EXPECT_TRUE(all_close(v(log(x)), {kNaN, kNaN, -kInf, -kInf, 0, kInf, kNaN}, 0, 0));
  EXPECT_TRUE(all_close(v(sqrt(x)), {kNaN, kNaN, 0, 0, 1, kInf, kNaN}, 0, 0));
  EXPECT_TRUE(all_close(v(tanh(x)), {-1, std::tanh(-1), 0, 0, std::tanh(1), 1, kNaN}, 1e-15, 0));
  EXPECT_TRUE(
      all_close(v(sigmoid(x)), {0, ref_sigmoid(-1), 0.5, 0.5, ref_sigmoid(1), 1, kNaN}, 1e-15, 0));
  EXPECT_TRUE(all_close(v(log1p(tensor_of({-1, -2}, {2}))), {-kInf, kNaN}, 0, 0));
  EXPECT_TRUE(all_close(v(erfinv(tensor_of({-1, 1, 0}, {3}))), {-kInf, kInf, 0}, 0, 0));
  EXPECT_TRUE(all_close(v(rsqrt(tensor_of({0}, {1}))), {kInf}, 0, 0));
  EXPECT_EQ(isfinite(x).to_vector<bool>(),
            (std::vector<bool>{false, true, true, true, true, false, false}));
  EXPECT_EQ(isfinite(x).dtype(), bool_);
  // f32 overflow and the stable forms of softplus / sigmoid at large |x|.
  Tensor big = tensor_of({89, -104, 100, -100}, {4}, float32);
  EXPECT_EQ(values_of(exp(big))[0], kInf);
  EXPECT_TRUE(
      all_close(v(softplus(big)), {89, ref_softplus(-104), 100, ref_softplus(-100)}, 1e-6, 1e-45));
  EXPECT_TRUE(all_close(v(sigmoid(big)), {1, 0, 1, 0}, 1e-6, 1e-30));
}

TEST(UnaryOpsTest, RoundIsHalfToEven) {
  Tensor x =
      tensor_of({-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999999999999994, 2.6}, {9}, float32);
  EXPECT_TRUE(tensor_close(round(x), {9}, float32, {-2, -2, -0.0, 0, 2, 2, 4, 0, 3}, 0, 0));
  Tensor y = tensor_of({-2.5, 0.5, 1.5, 2.5, 4503599627370497.0}, {5}, float64);
  EXPECT_TRUE(tensor_close(round(y), {5}, float64, {-2, 0, 2, 2, 4503599627370497.0}, 0, 0));
  // Above 2^23 every float32 is an integer and must come back unchanged.
  Tensor big = tensor_of({8388609, -16777215, 3e9}, {3}, float32);
  EXPECT_TRUE(tensor_close(round(big), {3}, float32, values_of(big), 0, 0));
  EXPECT_TRUE(tensor_close(floor(big), {3}, float32, values_of(big), 0, 0));
}

TEST(UnaryOpsTest, IntegerInputs) {
  Tensor i = array(std::vector<int32_t>{-3, 0, 7}, {3});
  EXPECT_TRUE(tensor_close(negative(i), {3}, int32, {3, 0, -7}, 0, 0));
  EXPECT_TRUE(tensor_close(abs(i), {3}, int32, {3, 0, 7}, 0, 0));
  EXPECT_TRUE(tensor_close(sign(i), {3}, int32, {-1, 0, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(square(i), {3}, int32, {9, 0, 49}, 0, 0));
  // Transcendental functions of integers compute in the default float type, as in jax.numpy.
  EXPECT_TRUE(tensor_close(exp(i), {3}, float32, {std::exp(-3), 1, std::exp(7)}, 1e-6, 0));
  Tensor b = array(std::vector<bool>{true, false}, {2});
  EXPECT_EQ(logical_not(b).to_vector<bool>(), (std::vector<bool>{false, true}));
}

// ---------------------------------------------------------------- elementwise binary

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  double alo, ahi, blo, bhi;
};

std::vector<BinaryCase> float_binary_cases() {
  return {
      {"add", add, [](double a, double b) { return a + b; }, -3, 3, -3, 3},
      {"subtract", subtract, [](double a, double b) { return a - b; }, -3, 3, -3, 3},
      {"multiply", multiply, [](double a, double b) { return a * b; }, -3, 3, -3, 3},
      {"divide", divide, [](double a, double b) { return a / b; }, -3, 3, 0.5, 3},
      {"power", power, [](double a, double b) { return std::pow(a, b); }, 0.1, 3, -2, 2},
      {"maximum", maximum, [](double a, double b) { return std::max(a, b); }, -3, 3, -3, 3},
      {"minimum", minimum, [](double a, double b) { return std::min(a, b); }, -3, 3, -3, 3},
      {"arctan2", arctan2, [](double a, double b) { return std::atan2(a, b); }, -3, 3, -3, 3},
      {"remainder", remainder, ref_remainder, -7, 7, -3, 3},
      {"floor_divide", floor_divide, [](double a, double b) { return std::floor(a / b); }, -7, 7,
       0.5, 3},
      {"operator+", [](const Tensor& a, const Tensor& b) { return a + b; },
       [](double a, double b) { return a + b; }, -3, 3, -3, 3},
      {"operator*", [](const Tensor& a, const Tensor& b) { return a * b; },
       [](double a, double b) { return a * b; }, -3, 3, -3, 3},
  };
}

// a (3, 1, 4) with b (2, 1) -> (3, 2, 4); b is given as the transpose of a (1, 2) tensor so the
// kernel also sees a non-contiguous operand.
TEST(BinaryOpsTest, BroadcastingMatchesReference) {
  const Shape sa = {3, 1, 4}, sb = {2, 1}, so = {3, 2, 4};
  for (Dtype d : {float64, float32}) {
    for (const auto& c : float_binary_cases()) {
      Tensor a = tensor_of(random_values(12, c.alo, c.ahi, 5), sa, d);
      std::vector<double> bv = random_values(2, c.blo, c.bhi, 6);
      if (c.blo < 0) bv = {-1.7, 2.3};  // both signs for remainder / floor_divide
      Tensor b = transpose(tensor_of(bv, {1, 2}, d));
      const auto want = broadcast_binary_ref(values_of(a), sa, values_of(b), sb, so, c.ref);
      const double rtol = d == float64 ? 1e-14 : 3e-6;
      EXPECT_TRUE(tensor_close(c.op(a, b), so, d, want, rtol, rtol)) << c.name << " " << d;
      // Operand order reversed broadcasts the same way.
      const auto want_r = broadcast_binary_ref(values_of(b), sb, values_of(a), sa, so, c.ref);
      if (std::string(c.name) != "power" && std::string(c.name) != "floor_divide" &&
          std::string(c.name) != "divide") {
        EXPECT_TRUE(tensor_close(c.op(b, a), so, d, want_r, rtol, rtol)) << c.name << " rev";
      }
    }
  }
}

TEST(BinaryOpsTest, LargeContiguousFloat32) {
  const Shape s = {1000, 3};
  Tensor a = tensor_of(random_values(3000, -3, 3, 1), s, float32);
  Tensor b = tensor_of(random_values(3000, 0.5, 3, 2), s, float32);
  const auto av = values_of(a), bv = values_of(b);
  std::vector<double> want;
  for (size_t i = 0; i < av.size(); ++i) want.push_back(double(float(av[i]) * float(bv[i])));
  EXPECT_TRUE(tensor_close(multiply(a, b), s, float32, want, 0, 0));
  want.clear();
  for (size_t i = 0; i < av.size(); ++i) want.push_back(double(float(av[i]) / float(bv[i])));
  EXPECT_TRUE(tensor_close(divide(a, b), s, float32, want, 0, 0));
}

TEST(BinaryOpsTest, RemainderAndFloorDivideFollowNumpySigns) {
  Tensor a = tensor_of({5.5, -5.5, 5.5, -5.5, 6, -6}, {6});
  Tensor b = tensor_of({2, 2, -2, -2, 3, 3}, {6});
  EXPECT_TRUE(tensor_close(remainder(a, b), {6}, float64, {1.5, 0.5, -0.5, -1.5, 0, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(floor_divide(a, b), {6}, float64, {2, -3, -3, 2, 2, -2}, 0, 0));
  EXPECT_TRUE(std::isnan(remainder(tensor_of({5.5}, {1}), tensor_of({0}, {1})).item<double>()));
}

TEST(BinaryOpsTest, IntegerSemanticsMatchPython) {
  const auto av = testing::random_ints(60, -20, 20, 3);
  auto bv = testing::random_ints(60, -7, 7, 4);
  for (auto& v : bv) {
    if (v == 0) v = 3;
  }
  std::vector<int32_t> a32(av.begin(), av.end()), b32(bv.begin(), bv.end());
  Tensor a = array(a32, {6, 10}), b = array(b32, {6, 10});
  auto check = [&](const char* name, const Tensor& got,
                   std::function<int64_t(int64_t, int64_t)> f) {
    std::vector<double> want;
    for (size_t i = 0; i < av.size(); ++i) want.push_back(double(f(av[i], bv[i])));
    EXPECT_TRUE(tensor_close(got, {6, 10}, int32, want, 0, 0)) << name;
  };
  check("add", add(a, b), [](int64_t x, int64_t y) { return x + y; });
  check("subtract", subtract(a, b), [](int64_t x, int64_t y) { return x - y; });
  check("multiply", multiply(a, b), [](int64_t x, int64_t y) { return x * y; });
  check("floor_divide", floor_divide(a, b), ref_floor_div_int);
  check("remainder", remainder(a, b), ref_remainder_int);
  check("maximum", maximum(a, b), [](int64_t x, int64_t y) { return std::max(x, y); });
  check("minimum", minimum(a, b), [](int64_t x, int64_t y) { return std::min(x, y); });
  check("bitwise_and", bitwise_and(a, b), [](int64_t x, int64_t y) { return x & y; });
  check("bitwise_or", bitwise_or(a, b), [](int64_t x, int64_t y) { return x | y; });
  check("bitwise_xor", bitwise_xor(a, b), [](int64_t x, int64_t y) { return x ^ y; });
  // True division of integers gives float32.
  std::vector<double> q;
  for (size_t i = 0; i < av.size(); ++i) q.push_back(double(float(av[i]) / float(bv[i])));
  EXPECT_TRUE(tensor_close(divide(a, b), {6, 10}, float32, q, 1e-7, 0));
  // Integer power with non-negative exponents stays integral and exact.
  Tensor base = array(std::vector<int32_t>{2, -3, 5, 0, 1}, {5});
  Tensor ex = array(std::vector<int32_t>{10, 3, 0, 4, 7}, {5});
  EXPECT_TRUE(tensor_close(power(base, ex), {5}, int32, {1024, -27, 1, 0, 1}, 0, 0));
}

TEST(BinaryOpsTest, UnsignedArithmeticWrapsAround) {
  Tensor u = array(std::vector<int32_t>{250, 3}, {2}, uint8);
  Tensor v = array(std::vector<int32_t>{10, 5}, {2}, uint8);
  EXPECT_TRUE(tensor_close(add(u, v), {2}, uint8, {4, 8}, 0, 0));
  EXPECT_TRUE(tensor_close(subtract(v, u), {2}, uint8, {16, 2}, 0, 0));
  Tensor w = array(std::vector<uint32_t>{0u, 7u}, {2});
  EXPECT_TRUE(tensor_close(w - 1, {2}, uint32, {4294967295.0, 6}, 0, 0));
  EXPECT_TRUE(tensor_close(floor_divide(w, array(std::vector<uint32_t>{3u, 2u}, {2})), {2}, uint32,
                           {0, 3}, 0, 0));
}

TEST(BinaryOpsTest, ShiftsFollowLax) {
  Tensor a = array(std::vector<int32_t>{1, -8, 3, 1, -1}, {5});
  Tensor s = array(std::vector<int32_t>{3, 1, 0, 31, 4}, {5});
  EXPECT_EQ(left_shift(a, s).to_vector<int32_t>(),
            (std::vector<int32_t>{8, -16, 3, std::numeric_limits<int32_t>::min(), -16}));
  // Logical right shift fills with zeros whatever the sign.
  EXPECT_EQ(right_shift_logical(a, s).to_vector<int32_t>(),
            (std::vector<int32_t>{0, 0x7ffffffc, 3, 0, 0x0fffffff}));
  // Shifting by the bit width or more gives 0 (lax semantics), never undefined behaviour.
  Tensor big = array(std::vector<int32_t>{32, 40}, {2});
  Tensor ones2 = array(std::vector<int32_t>{1, -1}, {2});
  EXPECT_EQ(left_shift(ones2, big).to_vector<int32_t>(), (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(right_shift_logical(ones2, big).to_vector<int32_t>(), (std::vector<int32_t>{0, 0}));
  Tensor u = array(std::vector<uint32_t>{0x80000000u, 5u}, {2});
  Tensor us = array(std::vector<uint32_t>{31u, 1u}, {2});
  EXPECT_EQ(right_shift_logical(u, us).to_vector<uint32_t>(), (std::vector<uint32_t>{1u, 2u}));
}

TEST(BinaryOpsTest, MaximumAndMinimumPropagateNaN) {
  Tensor a = tensor_of({kNaN, 1, 2}, {3}, float32);
  Tensor b = tensor_of({1, kNaN, 3}, {3}, float32);
  EXPECT_TRUE(all_close(values_of(maximum(a, b)), {kNaN, kNaN, 3}, 0, 0));
  EXPECT_TRUE(all_close(values_of(minimum(a, b)), {kNaN, kNaN, 2}, 0, 0));
}

TEST(BinaryOpsTest, ComparisonsBroadcastToBool) {
  Tensor a = tensor_of({1, 2, 3}, {3, 1}, float32);
  Tensor b = tensor_of({2, kNaN}, {2}, float32);
  auto check = [&](const char* name, const Tensor& got, std::vector<bool> want) {
    EXPECT_EQ(got.dtype(), bool_) << name;
    EXPECT_EQ(got.shape(), (Shape{3, 2})) << name;
    EXPECT_EQ(got.to_vector<bool>(), want) << name;
  };
  check("equal", equal(a, b), {false, false, true, false, false, false});
  check("not_equal", not_equal(a, b), {true, true, false, true, true, true});
  check("less", less(a, b), {true, false, false, false, false, false});
  check("less_equal", less_equal(a, b), {true, false, true, false, false, false});
  check("greater", greater(a, b), {false, false, false, false, true, false});
  check("greater_equal", greater_equal(a, b), {false, false, true, false, true, false});
  // Mixed dtypes compare after promotion: int32 3 == float32 3.
  Tensor i = array(std::vector<int32_t>{3, 4}, {2});
  EXPECT_EQ(equal(i, tensor_of({3, 4.5}, {2}, float32)).to_vector<bool>(),
            (std::vector<bool>{true, false}));
}

TEST(BinaryOpsTest, LogicalOps) {
  Tensor a = array(std::vector<bool>{true, true, false, false}, {4});
  Tensor b = array(std::vector<bool>{true, false, true, false}, {4});
  EXPECT_EQ(logical_and(a, b).to_vector<bool>(), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(logical_or(a, b).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(logical_xor(a, b).to_vector<bool>(), (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ(bitwise_and(a, b).dtype(), bool_);
}

// ---------------------------------------------------------------- promotion and weak types

TEST(PromotionTest, BinaryOpsFollowPromoteTypes) {
  const Dtype all[] = {bool_, uint8, uint32, int32, int64, float16, bfloat16, float32, float64};
  const auto& table = testing::jax_promotion_table();
  ASSERT_EQ(table.size(), 81u);
  for (Dtype a : all) {
    for (Dtype b : all) {
      Tensor x = ones({2}, a), y = ones({2}, b);
      const Dtype want = table.at({a, b});
      EXPECT_EQ(maximum(x, y).dtype(), want) << a << " " << b;
      EXPECT_EQ(where(ones({2}, bool_), x, y).dtype(), want) << a << " " << b;
      if (a != bool_ || b != bool_) {
        Tensor s = add(x, y);
        EXPECT_EQ(s.dtype(), want) << a << " " << b;
        EXPECT_EQ(s.to_vector<double>(), (std::vector<double>{2, 2})) << a << " " << b;
      }
    }
  }
}

TEST(PromotionTest, MixedValuesConvertExactly) {
  Tensor u = array(std::vector<uint32_t>{4000000000u, 7u}, {2});
  Tensor i = array(std::vector<int32_t>{-1, -9}, {2});
  Tensor s = add(u, i);
  EXPECT_EQ(s.dtype(), int64);
  EXPECT_EQ(s.to_vector<int64_t>(), (std::vector<int64_t>{3999999999, -2}));
  Tensor h = tensor_of({0.5, 0.25}, {2}, float16);
  Tensor j = array(std::vector<int32_t>{1, 2}, {2});
  EXPECT_TRUE(tensor_close(add(j, h), {2}, float16, {1.5, 2.25}, 0, 0));
  Tensor bf = tensor_of({1.5, 2}, {2}, bfloat16);
  EXPECT_TRUE(tensor_close(multiply(h, bf), {2}, float32, {0.75, 0.5}, 0, 0));
}

TEST(WeakTypeTest, PythonScalarsKeepTheTensorDtype) {
  Tensor f = tensor_of({1.5, -2}, {2}, float32);
  EXPECT_TRUE(tensor_close(f * 2.0, {2}, float32, {3, -4}, 0, 0));
  EXPECT_TRUE(tensor_close(2.0 * f, {2}, float32, {3, -4}, 0, 0));
  EXPECT_TRUE(tensor_close(f + 1.0, {2}, float32, {2.5, -1}, 0, 0));
  EXPECT_TRUE(tensor_close(1.0 - f, {2}, float32, {-0.5, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(f / 2.0, {2}, float32, {0.75, -1}, 0, 0));
  EXPECT_TRUE(tensor_close(3.0 / f, {2}, float32, {2, -1.5}, 0, 0));
  // The scalar is rounded to float32, not carried in double: 0.1 becomes float(0.1).
  EXPECT_TRUE(
      tensor_close(f * 0.1, {2}, float32, {double(1.5f * 0.1f), double(-2.0f * 0.1f)}, 0, 0));

  Tensor i = array(std::vector<int32_t>{3, -4}, {2});
  EXPECT_TRUE(tensor_close(i + 1, {2}, int32, {4, -3}, 0, 0));
  EXPECT_TRUE(tensor_close(i * 2, {2}, int32, {6, -8}, 0, 0));
  EXPECT_TRUE(tensor_close(i * 0.5, {2}, float32, {1.5, -2}, 0, 0));
  EXPECT_TRUE(tensor_close(i / 2, {2}, float32, {1.5, -2}, 0, 0));
  EXPECT_TRUE(tensor_close(2.5 - i, {2}, float32, {-0.5, 6.5}, 0, 0));

  Tensor bf = tensor_of({1, 2.5}, {2}, bfloat16);
  EXPECT_TRUE(tensor_close(bf + 1.0, {2}, bfloat16, {2, 3.5}, 0, 0));
  Tensor h = tensor_of({1, 2.5}, {2}, float16);
  EXPECT_TRUE(tensor_close(h * 2.0, {2}, float16, {2, 5}, 0, 0));
  Tensor d = tensor_of({1, 2.5}, {2}, float64);
  EXPECT_TRUE(tensor_close(d * 0.1, {2}, float64, {0.1, 0.25}, 1e-16, 0));
  Tensor u8 = array(std::vector<int32_t>{250, 3}, {2}, uint8);
  EXPECT_TRUE(tensor_close(u8 + 1, {2}, uint8, {251, 4}, 0, 0));
  Tensor l = array(std::vector<int64_t>{int64_t(1) << 40}, {1});
  EXPECT_TRUE(tensor_close(l + 1, {1}, int64, {double((int64_t(1) << 40) + 1)}, 0, 0));

  EXPECT_EQ(weak_scalar(3, i).dtype(), int32);
  EXPECT_EQ(weak_scalar(2.5, i).dtype(), float32);
  EXPECT_EQ(weak_scalar(3, h).dtype(), float16);
  EXPECT_EQ(weak_scalar(3, d).dtype(), float64);
  EXPECT_EQ(weak_scalar(3, h).ndim(), 0);
}

TEST(WeakTypeTest, StrongScalarTensorsPromote) {
  Tensor h = tensor_of({1, 2.5}, {2}, float16);
  EXPECT_EQ(add(h, scalar(1.0, float32)).dtype(), float32);
  Tensor i = array(std::vector<int32_t>{1, 2}, {2});
  EXPECT_EQ(add(i, scalar(1.0, float32)).dtype(), float32);
  EXPECT_EQ(add(i, scalar(1.0, int64)).dtype(), int64);
}

// ---------------------------------------------------------------- where / clip

TEST(SelectTest, WhereBroadcastsAllThree) {
  Tensor cond = array(std::vector<int32_t>{0, 2, 1}, {3, 1});  // converted to bool
  Tensor x = tensor_of({1, 2, 3, 4}, {1, 4}, float32);
  Tensor y = scalar(-1.0, float32);
  EXPECT_TRUE(tensor_close(where(cond, x, y), {3, 4}, float32,
                           {-1, -1, -1, -1, 1, 2, 3, 4, 1, 2, 3, 4}, 0, 0));
  Tensor i = array(std::vector<int32_t>{7}, {1});
  EXPECT_TRUE(
      tensor_close(where(cond, x, i), {3, 4}, float32, {7, 7, 7, 7, 1, 2, 3, 4, 1, 2, 3, 4}, 0, 0));
}

TEST(SelectTest, ClipBounds) {
  Tensor x = tensor_of({-3, -0.5, 0.25, 2}, {4}, float32);
  EXPECT_TRUE(tensor_close(clip(x, -1.0, 1.0), {4}, float32, {-1, -0.5, 0.25, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(clip(x, std::nullopt, 0.0), {4}, float32, {-3, -0.5, 0, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(clip(x, 0.0, std::nullopt), {4}, float32, {0, 0, 0.25, 2}, 0, 0));
  Tensor i = array(std::vector<int32_t>{-5, 3, 9}, {3});
  EXPECT_TRUE(tensor_close(clip(i, 0.0, 5.0), {3}, int32, {0, 3, 5}, 0, 0));
}

// ---------------------------------------------------------------- creation

TEST(CreationTest, FactoriesMatchNumpy) {
  EXPECT_TRUE(tensor_close(arange(2, 10, 3), {3}, int32, {2, 5, 8}, 0, 0));
  EXPECT_TRUE(tensor_close(arange(4), {4}, int32, {0, 1, 2, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(arange(5, 0, -2), {3}, int32, {5, 3, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(arange(3, float32), {3}, float32, {0, 1, 2}, 0, 0));
  EXPECT_TRUE(tensor_close(iota({2, 3}, 1), {2, 3}, int32, {0, 1, 2, 0, 1, 2}, 0, 0));
  EXPECT_TRUE(tensor_close(iota({2, 3}, 0), {2, 3}, int32, {0, 0, 0, 1, 1, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(eye(3), {3, 3}, float32, {1, 0, 0, 0, 1, 0, 0, 0, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(full({2}, 2.5, bfloat16), {2}, bfloat16, {2.5, 2.5}, 0, 0));
  Tensor x = tensor_of({1, 2}, {2}, float16);
  EXPECT_TRUE(tensor_close(zeros_like(x), {2}, float16, {0, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(ones_like(x), {2}, float16, {1, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(full_like(x, 3), {2}, float16, {3, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(scalar(1.5), {}, float32, {1.5}, 0, 0));
  const float buf[] = {1.5f, -2.0f, 3.0f};
  EXPECT_TRUE(tensor_close(from_buffer(buf, {3}, float32), {3}, float32, {1.5, -2, 3}, 0, 0));
  EXPECT_TRUE(
      tensor_close(array(std::vector<double>{1, 2}, {2}, float32), {2}, float32, {1, 2}, 0, 0));
}

TEST(CreationTest, BitcastReinterpretsBits) {
  Tensor x = tensor_of({1.0, -2.0}, {2}, float32);
  EXPECT_EQ(bitcast(x, int32).to_vector<int32_t>(),
            (std::vector<int32_t>{0x3f800000, int32_t(0xc0000000u)}));
  EXPECT_EQ(bitcast(x, uint32).dtype(), uint32);
}

// ---------------------------------------------------------------- shape ops

Tensor iota_f64(const Shape& s) {
  std::vector<double> v(size_t(num_elements(s)));
  std::iota(v.begin(), v.end(), 0.0);
  return tensor_of(v, s);
}

TEST(ShapeOpsTest, ReshapeKeepsRowMajorOrderAndInfersMinusOne) {
  Tensor x = iota_f64({2, 3, 4});
  Tensor y = reshape(x, {4, -1});
  EXPECT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_EQ(values_of(y), values_of(x));
  // Reshaping a transposed (non-contiguous) tensor reads it in its logical order.
  Shape ts;
  const auto tv = ref_transpose(values_of(x), {2, 3, 4}, {2, 0, 1}, &ts);
  EXPECT_TRUE(tensor_close(reshape(transpose(x, {2, 0, 1}), {-1}), {24}, float64, tv, 0, 0));
  EXPECT_TRUE(tensor_close(flatten(x), {24}, float64, values_of(x), 0, 0));
}

TEST(ShapeOpsTest, TransposeMatchesReference) {
  Tensor x = iota_f64({2, 3, 4});
  for (std::vector<int> perm : {std::vector<int>{1, 2, 0}, {2, 1, 0}, {0, 2, 1}, {0, 1, 2}}) {
    Shape s;
    const auto want = ref_transpose(values_of(x), {2, 3, 4}, perm, &s);
    EXPECT_TRUE(tensor_close(transpose(x, perm), s, float64, want, 0, 0));
  }
  Shape s;
  const auto rev = ref_transpose(values_of(x), {2, 3, 4}, {2, 1, 0}, &s);
  EXPECT_TRUE(tensor_close(transpose(x), s, float64, rev, 0, 0));
  EXPECT_EQ(swapaxes(x, 0, -1).shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(values_of(swapaxes(x, 0, -1)), rev);
  Shape ms;
  const auto mv = ref_transpose(values_of(x), {2, 3, 4}, {1, 2, 0}, &ms);
  EXPECT_TRUE(tensor_close(moveaxis(x, 0, -1), ms, float64, mv, 0, 0));
  // Transposing a large 2-D tensor (blocked kernels have edge tiles).
  Tensor big = iota_f64({37, 70});
  const auto bv = ref_transpose(values_of(big), {37, 70}, {1, 0}, &s);
  EXPECT_TRUE(tensor_close(transpose(big), {70, 37}, float64, bv, 0, 0));
}

TEST(ShapeOpsTest, ExpandSqueezeBroadcast) {
  Tensor x = iota_f64({2, 3});
  EXPECT_EQ(expand_dims(x, -1).shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(expand_dims(x, 0).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(expand_dims(x, 1).shape(), (Shape{2, 1, 3}));
  Tensor y = iota_f64({1, 3, 1});
  EXPECT_EQ(squeeze(y).shape(), (Shape{3}));
  EXPECT_EQ(squeeze(y, {-1}).shape(), (Shape{1, 3}));
  EXPECT_TRUE(tensor_close(broadcast_to(tensor_of({1, 2, 3}, {3}), {2, 3}), {2, 3}, float64,
                           {1, 2, 3, 1, 2, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(broadcast_in_dim(tensor_of({1, 2, 3}, {3}), {3, 2}, {0}), {3, 2},
                           float64, {1, 1, 2, 2, 3, 3}, 0, 0));
  Tensor z = broadcast_in_dim(tensor_of({1, 2}, {2, 1}), {2, 3, 4}, {0, 2});
  std::vector<double> want;
  for (int i = 0; i < 24; ++i) want.push_back(i < 12 ? 1 : 2);
  EXPECT_TRUE(tensor_close(z, {2, 3, 4}, float64, want, 0, 0));
  // A broadcast result can be computed with.
  EXPECT_TRUE(
      tensor_close(sum(broadcast_to(scalar(2.0, float64), {3, 5})), {}, float64, {30}, 0, 0));
}

TEST(ShapeOpsTest, SliceWithStrides) {
  Tensor x = iota_f64({5, 6});
  EXPECT_TRUE(
      tensor_close(slice(x, {1, 0}, {5, 6}, {2, 3}), {2, 2}, float64, {6, 9, 18, 21}, 0, 0));
  EXPECT_TRUE(tensor_close(slice(x, {1, 2}, {3, 4}), {2, 2}, float64, {8, 9, 14, 15}, 0, 0));
  EXPECT_TRUE(tensor_close(slice_axis(x, 1, -4, -1, 2), {5, 2}, float64,
                           {2, 4, 8, 10, 14, 16, 20, 22, 26, 28}, 0, 0));
  EXPECT_TRUE(tensor_close(slice_axis(x, 0, 3, 100), {2, 6}, float64,
                           {18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29}, 0, 0));
  EXPECT_EQ(slice_axis(x, 0, 4, 2).shape(), (Shape{0, 6}));
  // Slices of slices compose.
  EXPECT_TRUE(tensor_close(slice(slice(x, {1, 1}, {5, 6}), {1, 0}, {3, 5}, {1, 2}), {2, 3}, float64,
                           {13, 15, 17, 19, 21, 23}, 0, 0));
}

TEST(ShapeOpsTest, DynamicSliceClampsStarts) {
  Tensor x = iota_f64({5, 4});
  Tensor s = array(std::vector<int32_t>{1, 2}, {2});
  EXPECT_TRUE(tensor_close(dynamic_slice(x, s, {2, 2}), {2, 2}, float64, {6, 7, 10, 11}, 0, 0));
  // Starts past the end (or negative) are clamped so the window fits, as lax.dynamic_slice does.
  Tensor far = array(std::vector<int32_t>{4, -1}, {2});
  EXPECT_TRUE(tensor_close(dynamic_slice(x, far, {2, 2}), {2, 2}, float64, {12, 13, 16, 17}, 0, 0));
  Tensor u = tensor_of({-1, -2, -3, -4}, {2, 2});
  std::vector<double> want = values_of(x);
  want[6] = -1, want[7] = -2, want[10] = -3, want[11] = -4;
  EXPECT_TRUE(tensor_close(dynamic_update_slice(x, u, s), {5, 4}, float64, want, 0, 0));
  std::vector<double> want2 = values_of(x);
  want2[12] = -1, want2[13] = -2, want2[16] = -3, want2[17] = -4;
  EXPECT_TRUE(tensor_close(dynamic_update_slice(x, u, far), {5, 4}, float64, want2, 0, 0));
  // The operand itself is unchanged (tensors are immutable).
  EXPECT_EQ(values_of(x)[6], 6);
}

TEST(ShapeOpsTest, ConcatenateStackSplit) {
  Tensor a = iota_f64({2, 1}), b = iota_f64({2, 3}) + 10.0, e = zeros({2, 0}, float64);
  EXPECT_TRUE(tensor_close(concatenate({a, b, e}, 1), {2, 4}, float64,
                           {0, 10, 11, 12, 1, 13, 14, 15}, 0, 0));
  EXPECT_TRUE(tensor_close(concatenate({b, b}, -2), {4, 3}, float64,
                           {10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14, 15}, 0, 0));
  Tensor s = stack({b, b * 2.0, b * 3.0}, -1);
  EXPECT_EQ(s.shape(), (Shape{2, 3, 3}));
  EXPECT_EQ(values_of(s)[0 * 9 + 1 * 3 + 2], 33);  // s[0, 1, 2] = 3 * b[0, 1]
  EXPECT_EQ(stack({b, b}).shape(), (Shape{2, 2, 3}));
  // Mixed dtypes concatenate in the promoted type.
  Tensor c = concatenate({array(std::vector<int32_t>{1}, {1}), tensor_of({0.5}, {1}, float32)});
  EXPECT_TRUE(tensor_close(c, {2}, float32, {1, 0.5}, 0, 0));

  auto parts = split(iota_f64({6, 2}), 3, 0);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_TRUE(tensor_close(parts[1], {2, 2}, float64, {4, 5, 6, 7}, 0, 0));
  auto uneven = split(iota_f64({7}), std::vector<int64_t>{2, 5});
  ASSERT_EQ(uneven.size(), 3u);
  EXPECT_TRUE(tensor_close(uneven[0], {2}, float64, {0, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(uneven[1], {3}, float64, {2, 3, 4}, 0, 0));
  EXPECT_TRUE(tensor_close(uneven[2], {2}, float64, {5, 6}, 0, 0));
  auto cols = split(iota_f64({2, 4}), 2, -1);
  EXPECT_TRUE(tensor_close(cols[1], {2, 2}, float64, {2, 3, 6, 7}, 0, 0));
}

// lax.pad reference: dilate by `interior`, then add low/high (negative crops).
std::vector<double> ref_pad(const std::vector<double>& x, const Shape& s, double value,
                            const Shape& lo, const Shape& hi, const Shape& in, Shape* out_shape) {
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) {
    out.push_back(lo[d] + hi[d] + s[d] + std::max<int64_t>(s[d] - 1, 0) * in[d]);
  }
  std::vector<double> y(size_t(num_elements(out)), value);
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    auto idx = unravel(i, s);
    bool inside = true;
    for (size_t d = 0; d < s.size(); ++d) {
      idx[d] = lo[d] + idx[d] * (in[d] + 1);
      inside = inside && idx[d] >= 0 && idx[d] < out[d];
    }
    if (inside) y[size_t(ravel(idx, out))] = x[size_t(i)];
  }
  *out_shape = out;
  return y;
}

TEST(ShapeOpsTest, PadConstantWidths) {
  Tensor x = iota_f64({2, 3}) + 1.0;
  Shape s;
  auto want = ref_pad(values_of(x), {2, 3}, 7, {1, 2}, {0, 1}, {0, 0}, &s);
  EXPECT_TRUE(tensor_close(pad(x, {{1, 0}, {2, 1}}, 7.0), s, float64, want, 0, 0));
  EXPECT_EQ(s, (Shape{3, 6}));
}

TEST(ShapeOpsTest, PadGeneralInteriorAndNegative) {
  Tensor x = iota_f64({3, 4}) + 1.0;
  struct Case {
    Shape lo, hi, in;
  };
  for (const Case& c : {Case{{1, -1}, {2, 0}, {1, 2}}, Case{{-1, 0}, {-1, -2}, {0, 1}},
                        Case{{0, 3}, {0, -3}, {2, 0}}, Case{{-2, -3}, {1, 0}, {1, 1}}}) {
    Shape s;
    auto want = ref_pad(values_of(x), {3, 4}, -0.5, c.lo, c.hi, c.in, &s);
    EXPECT_TRUE(tensor_close(pad_general(x, scalar(-0.5, float64), c.lo, c.hi, c.in), s, float64,
                             want, 0, 0))
        << shape_str(c.lo) << shape_str(c.hi) << shape_str(c.in);
  }
}

// ---------------------------------------------------------------- indexing

TEST(IndexingTest, TakeWithNegativeIndices) {
  Tensor x = iota_f64({4, 3});
  Tensor idx = array(std::vector<int32_t>{-1, 0, 2, -4}, {2, 2});
  // axis 0: out[i, j, :] = x[idx[i, j], :]
  EXPECT_TRUE(tensor_close(take(x, idx, 0), {2, 2, 3}, float64,
                           {9, 10, 11, 0, 1, 2, 6, 7, 8, 0, 1, 2}, 0, 0));
  Tensor idx1 = array(std::vector<int32_t>{2, -1, 0}, {3});
  EXPECT_TRUE(tensor_close(take(x, idx1, 1), {4, 3}, float64,
                           {2, 2, 0, 5, 5, 3, 8, 8, 6, 11, 11, 9}, 0, 0));
  Tensor idx64 = array(std::vector<int64_t>{3, 1}, {2});
  EXPECT_TRUE(tensor_close(take(x, idx64, -2), {2, 3}, float64, {9, 10, 11, 3, 4, 5}, 0, 0));
}

TEST(IndexingTest, GatherPrimitiveClampsOutOfRange) {
  Tensor x = tensor_of({10, 11, 12, 13}, {4});
  Tensor idx = array(std::vector<int32_t>{5, -1, -10, 1}, {4});
  Tensor y = Tensor::make(std::make_shared<Gather>(0), {x, idx});
  EXPECT_TRUE(tensor_close(y, {4}, float64, {13, 13, 10, 11}, 0, 0));
}

TEST(IndexingTest, TakeFromMiddleAxisOfRank3) {
  Tensor x = iota_f64({2, 3, 4});
  Tensor idx = array(std::vector<int32_t>{2, 0, -1, 1}, {2, 2});
  // out[a, i, j, c] = x[a, idx[i, j], c]: shape (2, 2, 2, 4).
  std::vector<double> want;
  const auto xv = values_of(x);
  const int32_t iv[] = {2, 0, 2, 1};
  for (int a = 0; a < 2; ++a)
    for (int k = 0; k < 4; ++k)
      for (int c = 0; c < 4; ++c) want.push_back(xv[size_t(a * 12 + iv[k] * 4 + c)]);
  EXPECT_TRUE(tensor_close(take(x, idx, 1), {2, 2, 2, 4}, float64, want, 0, 0));
  EXPECT_TRUE(tensor_close(one_hot(array(std::vector<int32_t>{1}, {1}), 3, int32), {1, 3}, int32,
                           {0, 1, 0}, 0, 0));
}

TEST(IndexingTest, TakeAlongAxis) {
  Tensor x = iota_f64({3, 4});
  Tensor idx = array(std::vector<int32_t>{3, 0, -1, 1, 2, 2}, {3, 2});
  EXPECT_TRUE(
      tensor_close(take_along_axis(x, idx, 1), {3, 2}, float64, {3, 0, 7, 5, 10, 10}, 0, 0));
  Tensor idx0 = array(std::vector<int32_t>{2, 0, 1, 2}, {1, 4});
  EXPECT_TRUE(tensor_close(take_along_axis(x, idx0, 0), {1, 4}, float64, {8, 1, 6, 11}, 0, 0));
}

TEST(IndexingTest, ScatterAddAccumulatesRepeatedIndices) {
  Tensor x = zeros({5, 2}, float64) + 1.0;
  Tensor idx = array(std::vector<int32_t>{0, 2, 0, -1}, {4});
  Tensor upd = tensor_of({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2});
  EXPECT_TRUE(tensor_close(scatter_add(x, idx, upd), {5, 2}, float64,
                           {7, 9, 1, 1, 4, 5, 1, 1, 8, 9}, 0, 0));
  // Along axis 1, updates of shape x.shape[:1] + idx.shape.
  Tensor idx1 = array(std::vector<int32_t>{1, 1}, {2});
  Tensor upd1 = tensor_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {5, 2});
  EXPECT_TRUE(tensor_close(scatter_add(x, idx1, upd1, 1), {5, 2}, float64,
                           {1, 4, 1, 8, 1, 12, 1, 16, 1, 20}, 0, 0));
}

TEST(IndexingTest, OneHotZeroRowsOutOfRange) {
  Tensor labels = array(std::vector<int32_t>{0, 2, -1, 3}, {4});
  EXPECT_TRUE(tensor_close(one_hot(labels, 3), {4, 3}, float32,
                           {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 0, 0));
  Tensor l2 = array(std::vector<int32_t>{1, 0}, {2, 1});
  EXPECT_TRUE(tensor_close(one_hot(l2, 2, bfloat16), {2, 1, 2}, bfloat16, {0, 1, 1, 0}, 0, 0));
}

TEST(IndexingTest, TrilTriu) {
  Tensor x = iota_f64({3, 4}) + 1.0;
  auto ref = [&](int k, bool lower) {
    std::vector<double> v = values_of(x);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 4; ++j) {
        const bool keep = lower ? j - i <= k : j - i >= k;
        if (!keep) v[size_t(i * 4 + j)] = 0;
      }
    }
    return v;
  };
  for (int k : {-1, 0, 1, 3}) {
    EXPECT_TRUE(tensor_close(tril(x, k), {3, 4}, float64, ref(k, true), 0, 0)) << k;
    EXPECT_TRUE(tensor_close(triu(x, k), {3, 4}, float64, ref(k, false), 0, 0)) << k;
  }
  // Batched: applies to the last two axes.
  Tensor b = stack({x, x});
  auto lo = ref(0, true);
  std::vector<double> want = lo;
  want.insert(want.end(), lo.begin(), lo.end());
  EXPECT_TRUE(tensor_close(tril(b), {2, 3, 4}, float64, want, 0, 0));
}

// ---------------------------------------------------------------- reductions

TEST(ReduceTest, SumMaxMinProdOverAxesMatchReference) {
  const Shape s = {2, 3, 4};
  Tensor x = tensor_of(random_values(24, -2, 2, 17), s);
  const auto xv = values_of(x);
  struct Op {
    const char* name;
    std::function<Tensor(const Tensor&, std::vector<int>, bool)> op;
    double init;
    std::function<double(double, double)> f;
  };
  const std::vector<Op> ops = {
      {"sum", [](const Tensor& t, auto a, bool k) { return sum(t, a, k); }, 0,
       [](double a, double b) { return a + b; }},
      {"max", [](const Tensor& t, auto a, bool k) { return max(t, a, k); }, -kInf,
       [](double a, double b) { return std::max(a, b); }},
      {"min", [](const Tensor& t, auto a, bool k) { return min(t, a, k); }, kInf,
       [](double a, double b) { return std::min(a, b); }},
      {"prod", [](const Tensor& t, auto a, bool k) { return prod(t, a, k); }, 1,
       [](double a, double b) { return a * b; }},
  };
  const std::vector<std::pair<std::vector<int>, std::vector<int>>> axes = {
      {{0}, {0}}, {{1}, {1}}, {{-1}, {2}}, {{0, 2}, {0, 2}}, {{2, 0}, {0, 2}}, {{}, {0, 1, 2}}};
  for (const auto& op : ops) {
    for (const auto& [given, norm] : axes) {
      for (bool keep : {false, true}) {
        Shape rs;
        auto want = ref_reduce(xv, s, norm, op.init, op.f, &rs);
        if (keep) {
          rs = s;
          for (int a : norm) rs[a] = 1;
        }
        EXPECT_TRUE(tensor_close(op.op(x, given, keep), rs, float64, want, 1e-14, 1e-15))
            << op.name << " axes " << given.size() << " keepdims " << keep;
      }
    }
  }
}

TEST(ReduceTest, LargeFloat32SumMatchesReference) {
  // Integer-valued floats below 2^24 sum exactly in any order: every element must be counted once.
  EXPECT_EQ(sum(ones({1000003}, float32)).item<double>(), 1000003.0);
  EXPECT_TRUE(
      tensor_close(sum(ones({3, 70001}, float32), {1}), {3}, float32, {70001, 70001, 70001}, 0, 0));
  const int64_t n = 1 << 18;
  Tensor x = tensor_of(random_values(n, 0, 1, 23), {64, n / 64}, float32);
  const auto xv = values_of(x);
  double total = 0;
  for (double v : xv) total += v;
  EXPECT_TRUE(all_close(values_of(sum(x)), {total}, 1e-5, 0));
  std::vector<double> rows(64, 0.0);
  for (int64_t i = 0; i < n; ++i) rows[size_t(i / (n / 64))] += xv[size_t(i)];
  EXPECT_TRUE(all_close(values_of(sum(x, {1})), rows, 1e-5, 0));
  std::vector<double> cols(size_t(n / 64), 0.0);
  for (int64_t i = 0; i < n; ++i) cols[size_t(i % (n / 64))] += xv[size_t(i)];
  EXPECT_TRUE(all_close(values_of(sum(x, {0})), cols, 1e-6, 0));
}

TEST(ReduceTest, ResultDtypes) {
  Tensor i = array(std::vector<int32_t>{1, 2, 3, 4}, {2, 2});
  EXPECT_TRUE(tensor_close(sum(i), {}, int32, {10}, 0, 0));
  EXPECT_TRUE(tensor_close(max(i, {0}), {2}, int32, {3, 4}, 0, 0));
  EXPECT_TRUE(tensor_close(mean(i), {}, float32, {2.5}, 0, 0));
  Tensor b = array(std::vector<bool>{true, false, true, true}, {2, 2});
  EXPECT_TRUE(tensor_close(sum(b), {}, int32, {3}, 0, 0));
  EXPECT_EQ(any(b, {1}).to_vector<bool>(), (std::vector<bool>{true, true}));
  EXPECT_EQ(all(b, {1}).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(all(b, {1}).dtype(), bool_);
  EXPECT_EQ(any(b, {0}, true).shape(), (Shape{1, 2}));
  EXPECT_EQ(sum(tensor_of({1, 2}, {2}, bfloat16)).dtype(), bfloat16);
}

TEST(ReduceTest, MeanAndVarMatchNumpy) {
  const Shape s = {3, 5};
  Tensor x = tensor_of(random_values(15, -3, 3, 29), s);
  const auto xv = values_of(x);
  std::vector<double> m(3, 0), v(3, 0);
  for (int i = 0; i < 15; ++i) m[size_t(i / 5)] += xv[size_t(i)] / 5;
  for (int i = 0; i < 15; ++i)
    v[size_t(i / 5)] += std::pow(xv[size_t(i)] - m[size_t(i / 5)], 2) / 5;
  EXPECT_TRUE(tensor_close(mean(x, {1}), {3}, float64, m, 1e-14, 1e-15));
  EXPECT_TRUE(tensor_close(var(x, {-1}), {3}, float64, v, 1e-13, 1e-15));
  EXPECT_TRUE(tensor_close(var(x, {1}, true), {3, 1}, float64, v, 1e-13, 1e-15));
  double tm = 0, tv = 0;
  for (double e : xv) tm += e / 15;
  for (double e : xv) tv += (e - tm) * (e - tm) / 15;
  EXPECT_TRUE(tensor_close(mean(x), {}, float64, {tm}, 1e-14, 1e-15));
  EXPECT_TRUE(tensor_close(var(x), {}, float64, {tv}, 1e-13, 1e-15));
  // var of a constant is exactly 0 even with a large offset (two-pass, not E[x^2] - E[x]^2).
  Tensor c = full({100}, 1e4 + 0.1, float32);
  EXPECT_LT(std::fabs(var(c).item<double>()), 1e-3);
}

TEST(ReduceTest, LogsumexpIsStable) {
  Tensor x = tensor_of({1000, 1001, 1002, -kInf}, {2, 2}, float32);
  const double l = 1001 + std::log(std::exp(-1.0) + 1 + std::exp(1.0));
  EXPECT_TRUE(tensor_close(logsumexp(x), {}, float32, {l}, 1e-6, 0));
  EXPECT_TRUE(tensor_close(logsumexp(x, {1}), {2}, float32,
                           {1000 + std::log1p(std::exp(1.0)), 1002}, 1e-6, 0));
  EXPECT_TRUE(tensor_close(logsumexp(x, {0}, true), {1, 2}, float32,
                           {1002 + std::log1p(std::exp(-2.0)), 1001}, 1e-6, 0));
  Tensor y = tensor_of(random_values(12, -3, 3, 31), {3, 4});
  const auto yv = values_of(y);
  std::vector<double> want(3, 0);
  for (int i = 0; i < 12; ++i) want[size_t(i / 4)] += std::exp(yv[size_t(i)]);
  for (double& w : want) w = std::log(w);
  EXPECT_TRUE(tensor_close(logsumexp(y, {-1}), {3}, float64, want, 1e-14, 0));
}

TEST(ReduceTest, ArgmaxTakesFirstOccurrence) {
  Tensor x = tensor_of({1, 3, 3, 0, 5, 5, 5, -1}, {2, 4}, float32);
  EXPECT_TRUE(tensor_close(argmax(x), {2}, int32, {1, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(argmin(x), {2}, int32, {3, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(argmax(x, 0), {4}, int32, {1, 1, 1, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(argmax(x, 1, true), {2, 1}, int32, {1, 0}, 0, 0));
  Tensor t = tensor_of({2, 0, 5, 0}, {4}, float32);
  EXPECT_TRUE(tensor_close(argmin(t), {}, int32, {1}, 0, 0));
  // NaN counts as the maximum (numpy and jax agree).
  Tensor n = tensor_of({1, kNaN, 5, kNaN}, {4}, float32);
  EXPECT_TRUE(tensor_close(argmax(n), {}, int32, {1}, 0, 0));
  Tensor i = array(std::vector<int32_t>{4, 9, 9}, {3});
  EXPECT_TRUE(tensor_close(argmax(i), {}, int32, {1}, 0, 0));
}

TEST(ReduceTest, CumsumForwardAndReverse) {
  const Shape s = {3, 4};
  Tensor x = tensor_of(random_values(12, -2, 2, 37), s);
  const auto xv = values_of(x);
  for (int axis : {0, 1, -1}) {
    const int a = axis < 0 ? axis + 2 : axis;
    for (bool rev : {false, true}) {
      std::vector<double> want(12, 0);
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 4; ++j) {
          double acc = 0;
          const int n = a == 0 ? 3 : 4, pos = a == 0 ? i : j;
          for (int k = 0; k < n; ++k) {
            if (rev ? k >= pos : k <= pos)
              acc += a == 0 ? xv[size_t(k * 4 + j)] : xv[size_t(i * 4 + k)];
          }
          want[size_t(i * 4 + j)] = acc;
        }
      }
      EXPECT_TRUE(tensor_close(cumsum(x, axis, rev), s, float64, want, 1e-14, 1e-15))
          << "axis " << axis << " reverse " << rev;
    }
  }
  Tensor i = array(std::vector<int32_t>{1, 2, 3}, {3});
  EXPECT_TRUE(tensor_close(cumsum(i), {3}, int32, {1, 3, 6}, 0, 0));
  EXPECT_TRUE(tensor_close(cumsum(i, 0, true), {3}, int32, {6, 5, 3}, 0, 0));
}

TEST(ReduceTest, NonContiguousAndBroadcastInputs) {
  const Shape s = {3, 4, 5};
  Tensor x = tensor_of(random_values(60, -2, 2, 39), s);
  Shape ts;
  const auto xt = ref_transpose(values_of(x), s, {2, 0, 1}, &ts);  // (5, 3, 4)
  Shape rs;
  auto want = ref_reduce(xt, ts, {1}, 0, std::plus<double>(), &rs);
  EXPECT_TRUE(tensor_close(sum(transpose(x, {2, 0, 1}), {1}), rs, float64, want, 1e-14, 1e-15));
  want = ref_reduce(
      xt, ts, {0, 2}, -kInf, [](double a, double b) { return std::max(a, b); }, &rs);
  EXPECT_TRUE(tensor_close(max(transpose(x, {2, 0, 1}), {0, 2}), rs, float64, want, 0, 0));
  // A strided slice and a broadcast (stride-0) operand.
  Tensor sl = slice(x, {0, 1, 0}, {3, 4, 5}, {2, 2, 3});  // (2, 2, 2)
  const auto sv = values_of(sl);
  want = ref_reduce(sv, {2, 2, 2}, {2}, 0, std::plus<double>(), &rs);
  EXPECT_TRUE(tensor_close(sum(sl, {-1}), rs, float64, want, 1e-14, 1e-15));
  std::vector<double> ev;
  for (double v : sv) ev.push_back(std::exp(v));
  EXPECT_TRUE(tensor_close(exp(sl), {2, 2, 2}, float64, ev, 1e-14, 0));
  Tensor b = broadcast_to(tensor_of({1, 2, 3}, {3, 1}), {3, 6});
  EXPECT_TRUE(tensor_close(sum(b, {1}), {3}, float64, {6, 12, 18}, 0, 0));
  EXPECT_TRUE(tensor_close(cumsum(b, 1), {3, 6}, float64,
                           {1, 2, 3, 4, 5, 6, 2, 4, 6, 8, 10, 12, 3, 6, 9, 12, 15, 18}, 0, 0));
  EXPECT_TRUE(
      tensor_close(softmax(b), {3, 6}, float64, std::vector<double>(18, 1.0 / 6), 1e-15, 0));
}

TEST(ReduceTest, IntegerReductions) {
  Tensor i = array(std::vector<int32_t>{3, -2, 7, 1, 0, -5}, {2, 3});
  EXPECT_TRUE(tensor_close(prod(i, {1}), {2}, int32, {-42, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(max(i, {1}), {2}, int32, {7, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(min(i), {}, int32, {-5}, 0, 0));
  EXPECT_TRUE(tensor_close(argmin(i, 0), {3}, int32, {1, 0, 1}, 0, 0));
  Tensor big = array(std::vector<int64_t>{int64_t(1) << 40, int64_t(1) << 40}, {2});
  EXPECT_TRUE(tensor_close(sum(big), {}, int64, {double(int64_t(1) << 41)}, 0, 0));
  // max over -inf entries and argmax on bf16.
  Tensor n = tensor_of({-kInf, -kInf}, {2}, float32);
  EXPECT_TRUE(all_close(values_of(max(n)), {-kInf}, 0, 0));
  EXPECT_TRUE(
      tensor_close(argmax(tensor_of({0.5, 2, 2, -1}, {4}, bfloat16)), {}, int32, {1}, 0, 0));
}

// ---------------------------------------------------------------- sorting

TEST(SortTest, SortAlongAxesAndNaNLast) {
  Tensor x = tensor_of({3, 1, 2, 9, -1, 0}, {3, 2});
  EXPECT_TRUE(tensor_close(sort(x, 0), {3, 2}, float64, {-1, 0, 2, 1, 3, 9}, 0, 0));
  EXPECT_TRUE(tensor_close(sort(x), {3, 2}, float64, {1, 3, 2, 9, -1, 0}, 0, 0));
  Tensor n = tensor_of({kNaN, 1, -kInf, 0, kInf}, {5}, float32);
  EXPECT_TRUE(all_close(values_of(sort(n)), {-kInf, 0, 1, kInf, kNaN}, 0, 0));
  EXPECT_TRUE(tensor_close(argsort(n), {5}, int32, {2, 3, 1, 4, 0}, 0, 0));
  Tensor big = tensor_of(random_values(1000, -1, 1, 41), {1000}, float32);
  auto sv = values_of(big);
  std::sort(sv.begin(), sv.end());
  EXPECT_TRUE(tensor_close(sort(big), {1000}, float32, sv, 0, 0));
}

TEST(SortTest, ArgsortIsStable) {
  Tensor x = array(std::vector<int32_t>{2, 1, 2, 1, 0, 2}, {6});
  EXPECT_TRUE(tensor_close(argsort(x), {6}, int32, {4, 1, 3, 0, 2, 5}, 0, 0));
  Tensor y = tensor_of({1, 1, 0, 1, 0, 0}, {2, 3}, float32);
  EXPECT_TRUE(tensor_close(argsort(y, 1), {2, 3}, int32, {2, 0, 1, 1, 2, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(argsort(y, 0), {2, 3}, int32, {0, 1, 0, 1, 0, 1}, 0, 0));
}

TEST(SortTest, TopKDescendingWithLowerIndexFirstOnTies) {
  Tensor x = tensor_of({1, 3, 3, 2, 3, 5, 4, 6, 0, -1}, {2, 5}, float32);
  TopK t = top_k(x, 2);
  EXPECT_TRUE(tensor_close(t.values, {2, 2}, float32, {3, 3, 6, 5}, 0, 0));
  EXPECT_TRUE(tensor_close(t.indices, {2, 2}, int32, {1, 2, 2, 0}, 0, 0));
  TopK all5 = top_k(x, 5);
  EXPECT_TRUE(tensor_close(all5.indices, {2, 5}, int32, {1, 2, 4, 3, 0, 2, 0, 1, 3, 4}, 0, 0));
}

TEST(SortTest, IntegerSortAndTopK) {
  Tensor i = array(std::vector<int32_t>{5, -1, 3, 3, 9, 0}, {6});
  EXPECT_TRUE(tensor_close(sort(i), {6}, int32, {-1, 0, 3, 3, 5, 9}, 0, 0));
  TopK t = top_k(i, 3);
  EXPECT_TRUE(tensor_close(t.values, {3}, int32, {9, 5, 3}, 0, 0));
  EXPECT_TRUE(tensor_close(t.indices, {3}, int32, {4, 0, 2}, 0, 0));
}

// ---------------------------------------------------------------- linear algebra

TEST(LinalgTest, DotGeneralWithBatchAndOddDimensionOrder) {
  struct Case {
    Shape sa, sb;
    std::vector<int> lc, rc, lb, rb;
  };
  const std::vector<Case> cases = {
      {{2, 3}, {3, 4}, {1}, {0}, {}, {}},
      {{3, 2}, {4, 3}, {0}, {1}, {}, {}},
      {{4, 2, 3}, {2, 5, 4}, {0}, {2}, {1}, {0}},
      {{2, 3, 4}, {4, 3, 5}, {1, 2}, {1, 0}, {}, {}},
      {{2, 3, 4, 5}, {5, 2, 3, 6}, {3}, {0}, {0, 1}, {1, 2}},
      {{3}, {3}, {0}, {0}, {}, {}},
      {{2, 3}, {4}, {}, {}, {}, {}},  // outer product
  };
  for (Dtype d : {float64, float32, int32}) {
    for (const auto& c : cases) {
      Tensor a = tensor_of(random_values(num_elements(c.sa), -2, 2, 43), c.sa, d);
      Tensor b = tensor_of(random_values(num_elements(c.sb), -2, 2, 44), c.sb, d);
      Shape os;
      auto want =
          ref_dot_general(values_of(a), c.sa, values_of(b), c.sb, c.lc, c.rc, c.lb, c.rb, &os);
      const double tol = d == float32 ? 1e-5 : d == float64 ? 1e-13 : 0;
      EXPECT_TRUE(tensor_close(dot_general(a, b, c.lc, c.rc, c.lb, c.rb), os, d, want, tol, tol))
          << shape_str(c.sa) << " x " << shape_str(c.sb) << " " << d;
    }
  }
}

TEST(LinalgTest, MatmulBroadcastsBatchDims) {
  Tensor a = tensor_of(random_values(24, -1, 1, 45), {2, 1, 3, 4}, float32);
  Tensor b = tensor_of(random_values(40, -1, 1, 46), {5, 4, 2}, float32);
  const auto av = values_of(a), bv = values_of(b);
  std::vector<double> want;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 5; ++j)
      for (int m = 0; m < 3; ++m)
        for (int n = 0; n < 2; ++n) {
          double s = 0;
          for (int k = 0; k < 4; ++k)
            s += av[size_t(i * 12 + m * 4 + k)] * bv[size_t(j * 8 + k * 2 + n)];
          want.push_back(s);
        }
  EXPECT_TRUE(tensor_close(matmul(a, b), {2, 5, 3, 2}, float32, want, 1e-5, 1e-6));
}

TEST(LinalgTest, MatmulVectorOperandsAreLikeNumpy) {
  Tensor v = tensor_of({1, 2, 3}, {3});
  Tensor m = tensor_of({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_TRUE(tensor_close(matmul(v, m), {2}, float64, {22, 28}, 0, 0));
  Tensor mt = tensor_of({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_TRUE(tensor_close(matmul(mt, v), {2}, float64, {14, 32}, 0, 0));
  EXPECT_TRUE(tensor_close(matmul(v, v), {}, float64, {14}, 0, 0));
  Tensor bm = tensor_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});
  EXPECT_TRUE(tensor_close(matmul(v, bm), {2, 2}, float64, {22, 28, 58, 64}, 0, 0));
}

TEST(LinalgTest, MatmulLargeAndHalfPrecision) {
  // Sizes that are not multiples of any blocking factor.
  const int64_t m = 67, k = 129, n = 33;
  Tensor a = tensor_of(random_values(m * k, -1, 1, 47), {m, k}, float32);
  Tensor b = tensor_of(random_values(k * n, -1, 1, 48), {k, n}, float32);
  Shape os;
  auto want = ref_dot_general(values_of(a), {m, k}, values_of(b), {k, n}, {1}, {0}, {}, {}, &os);
  EXPECT_TRUE(tensor_close(matmul(a, b), {m, n}, float32, want, 1e-5, 2e-5));
  // Contracting a transposed operand.
  EXPECT_TRUE(tensor_close(matmul(transpose(transpose(a)), b), {m, n}, float32, want, 1e-5, 2e-5));
  for (Dtype d : {bfloat16, float16}) {
    Tensor ah = astype(a, d), bh = astype(b, d);
    auto wh = ref_dot_general(values_of(ah), {m, k}, values_of(bh), {k, n}, {1}, {0}, {}, {}, &os);
    // f32 accumulation then one rounding: within a half ulp of the 16-bit type (plus slack).
    const double tol = d == bfloat16 ? 8e-3 : 1e-3;
    EXPECT_TRUE(tensor_close(matmul(ah, bh), {m, n}, d, wh, tol, tol)) << d;
  }
}

TEST(LinalgTest, EmptyContractionGivesZeros) {
  Tensor a = zeros({2, 0}, float32), b = zeros({0, 3}, float32);
  EXPECT_TRUE(tensor_close(matmul(a, b), {2, 3}, float32, std::vector<double>(6, 0.0), 0, 0));
  EXPECT_EQ(matmul(zeros({0, 4}, float32), ones({4, 3}, float32)).shape(), (Shape{0, 3}));
}

TEST(LinalgTest, EinsumMatchesReference) {
  Tensor a = tensor_of(random_values(24, -1, 1, 51), {2, 3, 4});
  Tensor b = tensor_of(random_values(40, -1, 1, 52), {2, 4, 5});
  Tensor m = tensor_of(random_values(12, -1, 1, 53), {3, 4});
  Tensor n = tensor_of(random_values(20, -1, 1, 54), {4, 5});
  Shape os;
  auto bmm =
      ref_dot_general(values_of(a), {2, 3, 4}, values_of(b), {2, 4, 5}, {2}, {1}, {0}, {0}, &os);
  EXPECT_TRUE(tensor_close(einsum("bij,bjk->bik", a, b), {2, 3, 5}, float64, bmm, 1e-14, 1e-15));
  EXPECT_TRUE(
      tensor_close(einsum("...ij,...jk->...ik", a, b), {2, 3, 5}, float64, bmm, 1e-14, 1e-15));
  auto mm = ref_dot_general(values_of(m), {3, 4}, values_of(n), {4, 5}, {1}, {0}, {}, {}, &os);
  EXPECT_TRUE(tensor_close(einsum("ij,jk->ik", m, n), {3, 5}, float64, mm, 1e-14, 1e-15));
  // Output in a different order: "ij,jk->ki" is the transpose.
  Shape ts;
  auto mmt = ref_transpose(mm, {3, 5}, {1, 0}, &ts);
  EXPECT_TRUE(tensor_close(einsum("ij,jk->ki", m, n), {5, 3}, float64, mmt, 1e-14, 1e-15));
  // Ellipsis broadcasting against a plain matrix.
  auto ae = ref_dot_general(values_of(a), {2, 3, 4}, values_of(n), {4, 5}, {2}, {0}, {}, {}, &os);
  EXPECT_TRUE(tensor_close(einsum("...j,jk->...k", a, n), {2, 3, 5}, float64, ae, 1e-14, 1e-15));
  // Single operand: transpose and sums.
  auto mt = ref_transpose(values_of(m), {3, 4}, {1, 0}, &ts);
  EXPECT_TRUE(tensor_close(einsum("ij->ji", m), {4, 3}, float64, mt, 0, 0));
  Shape rs;
  auto colsum = ref_reduce(values_of(m), {3, 4}, {0}, 0, std::plus<double>(), &rs);
  EXPECT_TRUE(tensor_close(einsum("ij->j", m), {4}, float64, colsum, 1e-14, 1e-15));
  // Outer product and full contraction.
  Tensor u = tensor_of({1, 2}, {2}), v = tensor_of({3, 4, 5}, {3});
  EXPECT_TRUE(tensor_close(einsum("i,j->ij", u, v), {2, 3}, float64, {3, 4, 5, 6, 8, 10}, 0, 0));
  double dot = 0;
  for (double e : values_of(m)) dot += e * e;
  EXPECT_TRUE(tensor_close(einsum("ij,ij->", m, m), {}, float64, {dot}, 1e-14, 0));
}

TEST(LinalgTest, EinsumThreeOperands) {
  Tensor m = tensor_of(random_values(12, -1, 1, 53), {3, 4});
  Tensor n = tensor_of(random_values(20, -1, 1, 54), {4, 5});
  Tensor p = tensor_of(random_values(10, -1, 1, 55), {5, 2});
  Shape os;
  auto mm = ref_dot_general(values_of(m), {3, 4}, values_of(n), {4, 5}, {1}, {0}, {}, {}, &os);
  auto mnp = ref_dot_general(mm, {3, 5}, values_of(p), {5, 2}, {1}, {0}, {}, {}, &os);
  EXPECT_TRUE(tensor_close(einsum("ij,jk,kl->il", {m, n, p}), {3, 2}, float64, mnp, 1e-13, 1e-14));
}

// Repeated letters within one operand (traces, diagonals): values as numpy if supported,
// otherwise an Error (never a crash or a wrong answer).
TEST(LinalgTest, EinsumRepeatedLettersGiveDiagonalOrError) {
  Tensor sq = tensor_of({1, 2, 3, 4, 5, 6, 7, 8, 9}, {3, 3});
  try {
    Tensor d = einsum("ii->i", sq);
    EXPECT_TRUE(tensor_close(d, {3}, float64, {1, 5, 9}, 0, 0));
  } catch (const Error&) {
  }
  try {
    Tensor t = einsum("ii->", sq);
    EXPECT_TRUE(tensor_close(t, {}, float64, {15}, 0, 0));
  } catch (const Error&) {
  }
}

// ---------------------------------------------------------------- fused

std::vector<double> ref_softmax(const std::vector<double>& x, int rows, int cols, bool log) {
  std::vector<double> y(x.size());
  for (int r = 0; r < rows; ++r) {
    double mx = -kInf, s = 0;
    for (int c = 0; c < cols; ++c) mx = std::max(mx, x[size_t(r * cols + c)]);
    for (int c = 0; c < cols; ++c) s += std::exp(x[size_t(r * cols + c)] - mx);
    for (int c = 0; c < cols; ++c) {
      const double z = x[size_t(r * cols + c)] - mx;
      y[size_t(r * cols + c)] = log ? z - std::log(s) : std::exp(z) / s;
    }
  }
  return y;
}

TEST(SoftmaxTest, MatchesReferenceOnBothAxes) {
  Tensor x = tensor_of(random_values(15, -5, 5, 61), {3, 5});
  const auto xv = values_of(x);
  for (bool log : {false, true}) {
    auto f = [&](const Tensor& t, int axis) {
      return log ? log_softmax(t, axis) : softmax(t, axis);
    };
    EXPECT_TRUE(tensor_close(f(x, -1), {3, 5}, float64, ref_softmax(xv, 3, 5, log), 1e-14, 1e-16));
    Shape ts;
    auto xt = ref_transpose(xv, {3, 5}, {1, 0}, &ts);
    auto yt = ref_softmax(xt, 5, 3, log);
    auto y = ref_transpose(yt, {5, 3}, {1, 0}, &ts);
    EXPECT_TRUE(tensor_close(f(x, 0), {3, 5}, float64, y, 1e-14, 1e-16));
    Tensor x32 = astype(x, float32);
    EXPECT_TRUE(tensor_close(f(x32, 1), {3, 5}, float32, ref_softmax(values_of(x32), 3, 5, log),
                             2e-6, 1e-7));
    Tensor xb = astype(x, bfloat16);
    EXPECT_TRUE(tensor_close(f(xb, 1), {3, 5}, bfloat16, ref_softmax(values_of(xb), 3, 5, log),
                             8e-3, 1e-3));
  }
}

TEST(SoftmaxTest, StableForLargeAndInfiniteInputs) {
  Tensor x = tensor_of({1000, 1001, 1002, -kInf}, {1, 4}, float32);
  auto p = values_of(softmax(x));
  const double z = std::exp(-2.0) + std::exp(-1.0) + 1;
  EXPECT_TRUE(all_close(p, {std::exp(-2.0) / z, std::exp(-1.0) / z, 1 / z, 0}, 1e-6, 0));
  auto lp = values_of(log_softmax(x));
  EXPECT_TRUE(all_close(lp, {-2 - std::log(z), -1 - std::log(z), -std::log(z), -kInf}, 1e-6, 0));
  // A long row (beyond a vector width / chunk).
  Tensor r = tensor_of(random_values(3000, -20, 20, 62), {2, 1500}, float32);
  EXPECT_TRUE(tensor_close(softmax(r), {2, 1500}, float32,
                           ref_softmax(values_of(r), 2, 1500, false), 5e-6, 1e-9));
}

// ---------------------------------------------------------------- empty and rank-0

TEST(EdgeShapesTest, EmptyTensorsFlowThroughOps) {
  Tensor e = zeros({0, 3}, float32);
  EXPECT_EQ(add(e, ones({3}, float32)).shape(), (Shape{0, 3}));
  EXPECT_EQ(exp(e).size(), 0);
  EXPECT_TRUE(tensor_close(sum(e, {0}), {3}, float32, {0, 0, 0}, 0, 0));
  EXPECT_TRUE(tensor_close(prod(e, {0}), {3}, float32, {1, 1, 1}, 0, 0));
  EXPECT_TRUE(tensor_close(sum(e), {}, float32, {0}, 0, 0));
  EXPECT_EQ(sum(e, {1}).shape(), (Shape{0}));
  EXPECT_TRUE(std::isnan(mean(e).item<float>()));
  EXPECT_EQ(reshape(e, {3, 0}).shape(), (Shape{3, 0}));
  EXPECT_EQ(transpose(e).shape(), (Shape{3, 0}));
  EXPECT_EQ(cumsum(e, 0).shape(), (Shape{0, 3}));
  EXPECT_EQ(sort(e, 0).shape(), (Shape{0, 3}));
  EXPECT_EQ(softmax(e).shape(), (Shape{0, 3}));
  EXPECT_TRUE(
      tensor_close(concatenate({e, ones({1, 3}, float32)}), {1, 3}, float32, {1, 1, 1}, 0, 0));
  EXPECT_EQ(take(ones({4}, float32), zeros({0}, int32)).shape(), (Shape{0}));
  EXPECT_EQ(e.to_vector<float>().size(), 0u);
  EXPECT_EQ(astype(e, bfloat16).shape(), (Shape{0, 3}));
}

TEST(EdgeShapesTest, RankZeroTensors) {
  Tensor s = scalar(2.0, float64);
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.size(), 1);
  EXPECT_TRUE(tensor_close(exp(s), {}, float64, {std::exp(2.0)}, 1e-15, 0));
  EXPECT_TRUE(tensor_close(s * s, {}, float64, {4}, 0, 0));
  EXPECT_TRUE(tensor_close(sum(s), {}, float64, {2}, 0, 0));
  EXPECT_TRUE(tensor_close(reshape(s, {1, 1}), {1, 1}, float64, {2}, 0, 0));
  EXPECT_TRUE(tensor_close(reshape(ones({1, 1}, float64), {}), {}, float64, {1}, 0, 0));
  EXPECT_TRUE(tensor_close(broadcast_to(s, {2, 2}), {2, 2}, float64, {2, 2, 2, 2}, 0, 0));
  EXPECT_TRUE(tensor_close(add(s, tensor_of({1, 2}, {2})), {2}, float64, {3, 4}, 0, 0));
  EXPECT_TRUE(tensor_close(transpose(s), {}, float64, {2}, 0, 0));
  EXPECT_TRUE(tensor_close(expand_dims(s, 0), {1}, float64, {2}, 0, 0));
  EXPECT_EQ(s.item<double>(), 2.0);
  EXPECT_EQ(astype(s, int32).item<int32_t>(), 2);
}

// ---------------------------------------------------------------- laziness and printing

TEST(LazinessTest, OpsRecordAndEvalMaterialises) {
  Tensor a = tensor_of({1, 2, 3}, {3}, float32);
  EXPECT_TRUE(a.is_evaluated());
  Tensor b = exp(a);
  Tensor c = b * 2.0;
  EXPECT_FALSE(b.is_evaluated());
  EXPECT_FALSE(c.is_evaluated());
  EXPECT_EQ(c.shape(), (Shape{3}));  // shape and dtype known before evaluation
  EXPECT_EQ(c.dtype(), float32);
  EXPECT_NE(c.primitive(), nullptr);
  eval(c);
  EXPECT_TRUE(c.is_evaluated());
  // Evaluated tensors drop their graph.
  EXPECT_TRUE(c.inputs().empty());
  EXPECT_TRUE(
      all_close(values_of(c), {2 * std::exp(1.0), 2 * std::exp(2.0), 2 * std::exp(3.0)}, 1e-6, 0));
}

TEST(LazinessTest, ReadingDataEvaluatesImplicitly) {
  Tensor x = sum(tensor_of({1, 2, 3}, {3}, float32));
  EXPECT_FALSE(x.is_evaluated());
  EXPECT_EQ(x.item<float>(), 6.0f);
  EXPECT_TRUE(x.is_evaluated());
  Tensor y = arange(4) * 3;
  EXPECT_FALSE(y.is_evaluated());
  EXPECT_EQ(y.to_vector<int32_t>(), (std::vector<int32_t>{0, 3, 6, 9}));
  EXPECT_TRUE(y.is_evaluated());
  Tensor z = negative(y);
  std::ostringstream os;
  os << z;
  EXPECT_TRUE(z.is_evaluated());
}

TEST(LazinessTest, SharedSubgraphEvaluatesOnce) {
  Tensor a = tensor_of({1, 2}, {2}, float32);
  Tensor b = exp(a);
  Tensor c = b + 1.0, d = b * 3.0;
  eval(c, d);
  EXPECT_TRUE(all_close(values_of(c), {std::exp(1.0) + 1, std::exp(2.0) + 1}, 1e-6, 0));
  EXPECT_TRUE(all_close(values_of(d), {3 * std::exp(1.0), 3 * std::exp(2.0)}, 1e-6, 0));
  // b was an intermediate, but the caller still holds it: reading it works.
  EXPECT_TRUE(all_close(values_of(b), {std::exp(1.0), std::exp(2.0)}, 1e-6, 0));
}

TEST(LazinessTest, NoMemoryIsUsedUntilEvalAndIntermediatesAreFreed) {
  Tensor x = tensor_of(random_values(1 << 18, -1, 1, 71), {512, 512}, float32);
  auto& alloc = CpuAllocator::instance();
  const size_t before = alloc.bytes_in_use();
  Tensor y = exp(x) * 2.0 + sin(x);
  // Scalar constants (the 2.0) may be materialised; no buffer of the result's size is.
  EXPECT_LT(alloc.bytes_in_use() - before, size_t(4096)) << "building the graph computed values";
  EXPECT_FALSE(y.is_evaluated());
  eval(y);
  // Only y's buffer stays alive: exp(x), the product and sin(x) were released after use.
  EXPECT_LE(alloc.bytes_in_use() - before, CpuAllocator::round_size(size_t(1) << 20) + 4096);
  EXPECT_GE(alloc.bytes_in_use() - before, size_t(1) << 20);
}

std::string to_string(const Tensor& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

TEST(PrintTest, PrintsLikeNumpy) {
  EXPECT_EQ(to_string(array(std::vector<int32_t>{1, 2, 3, 4}, {2, 2})),
            "array([[1, 2],\n       [3, 4]], dtype=int32)");
  EXPECT_EQ(to_string(scalar(3.0, float32)), "array(3., dtype=float32)");
  EXPECT_EQ(to_string(array(std::vector<int32_t>{5, -6}, {2})), "array([5, -6], dtype=int32)");
  const std::string f = to_string(tensor_of({1, 2.5, -3}, {3}, float32));
  EXPECT_EQ(f.rfind("array([", 0), 0u) << f;
  EXPECT_NE(f.find("2.5"), std::string::npos) << f;
  EXPECT_NE(f.find("-3."), std::string::npos) << f;
  EXPECT_NE(f.find("dtype=float32)"), std::string::npos) << f;
  const std::string b = to_string(array(std::vector<bool>{true, false}, {2}));
  EXPECT_NE(b.find("True"), std::string::npos) << b;
  EXPECT_NE(b.find("False"), std::string::npos) << b;
  const std::string n = to_string(tensor_of({kNaN, kInf, -kInf}, {3}, float32));
  EXPECT_NE(n.find("nan"), std::string::npos) << n;
  EXPECT_NE(n.find("-inf"), std::string::npos) << n;
  // Long axes are summarised with "...".
  const std::string l = to_string(arange(100));
  EXPECT_NE(l.find("..."), std::string::npos) << l;
  EXPECT_NE(l.find("99"), std::string::npos) << l;
  EXPECT_EQ(l.find("50"), std::string::npos) << l;
  EXPECT_EQ(to_string(zeros({0, 2})), "array([], shape=(0, 2), dtype=float32)");
  EXPECT_NE(to_string(tensor_of({1.5}, {1}, bfloat16)).find("dtype=bfloat16"), std::string::npos);
}

}  // namespace
}  // namespace axlearn
