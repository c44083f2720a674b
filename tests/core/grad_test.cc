// Reverse-mode autodiff: every differentiable primitive's VJP (through the ops that use it)
// against central finite differences in float64, plus second order, stop_gradient, argnums and
// tree gradients.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>

#include "axlearn/core/nested.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::check_vjp;
using testing::random_away_from_zero;
using testing::random_values;
using testing::tensor_close;
using testing::tensor_of;
using testing::values_of;
using Args = std::vector<Tensor>;

Tensor rnd(const Shape& s, double lo, double hi, uint32_t seed) {
  return tensor_of(random_values(num_elements(s), lo, hi, seed), s);
}
Tensor rnd_away(const Shape& s, double lo, double hi, double gap, uint32_t seed) {
  return tensor_of(random_away_from_zero(num_elements(s), lo, hi, gap, seed), s);
}
// Values whose fractional part lies in [0.1, 0.4]: away from the jumps of floor/ceil/round.
Tensor rnd_off_grid(const Shape& s, uint32_t seed) {
  auto v = random_values(num_elements(s), -3, 3, seed);
  for (double& x : v) x = std::floor(x) + 0.1 + 0.3 * (x - std::floor(x));
  return tensor_of(v, s);
}

// The checker itself must notice a wrong VJP: stop_gradient hides half of d(x^2)/dx from
// autodiff, but not from finite differences.
void check_wrong_vjp() {
  check_vjp([](const Args& a) { return a[0] * stop_gradient(a[0]); }, {tensor_of({-1.5}, {1})});
}

TEST(GradTest, CheckerDetectsWrongVjp) {
  EXPECT_NONFATAL_FAILURE(check_wrong_vjp(), "finite difference");
}

// ---------------------------------------------------------------- unary

struct UnaryGradCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  Tensor input;
};

TEST(GradTest, UnaryOpsMatchFiniteDifferences) {
  const Shape s = {2, 3};
  const std::vector<UnaryGradCase> cases = {
      {"negative", [](const Tensor& x) { return negative(x); }, rnd(s, -2, 2, 1)},
      {"abs", [](const Tensor& x) { return abs(x); }, rnd_away(s, -2, 2, 0.1, 2)},
      {"sign", [](const Tensor& x) { return sign(x); }, rnd_away(s, -2, 2, 0.1, 3)},
      {"exp", [](const Tensor& x) { return exp(x); }, rnd(s, -2, 2, 4)},
      {"expm1", [](const Tensor& x) { return expm1(x); }, rnd(s, -2, 2, 5)},
      {"log", [](const Tensor& x) { return log(x); }, rnd(s, 0.2, 3, 6)},
      {"log1p", [](const Tensor& x) { return log1p(x); }, rnd(s, -0.7, 3, 7)},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, rnd(s, 0.2, 3, 8)},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, rnd(s, 0.2, 3, 9)},
      {"square", [](const Tensor& x) { return square(x); }, rnd(s, -2, 2, 10)},
      {"reciprocal", [](const Tensor& x) { return reciprocal(x); }, rnd_away(s, -3, 3, 0.3, 11)},
      {"tanh", [](const Tensor& x) { return tanh(x); }, rnd(s, -2, 2, 12)},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, rnd(s, -4, 4, 13)},
      {"erf", [](const Tensor& x) { return erf(x); }, rnd(s, -2, 2, 14)},
      {"erfinv", [](const Tensor& x) { return erfinv(x); }, rnd(s, -0.8, 0.8, 15)},
      {"sin", [](const Tensor& x) { return sin(x); }, rnd(s, -4, 4, 16)},
      {"cos", [](const Tensor& x) { return cos(x); }, rnd(s, -4, 4, 17)},
      {"floor", [](const Tensor& x) { return floor(x); }, rnd_off_grid(s, 18)},
      {"ceil", [](const Tensor& x) { return ceil(x); }, rnd_off_grid(s, 19)},
      {"round", [](const Tensor& x) { return round(x); }, rnd_off_grid(s, 20)},
      {"relu", [](const Tensor& x) { return relu(x); }, rnd_away(s, -2, 2, 0.1, 21)},
      {"gelu", [](const Tensor& x) { return gelu(x); }, rnd(s, -3, 3, 22)},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, rnd(s, -3, 3, 23)},
      {"silu", [](const Tensor& x) { return silu(x); }, rnd(s, -4, 4, 24)},
      {"softplus", [](const Tensor& x) { return softplus(x); }, rnd(s, -4, 4, 25)},
      {"operator-", [](const Tensor& x) { return -x; }, rnd(s, -2, 2, 26)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    check_vjp([&](const Args& a) { return c.op(a[0]); }, {c.input});
  }
}

// ---------------------------------------------------------------- binary

TEST(GradTest, BinaryOpsWithBroadcastingMatchFiniteDifferences) {
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&, const Tensor&)> op;
    double alo, ahi, blo, bhi, bgap;
  };
  const std::vector<Case> cases = {
      {"add", add, -2, 2, -2, 2, 0},
      {"subtract", subtract, -2, 2, -2, 2, 0},
      {"multiply", multiply, -2, 2, -2, 2, 0},
      {"divide", divide, -2, 2, -2, 2, 0.3},
      {"power", power, 0.3, 2, -2, 2, 0},
      {"maximum", maximum, -2, 2, -2, 2, 0},
      {"minimum", minimum, -2, 2, -2, 2, 0},
      {"arctan2", arctan2, -2, 2, -2, 2, 0.2},
      {"operator*", [](const Tensor& a, const Tensor& b) { return a * b; }, -2, 2, -2, 2, 0},
      {"operator/", [](const Tensor& a, const Tensor& b) { return a / b; }, -2, 2, -2, 2, 0.3},
  };
  // (2, 3) with (3,), (2, 1) and (2, 3): the VJP must sum over broadcast axes.
  const std::vector<Shape> b_shapes = {{3}, {2, 1}, {2, 3}, {}};
  for (const auto& c : cases) {
    for (const auto& bs : b_shapes) {
      SCOPED_TRACE(std::string(c.name) + " b " + shape_str(bs));
      Tensor a = rnd({2, 3}, c.alo, c.ahi, 31);
      Tensor b = c.bgap > 0 ? rnd_away(bs, c.blo, c.bhi, c.bgap, 32) : rnd(bs, c.blo, c.bhi, 33);
      check_vjp([&](const Args& x) { return c.op(x[0], x[1]); }, {a, b});
      check_vjp([&](const Args& x) { return c.op(x[1], x[0]); },
                {c.bgap > 0 ? rnd_away({2, 3}, -2, 2, c.bgap, 34) : a,
                 c.alo > 0 ? rnd(bs, c.alo, c.ahi, 35) : b});
    }
  }
}

TEST(GradTest, RemainderAndFloorDivideAwayFromJumps) {
  // a = b * (k + f) with f in [0.2, 0.8]: a / b is never near an integer.
  Tensor b = tensor_of({1.5, -2.0, 0.7, -1.1, 2.5, 3.0}, {2, 3});
  auto bv = values_of(b);
  auto f = random_values(6, 0.2, 0.8, 41);
  std::vector<double> av;
  for (size_t i = 0; i < 6; ++i) av.push_back(bv[i] * (double(int(i) - 3) + f[i]));
  Tensor a = tensor_of(av, {2, 3});
  check_vjp([](const Args& x) { return remainder(x[0], x[1]); }, {a, b});
  check_vjp([](const Args& x) { return floor_divide(x[0], x[1]); }, {a, b});
}

TEST(GradTest, PowerWithConstantAndWeakScalarExponents) {
  Tensor x = rnd({5}, -2, 2, 42);
  check_vjp([](const Args& a) { return power(a[0], scalar(3.0, float64)); }, {x});
  check_vjp([](const Args& a) { return a[0] * 2.0 + 1.0 - a[0] / 4.0; }, {x});
  check_vjp([](const Args& a) { return 3.0 / (a[0] * a[0] + 1.0); }, {x});
  Tensor p = rnd({5}, 0.5, 2, 43);
  check_vjp([](const Args& a) { return power(scalar(2.0, float64), a[0]); }, {p});
}

// ---------------------------------------------------------------- select / convert / clip

TEST(GradTest, WhereRoutesCotangents) {
  Tensor x = rnd_away({2, 3}, -2, 2, 0.1, 51), y = rnd({3}, -2, 2, 52);
  check_vjp(
      [](const Args& a) {
        return where(greater(a[0], scalar(0.0, float64)), a[0] * a[1], sin(a[1]));
      },
      {x, y});
  check_vjp([](const Args& a) { return where(less(a[0], scalar(0.0, float64)), a[0], a[1]); },
            {x, rnd({2, 3}, -2, 2, 53)});
}

TEST(GradTest, ClipAwayFromBounds) {
  Tensor x = tensor_of({-2.1, -0.5, 0.3, 0.9, 1.7, -1.3}, {2, 3});
  check_vjp([](const Args& a) { return clip(a[0], -1.0, 1.0); }, {x});
  check_vjp([](const Args& a) { return clip(a[0], std::nullopt, 0.5); }, {x});
}

TEST(GradTest, ConvertPassesCotangentsThroughDtypes) {
  // Finite differences cannot see through f32 rounding, so these compare to exact gradients.
  Tensor x = rnd({4}, -2, 2, 61);
  Tensor w = tensor_of({1.5, -2, 0.25, 3}, {4}, float32);
  auto g =
      grad([&](const Args& a) { return astype(sum(astype(a[0], float32) * w), float64); })({x})[0];
  EXPECT_TRUE(tensor_close(g, {4}, float64, {1.5, -2, 0.25, 3}, 0, 0));
  Tensor xf = tensor_of({1.5, -2, 0.25, 3}, {4}, float32);
  auto gf = grad([](const Args& a) { return sum(square(astype(a[0], float64))); })({xf})[0];
  EXPECT_TRUE(tensor_close(gf, {4}, float32, {3, -4, 0.5, 6}, 0, 0));
  auto gb = grad([](const Args& a) { return astype(sum(astype(a[0], bfloat16) * 2.0), float32); })(
      {xf})[0];
  EXPECT_TRUE(tensor_close(gb, {4}, float32, {2, 2, 2, 2}, 0, 0));
  check_vjp([](const Args& a) { return astype(a[0], float64) * 2.0; }, {x});
}

// ---------------------------------------------------------------- shape and data movement

TEST(GradTest, BroadcastReshapeTranspose) {
  check_vjp(
      [](const Args& a) {
        return broadcast_in_dim(a[0], {2, 3, 4}, {1});
      },
      {rnd({3}, -1, 1, 71)});
  check_vjp(
      [](const Args& a) {
        return broadcast_in_dim(a[0], {2, 3, 4}, {0, 2});
      },
      {rnd({2, 1}, -1, 1, 72)});
  check_vjp([](const Args& a) { return broadcast_to(a[0], {4, 2, 3}); }, {rnd({2, 1}, -1, 1, 73)});
  check_vjp([](const Args& a) { return reshape(a[0], {3, -1}); }, {rnd({2, 3, 2}, -1, 1, 74)});
  check_vjp([](const Args& a) { return transpose(a[0], {2, 0, 1}); }, {rnd({2, 3, 4}, -1, 1, 75)});
  check_vjp([](const Args& a) { return transpose(a[0]) * 1.0; }, {rnd({2, 3}, -1, 1, 76)});
  check_vjp([](const Args& a) { return squeeze(expand_dims(a[0], 1) * 2.0, {1}); },
            {rnd({2, 3}, -1, 1, 77)});
  check_vjp([](const Args& a) { return moveaxis(a[0], 0, -1); }, {rnd({2, 3, 2}, -1, 1, 78)});
}

TEST(GradTest, SliceWithStrides) {
  Tensor x = rnd({5, 6}, -1, 1, 81);
  check_vjp([](const Args& a) { return slice(a[0], {1, 0}, {5, 6}, {2, 3}); }, {x});
  check_vjp([](const Args& a) { return slice(a[0], {0, 2}, {3, 5}); }, {x});
  check_vjp([](const Args& a) { return slice_axis(a[0], 1, -5, -1, 2); }, {x});
}

TEST(GradTest, DynamicSliceAndUpdate) {
  Tensor x = rnd({5, 4}, -1, 1, 82);
  Tensor u = rnd({2, 3}, -1, 1, 83);
  for (auto starts : {std::vector<int32_t>{1, 1}, std::vector<int32_t>{4, -2}}) {  // clamped
    Tensor s = array(starts, {2});
    check_vjp([&](const Args& a) { return dynamic_slice(a[0], s, {2, 3}); }, {x});
    check_vjp([&](const Args& a) { return dynamic_update_slice(a[0], a[1], s); }, {x, u});
  }
}

TEST(GradTest, ConcatenateStackSplit) {
  Tensor a = rnd({2, 1}, -1, 1, 91), b = rnd({2, 3}, -1, 1, 92), c = rnd({2, 2}, -1, 1, 93);
  check_vjp([](const Args& x) { return concatenate({x[0], x[1], x[2]}, 1); }, {a, b, c});
  check_vjp(
      [](const Args& x) {
        return stack({x[0], x[1] * x[0]}, -1);
      },
      {b, rnd({2, 3}, -1, 1, 94)});
  check_vjp(
      [](const Args& x) {
        auto parts = split(x[0], std::vector<int64_t>{1, 3}, 1);
        return parts[0] * 2.0 + sum(parts[1], {1}, true) - sum(exp(parts[2]), {1}, true);
      },
      {rnd({2, 5}, -1, 1, 95)});
}

TEST(GradTest, PadWithInteriorAndNegativeWidths) {
  Tensor x = rnd({3, 4}, -1, 1, 101);
  Tensor v = tensor_of({0.7}, {});
  check_vjp([](const Args& a) { return pad_general(a[0], a[1], {1, -1}, {2, 0}, {1, 2}); }, {x, v});
  check_vjp(
      [](const Args& a) {
        return pad_general(a[0], a[1], {-2, 3}, {1, -3}, {1, 0});
      },
      {x, v});
  check_vjp([](const Args& a) { return pad(a[0], {{1, 0}, {2, 1}}, 3.0); }, {x});
}

TEST(GradTest, TakeGatherScatter) {
  Tensor x = rnd({4, 3}, -1, 1, 111);
  Tensor idx = array(std::vector<int32_t>{-1, 0, 2, 0, 3}, {5});  // repeated and negative
  check_vjp([&](const Args& a) { return take(a[0], idx, 0); }, {x});
  check_vjp([&](const Args& a) { return take(a[0], idx, 1) * 1.0; }, {rnd({2, 5}, -1, 1, 112)});
  Tensor along = array(std::vector<int32_t>{2, 2, 0, 1, -1, 0, 1, 1}, {4, 2});
  check_vjp([&](const Args& a) { return take_along_axis(a[0], along, 1); }, {x});
  Tensor sidx = array(std::vector<int32_t>{0, 2, 0, -1}, {4});
  check_vjp([&](const Args& a) { return scatter_add(a[0], sidx, a[1]); },
            {rnd({5, 2}, -1, 1, 113), rnd({4, 2}, -1, 1, 114)});
  check_vjp([&](const Args& a) { return scatter_add(a[0], sidx, a[1], 1); },
            {rnd({2, 5}, -1, 1, 115), rnd({2, 4}, -1, 1, 116)});
}

TEST(GradTest, TrilTriu) {
  check_vjp([](const Args& a) { return tril(a[0], -1) + triu(a[0], 1) * 3.0; },
            {rnd({3, 4}, -1, 1, 121)});
}

// ---------------------------------------------------------------- reductions

TEST(GradTest, Reductions) {
  Tensor x = rnd({2, 3, 4}, -2, 2, 131);
  Tensor nz = rnd_away({2, 3, 4}, -1.5, 1.5, 0.3, 132);
  for (std::vector<int> axes : {std::vector<int>{}, {0}, {-1}, {0, 2}}) {
    for (bool keep : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "axes " << axes.size() << " keepdims " << keep);
      check_vjp([&](const Args& a) { return sum(a[0], axes, keep); }, {x});
      check_vjp([&](const Args& a) { return max(a[0], axes, keep); }, {x});
      check_vjp([&](const Args& a) { return min(a[0], axes, keep); }, {x});
      check_vjp([&](const Args& a) { return prod(a[0], axes, keep); }, {nz});
      check_vjp([&](const Args& a) { return mean(a[0], axes, keep); }, {x});
      check_vjp([&](const Args& a) { return var(a[0], axes, keep); }, {x});
      check_vjp([&](const Args& a) { return logsumexp(a[0], axes, keep); }, {x});
    }
  }
}

TEST(GradTest, CumsumForwardAndReverse) {
  Tensor x = rnd({3, 4}, -1, 1, 141);
  for (int axis : {0, -1}) {
    for (bool rev : {false, true}) {
      check_vjp([&](const Args& a) { return cumsum(a[0], axis, rev); }, {x});
    }
  }
}

TEST(GradTest, SortAndTopK) {
  Tensor x = rnd({3, 5}, -2, 2, 151);
  check_vjp([](const Args& a) { return sort(a[0]); }, {x});
  check_vjp([](const Args& a) { return sort(a[0], 0); }, {x});
  check_vjp([](const Args& a) { return top_k(a[0], 2).values; }, {x});
}

// ---------------------------------------------------------------- linear algebra

TEST(GradTest, DotGeneralWithBatchDims) {
  check_vjp([](const Args& a) { return dot_general(a[0], a[1], {1}, {0}); },
            {rnd({2, 3}, -1, 1, 161), rnd({3, 4}, -1, 1, 162)});
  check_vjp([](const Args& a) { return dot_general(a[0], a[1], {0}, {2}, {1}, {0}); },
            {rnd({4, 2, 3}, -1, 1, 163), rnd({2, 5, 4}, -1, 1, 164)});
  check_vjp(
      [](const Args& a) {
        return dot_general(a[0], a[1], {1, 2}, {1, 0});
      },
      {rnd({2, 3, 4}, -1, 1, 165), rnd({4, 3, 2}, -1, 1, 166)});
  check_vjp([](const Args& a) { return dot_general(a[0], a[1], {}, {}); },
            {rnd({2}, -1, 1, 167), rnd({3}, -1, 1, 168)});
}

TEST(GradTest, MatmulAndEinsum) {
  check_vjp([](const Args& a) { return matmul(a[0], a[1]); },
            {rnd({2, 1, 3, 4}, -1, 1, 171), rnd({3, 4, 2}, -1, 1, 172)});
  check_vjp([](const Args& a) { return matmul(a[0], a[1]); },
            {rnd({4}, -1, 1, 173), rnd({2, 4, 3}, -1, 1, 174)});
  check_vjp([](const Args& a) { return matmul(a[0], a[1]); },
            {rnd({3, 4}, -1, 1, 175), rnd({4}, -1, 1, 176)});
  check_vjp([](const Args& a) { return einsum("bij,bkj->bki", a[0], a[1]); },
            {rnd({2, 3, 4}, -1, 1, 177), rnd({2, 2, 4}, -1, 1, 178)});
  check_vjp([](const Args& a) { return einsum("...i,ij->...j", a[0], a[1]); },
            {rnd({2, 2, 3}, -1, 1, 179), rnd({3, 2}, -1, 1, 180)});
}

TEST(GradTest, EinsumThreeOperands) {
  check_vjp(
      [](const Args& a) {
        return einsum("ij,jk,kl->il", {a[0], a[1], a[2]});
      },
      {rnd({2, 3}, -1, 1, 181), rnd({3, 2}, -1, 1, 182), rnd({2, 2}, -1, 1, 183)});
}

// ---------------------------------------------------------------- fused

TEST(GradTest, SoftmaxLogSoftmaxLogsumexp) {
  Tensor x = rnd({3, 4}, -3, 3, 191);
  for (int axis : {0, -1}) {
    check_vjp([&](const Args& a) { return softmax(a[0], axis); }, {x});
    check_vjp([&](const Args& a) { return log_softmax(a[0], axis); }, {x});
  }
  // Large logits: the VJP must not overflow.
  Tensor big = tensor_of({500, 501, 499, -500}, {1, 4});
  check_vjp([](const Args& a) { return log_softmax(a[0]); }, {big});
  check_vjp([](const Args& a) { return logsumexp(a[0], {1}); }, {big});
}

// ---------------------------------------------------------------- transforms

TEST(GradTest, SecondDerivativeOfSinTimesCube) {
  // f(x) = sin(x) x^3; f''(x) = -x^3 sin x + 6 x^2 cos x + 6 x sin x.
  Tensor x = rnd({7}, -2, 2, 201);
  auto f = [](const Args& a) { return sum(sin(a[0]) * a[0] * a[0] * a[0]); };
  auto df = grad(f);
  auto d2 = grad([&](const Args& a) { return sum(df(a)[0]); })({x})[0];
  std::vector<double> want;
  for (double v : values_of(x)) {
    want.push_back(-v * v * v * std::sin(v) + 6 * v * v * std::cos(v) + 6 * v * std::sin(v));
  }
  EXPECT_TRUE(tensor_close(d2, {7}, float64, want, 1e-12, 1e-12));
  // The same with power(), whose VJP carries the exponent.
  Tensor xp = rnd({7}, 0.3, 2, 202);
  auto fp = [](const Args& a) { return sum(sin(a[0]) * power(a[0], scalar(3.0, float64))); };
  auto dfp = grad(fp);
  auto d2p = grad([&](const Args& a) { return sum(dfp(a)[0]); })({xp})[0];
  want.clear();
  for (double v : values_of(xp)) {
    want.push_back(-v * v * v * std::sin(v) + 6 * v * v * std::cos(v) + 6 * v * std::sin(v));
  }
  EXPECT_TRUE(tensor_close(d2p, {7}, float64, want, 1e-12, 1e-12));
  // And the whole gradient function's VJP (Hessian-vector products) against differences.
  check_vjp([&](const Args& a) { return df(a)[0]; }, {x});
}

TEST(GradTest, SecondOrderThroughMatmulAndSoftmax) {
  Tensor w = rnd({3, 2}, -1, 1, 211);
  Tensor x = rnd({4, 3}, -1, 1, 212);
  auto loss = [&](const Args& a) {
    return sum(log_softmax(matmul(x, a[0])) * matmul(x, tanh(a[0])));
  };
  auto g = grad(loss);
  check_vjp([&](const Args& a) { return g(a)[0]; }, {w});
}

TEST(GradTest, ReusedInputsAccumulate) {
  Tensor x = rnd({3}, -2, 2, 221);
  check_vjp([](const Args& a) { return a[0] * a[0] + a[0] + exp(a[0]) * sin(a[0]); }, {x});
  auto g = grad([](const Args& a) { return sum(a[0] * a[0] + a[0]); })({x})[0];
  std::vector<double> want;
  for (double v : values_of(x)) want.push_back(2 * v + 1);
  EXPECT_TRUE(tensor_close(g, {3}, float64, want, 1e-15, 0));
}

TEST(GradTest, StopGradientBlocksFlow) {
  Tensor x = tensor_of({1.5, -2, 3}, {3});
  auto g = grad([](const Args& a) { return sum(a[0] * stop_gradient(a[0])); })({x})[0];
  EXPECT_TRUE(tensor_close(g, {3}, float64, {1.5, -2, 3}, 0, 0));
  auto z = grad([](const Args& a) { return sum(stop_gradient(a[0] * 2.0)); })({x})[0];
  EXPECT_TRUE(tensor_close(z, {3}, float64, {0, 0, 0}, 0, 0));
}

TEST(GradTest, ArgnumsAndValueAndGrad) {
  Tensor a = tensor_of({1, 2}, {2}), b = tensor_of({3, -1}, {2});
  auto fn = [](const Args& x) { return sum(x[0] * x[0] * x[1]); };
  ValueAndGrad vg = value_and_grad(fn, {a, b});
  EXPECT_TRUE(tensor_close(vg.value, {}, float64, {3 * 1 + 4 * -1.0}, 0, 0));
  ASSERT_EQ(vg.grads.size(), 2u);
  EXPECT_TRUE(tensor_close(vg.grads[0], {2}, float64, {6, -4}, 0, 0));
  EXPECT_TRUE(tensor_close(vg.grads[1], {2}, float64, {1, 4}, 0, 0));
  auto only_b = grad(fn, {1})({a, b});
  ASSERT_EQ(only_b.size(), 1u);
  EXPECT_TRUE(tensor_close(only_b[0], {2}, float64, {1, 4}, 0, 0));
  // An argument the output does not depend on gets zeros of its shape and dtype.
  auto unused = grad([](const Args& x) { return sum(x[0]); })({a, tensor_of({1, 2, 3}, {3})});
  EXPECT_TRUE(tensor_close(unused[1], {3}, float64, {0, 0, 0}, 0, 0));
}

TEST(GradTest, VjpWithSeveralOutputs) {
  Tensor x = tensor_of({0.5, -1}, {2});
  VjpResult r = vjp(
      [](const Args& a) {
        return Args{sin(a[0]), a[0] * 3.0};
      },
      {x}, {tensor_of({1, 2}, {2}), tensor_of({-1, 1}, {2})});
  ASSERT_EQ(r.outputs.size(), 2u);
  EXPECT_TRUE(tensor_close(r.outputs[1], {2}, float64, {1.5, -3}, 0, 0));
  EXPECT_TRUE(tensor_close(r.cotangents[0], {2}, float64,
                           {std::cos(0.5) - 3, 2 * std::cos(-1.0) + 3}, 1e-15, 0));
}

TEST(GradTest, NestedTreeGradients) {
  NestedTensor params = {{"layer", NestedTensor{{"w", tensor_of({1, 2, 3, 4}, {2, 2})},
                                                {"b", tensor_of({0.5, -0.5}, {2})}}},
                         {"scale", tensor_of({2}, {})}};
  Tensor x = tensor_of({1, -1}, {1, 2});
  auto loss = [&](const NestedTensor& p) {
    Tensor h = matmul(x, p.at("layer").at("w").tensor()) + p.at_path("layer/b").tensor();
    return sum(h * h) * p.at("scale").tensor();
  };
  NestedValueAndGrad r = value_and_grad(loss, params);
  // h = x w + b = [1-3+0.5, 2-4-0.5] = [-1.5, -2.5]; loss = 2 (2.25 + 6.25) = 17.
  EXPECT_TRUE(tensor_close(r.value, {}, float64, {17}, 1e-15, 0));
  // dL/dh = 2 scale h = [-6, -10]; dL/dw = x^T dL/dh; dL/db = dL/dh; dL/dscale = sum(h^2).
  EXPECT_TRUE(tensor_close(r.grads.at_path("layer/w").tensor(), {2, 2}, float64, {-6, -10, 6, 10},
                           1e-15, 0));
  EXPECT_TRUE(tensor_close(r.grads.at_path("layer/b").tensor(), {2}, float64, {-6, -10}, 1e-15, 0));
  EXPECT_TRUE(tensor_close(r.grads.at("scale").tensor(), {}, float64, {8.5}, 1e-15, 0));
  EXPECT_TRUE(r.grads.same_structure(params));
}

TEST(GradTest, Float32GradientsAgreeWithFloat64) {
  Tensor w64 = rnd({8, 5}, -1, 1, 231), x64 = rnd({3, 8}, -1, 1, 232);
  auto loss = [](const Args& a) {
    return mean(square(tanh(matmul(a[1], a[0])))) + sum(log_softmax(gelu(matmul(a[1], a[0]))));
  };
  auto g64 = grad(loss, {0})({w64, x64})[0];
  auto g32 = grad(loss, {0})({astype(w64, float32), astype(x64, float32)})[0];
  EXPECT_EQ(g32.dtype(), float32);
  EXPECT_TRUE(testing::all_close(values_of(g32), values_of(g64), 1e-4, 1e-5));
}

}  // namespace
}  // namespace axlearn
