// Fused rms_norm / layer_norm: forward against naive f64 loops over dtypes, ranks and optional
// scale/bias; VJP (fused NormGrad) against central finite differences and against the same
// computation written with ops; second order; errors naming the op and the shapes.
#include "axlearn/core/norm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::all_close;
using testing::check_vjp;
using testing::random_tensor;
using testing::random_values;
using testing::tensor_close;
using testing::values_of;
using Args = std::vector<Tensor>;

// Reference over the last axis in f64 from the (already dtype-rounded) input values.
std::vector<double> norm_ref(NormKind kind, const Tensor& x, const Tensor& scale,
                             const Tensor& bias, double eps) {
  const std::vector<double> xv = values_of(x);
  const std::vector<double> sv = scale.defined() ? values_of(scale) : std::vector<double>{};
  const std::vector<double> bv = bias.defined() ? values_of(bias) : std::vector<double>{};
  const int64_t d = x.shape().back();
  std::vector<double> y(xv.size());
  for (size_t r = 0; d > 0 && r < xv.size() / size_t(d); ++r) {
    const double* row = xv.data() + r * d;
    double mu = 0, ss = 0;
    if (kind == NormKind::kLayer) {
      for (int64_t j = 0; j < d; ++j) mu += row[j];
      mu /= double(d);
    }
    for (int64_t j = 0; j < d; ++j) ss += (row[j] - mu) * (row[j] - mu);
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t j = 0; j < d; ++j) {
      double v = (row[j] - mu) * inv;
      if (!sv.empty()) v *= sv[j];
      if (!bv.empty()) v += bv[j];
      y[r * d + j] = v;
    }
  }
  return y;
}

Tensor apply(NormKind kind, const Tensor& x, const Tensor& scale, const Tensor& bias, double eps) {
  return kind == NormKind::kRms ? rms_norm(x, scale, eps) : layer_norm(x, scale, bias, eps);
}

// Relative tolerance of one rounding to `d` after an accurate compute.
double rtol_for(Dtype d) {
  switch (d) {
    case float64:
      return 1e-12;
    case float32:
      return 2e-6;
    case bfloat16:
      return 4.5e-3;  // half an ulp is 2^-9
    default:
      return 6e-4;  // f16: 2^-11
  }
}

TEST(NormTest, ForwardMatchesNaiveLoopsAcrossDtypesRanksAndParams) {
  const std::vector<Shape> shapes = {{7}, {3, 5}, {2, 3, 8}, {2, 1, 3, 33}, {4, 1}};
  int seed = 1;
  for (Dtype dt : {float32, bfloat16, float64, float16}) {
    for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
      for (int params = 0; params < 4; ++params) {
        const bool with_scale = params & 1, with_bias = params & 2;
        if (kind == NormKind::kRms && with_bias) continue;
        for (const Shape& s : shapes) {
          SCOPED_TRACE(::testing::Message()
                       << dtype_name(dt) << " kind " << int(kind) << " scale " << with_scale
                       << " bias " << with_bias << " shape " << shape_str(s));
          const int64_t d = s.back();
          Tensor x = random_tensor(s, dt, -2, 3, seed++);
          Tensor scale = with_scale ? random_tensor({d}, dt, 0.5, 1.5, seed++) : Tensor();
          Tensor bias = with_bias ? random_tensor({d}, dt, -1, 1, seed++) : Tensor();
          Tensor y = apply(kind, x, scale, bias, 1e-5);
          EXPECT_TRUE(tensor_close(y, s, dt, norm_ref(kind, x, scale, bias, 1e-5), rtol_for(dt),
                                   std::min(rtol_for(dt), 1e-5)));
        }
      }
    }
  }
}

TEST(NormTest, SingleFeatureRowsGiveSignOrBias) {
  Tensor x = array(std::vector<double>{3.0, -0.5, 2.0}, {3, 1});
  Tensor bias = array(std::vector<double>{0.25}, {1});
  // rms over one element: x / sqrt(x^2 + eps).
  EXPECT_TRUE(tensor_close(
      rms_norm(x, Tensor(), 1e-6), {3, 1}, float64,
      {3 / std::sqrt(9 + 1e-6), -0.5 / std::sqrt(0.25 + 1e-6), 2 / std::sqrt(4 + 1e-6)}));
  // layer norm over one element: the centred value is 0, leaving the bias.
  EXPECT_TRUE(
      tensor_close(layer_norm(x, Tensor(), bias, 1e-6), {3, 1}, float64, {0.25, 0.25, 0.25}));
}

TEST(NormTest, ScaleDtypeMayDifferAndOutputKeepsXDtype) {
  Tensor x = random_tensor({3, 16}, bfloat16, -2, 2, 11);
  Tensor scale = random_tensor({16}, float32, 0.5, 1.5, 12);
  Tensor bias = random_tensor({16}, float64, -1, 1, 13);
  Tensor y = layer_norm(x, scale, bias, 1e-6);
  EXPECT_EQ(y.dtype(), bfloat16);
  EXPECT_TRUE(tensor_close(y, {3, 16}, bfloat16, norm_ref(NormKind::kLayer, x, scale, bias, 1e-6),
                           4.5e-3, 1e-4));
  Tensor x32 = random_tensor({3, 16}, float32, -2, 2, 14);
  Tensor s16 = random_tensor({16}, bfloat16, 0.5, 1.5, 15);
  EXPECT_TRUE(tensor_close(rms_norm(x32, s16), {3, 16}, float32,
                           norm_ref(NormKind::kRms, x32, s16, Tensor(), 1e-6), 2e-6, 1e-7));
}

TEST(NormTest, EmptyBatchAndEmptyFeatureAxis) {
  Tensor x = zeros({0, 8}, float32);
  Tensor scale = ones({8}, float32);
  Tensor bias = zeros({8}, float32);
  Tensor y = layer_norm(x, scale, bias);
  EXPECT_EQ(y.shape(), (Shape{0, 8}));
  EXPECT_EQ(values_of(y).size(), 0u);
  auto loss = [](const Args& a) { return sum(layer_norm(a[0], a[1], a[2])); };
  std::vector<Tensor> g = grad(loss)({x, scale, bias});
  EXPECT_TRUE(tensor_close(g[0], {0, 8}, float32, {}));
  EXPECT_TRUE(tensor_close(g[1], {8}, float32, std::vector<double>(8, 0.0)));
  EXPECT_TRUE(tensor_close(g[2], {8}, float32, std::vector<double>(8, 0.0)));
  EXPECT_EQ(rms_norm(zeros({3, 0}, float32), Tensor()).shape(), (Shape{3, 0}));
}

TEST(NormTest, StridedAndBroadcastInputsReadCorrectly) {
  // A transposed (non-contiguous) x and a broadcast (stride-0) scale take the gather path.
  Tensor base = random_tensor({6, 4}, float32, -2, 2, 21);
  Tensor x = transpose(base);  // (4, 6)
  Tensor scale = broadcast_to(array(std::vector<float>{1.5f}, {1}), {6});
  Tensor y = rms_norm(x, scale);
  Tensor xc = array(values_of(x), {4, 6}, float32);
  EXPECT_TRUE(tensor_close(
      y, {4, 6}, float32,
      norm_ref(NormKind::kRms, xc, array(std::vector<double>(6, 1.5), {6}), Tensor(), 1e-6), 2e-6,
      1e-7));
}

TEST(NormTest, LargeInputRunsRowsInParallelAndMatchesReference) {
  const Shape s = {96, 1000};  // above the parallel threshold; rows not a multiple of blocks
  Tensor x = random_tensor(s, float32, -3, 3, 31);
  Tensor scale = random_tensor({1000}, float32, 0.5, 1.5, 32);
  Tensor bias = random_tensor({1000}, float32, -1, 1, 33);
  EXPECT_TRUE(tensor_close(layer_norm(x, scale, bias), s, float32,
                           norm_ref(NormKind::kLayer, x, scale, bias, 1e-6), 1e-5, 1e-6));
}

// ---------------------------------------------------------------- fused vs ops composition

Tensor rms_composed(const Tensor& x, const Tensor& scale, double eps) {
  Dtype c = compute_dtype(x.dtype());
  Tensor xf = astype(x, c);
  Tensor y = xf * rsqrt(mean(xf * xf, {-1}, true) + eps);
  if (scale.defined()) y = y * astype(scale, c);
  return astype(y, x.dtype());
}

Tensor layer_composed(const Tensor& x, const Tensor& scale, const Tensor& bias, double eps) {
  Dtype c = compute_dtype(x.dtype());
  Tensor xf = astype(x, c);
  Tensor xc = xf - mean(xf, {-1}, true);
  Tensor y = xc * rsqrt(mean(xc * xc, {-1}, true) + eps);
  if (scale.defined()) y = y * astype(scale, c);
  if (bias.defined()) y = y + astype(bias, c);
  return astype(y, x.dtype());
}

TEST(NormTest, FusedForwardEqualsOpsComposition) {
  for (Dtype dt : {float32, float64}) {
    Tensor x = random_tensor({5, 3, 24}, dt, -2, 2, 41);
    Tensor scale = random_tensor({24}, dt, 0.5, 1.5, 42);
    Tensor bias = random_tensor({24}, dt, -1, 1, 43);
    const double tol = dt == float32 ? 2e-6 : 1e-13;
    EXPECT_TRUE(all_close(values_of(rms_norm(x, scale, 1e-5)),
                          values_of(rms_composed(x, scale, 1e-5)), tol, tol));
    EXPECT_TRUE(all_close(values_of(layer_norm(x, scale, bias, 1e-5)),
                          values_of(layer_composed(x, scale, bias, 1e-5)), tol, tol));
  }
}

// The fused VJP equals the VJP of the ops composition, for every input and dtype mix.
TEST(NormTest, FusedVjpEqualsVjpOfOpsComposition) {
  struct Case {
    Dtype x, param;
    double tol;
  };
  for (Case c : {Case{float32, float32, 2e-5}, Case{bfloat16, float32, 2e-2},
                 Case{float64, float64, 1e-11}}) {
    SCOPED_TRACE(dtype_name(c.x));
    Tensor x = random_tensor({4, 2, 16}, c.x, -2, 2, 51);
    Tensor scale = random_tensor({16}, c.param, 0.5, 1.5, 52);
    Tensor bias = random_tensor({16}, c.param, -1, 1, 53);
    Tensor w = random_tensor({4, 2, 16}, c.x, -1, 1, 54);
    for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
      auto fused = [&](const Args& a) {
        Tensor y = kind == NormKind::kRms ? rms_norm(a[0], a[1], 1e-5)
                                          : layer_norm(a[0], a[1], a[2], 1e-5);
        return std::vector<Tensor>{y};
      };
      auto composed = [&](const Args& a) {
        Tensor y = kind == NormKind::kRms ? rms_composed(a[0], a[1], 1e-5)
                                          : layer_composed(a[0], a[1], a[2], 1e-5);
        return std::vector<Tensor>{y};
      };
      VjpResult f = vjp(fused, {x, scale, bias}, {w});
      VjpResult r = vjp(composed, {x, scale, bias}, {w});
      for (size_t k = 0; k < 3; ++k) {
        SCOPED_TRACE(k);
        EXPECT_EQ(f.cotangents[k].dtype(), r.cotangents[k].dtype());
        EXPECT_EQ(f.cotangents[k].shape(), r.cotangents[k].shape());
        EXPECT_TRUE(
            all_close(values_of(f.cotangents[k]), values_of(r.cotangents[k]), c.tol, c.tol));
      }
    }
  }
}

TEST(NormTest, GradKernelEqualsOpsCompositionOnLargeInput) {
  // Many rows over few blocks and the parallel path: the blocked dscale/dbias sums.
  Tensor x = random_tensor({300, 130}, float32, -2, 2, 61);
  Tensor scale = random_tensor({130}, float32, 0.5, 1.5, 62);
  Tensor dy = random_tensor({300, 130}, float32, -1, 1, 63);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
    NormAttrs attrs{kind, true, kind == NormKind::kLayer, 1e-6};
    Tensor fused = Tensor::make(std::make_shared<NormGrad>(attrs), {x, scale, dy});
    Tensor ref = norm_grad_composed(attrs, {x, scale, dy});
    EXPECT_EQ(fused.shape(), ref.shape());
    EXPECT_TRUE(all_close(values_of(fused), values_of(ref), 1e-4, 1e-4));
  }
}

TEST(NormTest, GradSumsDoNotDependOnThreadCount) {
  Tensor x = random_tensor({257, 200}, float32, -2, 2, 71);
  Tensor scale = random_tensor({200}, float32, 0.5, 1.5, 72);
  Tensor bias = random_tensor({200}, float32, -1, 1, 73);
  Tensor w = random_tensor({257, 200}, float32, -1, 1, 74);
  auto loss = [&](const Args& a) { return sum(layer_norm(a[0], a[1], a[2]) * w); };
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<Tensor> one = grad(loss)({x, scale, bias});
  eval(one);
  omp_set_num_threads(std::max(2, threads));
  std::vector<Tensor> many = grad(loss)({x, scale, bias});
  eval(many);
  omp_set_num_threads(threads);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(values_of(one[k]), values_of(many[k])) << k;
}

// ---------------------------------------------------------------- finite differences (f64)

TEST(NormTest, RmsNormVjpMatchesFiniteDifferences) {
  Tensor x = random_tensor({3, 5}, float64, -2, 2, 81);
  Tensor scale = random_tensor({5}, float64, 0.5, 1.5, 82);
  check_vjp([](const Args& a) { return rms_norm(a[0], a[1], 1e-3); }, {x, scale});
  check_vjp([](const Args& a) { return rms_norm(a[0], Tensor(), 1e-3); },
            {random_tensor({2, 2, 4}, float64, -2, 2, 83)});
}

TEST(NormTest, LayerNormVjpMatchesFiniteDifferences) {
  Tensor x = random_tensor({2, 3, 4}, float64, -2, 2, 91);
  Tensor scale = random_tensor({4}, float64, 0.5, 1.5, 92);
  Tensor bias = random_tensor({4}, float64, -1, 1, 93);
  check_vjp([](const Args& a) { return layer_norm(a[0], a[1], a[2], 1e-3); }, {x, scale, bias});
  check_vjp([](const Args& a) { return layer_norm(a[0], Tensor(), a[1], 1e-3); }, {x, bias});
  check_vjp([](const Args& a) { return layer_norm(a[0], Tensor(), Tensor(), 1e-3); },
            {random_tensor({6}, float64, -2, 2, 94)});
}

// The backward's own VJP (NormGrad differentiated through its ops form) against differences of
// the fused gradient.
TEST(NormTest, SecondOrderMatchesFiniteDifferencesOfGradient) {
  Tensor x = random_tensor({2, 5}, float64, -2, 2, 101);
  Tensor scale = random_tensor({5}, float64, 0.5, 1.5, 102);
  Tensor bias = random_tensor({5}, float64, -1, 1, 103);
  Tensor w = random_tensor({2, 5}, float64, -1, 1, 104);
  for (int which = 0; which < 3; ++which) {
    SCOPED_TRACE(which);
    auto grad_of = [&, which](const Args& a) {
      auto loss = [&](const Args& p) { return sum(layer_norm(p[0], p[1], p[2], 1e-3) * w); };
      return grad(loss)(a)[size_t(which)];
    };
    check_vjp(grad_of, {x, scale, bias}, {}, 1e-5);
  }
  auto rms_grad = [&](const Args& a) {
    auto loss = [&](const Args& p) { return sum(rms_norm(p[0], p[1], 1e-3) * w); };
    return grad(loss)(a)[0];
  };
  check_vjp(rms_grad, {x, scale}, {}, 1e-5);
}

// ---------------------------------------------------------------- errors and attributes

::testing::AssertionResult raises(const std::function<void()>& fn,
                                  const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) {
      if (msg.find(p) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << p << "\": \"" << msg << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no axlearn::Error";
}

TEST(NormTest, MismatchedParametersNameOpAndShapes) {
  Tensor x = zeros({2, 4}, float32);
  EXPECT_TRUE(raises([&] { rms_norm(x, zeros({5}, float32)); },
                     {"rms_norm", "scale", "(5,)", "(2, 4)", "(4,)"}));
  EXPECT_TRUE(raises(
      [&] {
        rms_norm(x, zeros({1, 4}, float32));
      },
      {"rms_norm", "(1, 4)", "(2, 4)"}));
  EXPECT_TRUE(raises([&] { layer_norm(x, zeros({4}, float32), zeros({3}, float32)); },
                     {"layer_norm", "bias", "(3,)", "(2, 4)"}));
  EXPECT_TRUE(raises(
      [&] {
        rms_norm(zeros({2, 4}, int32), Tensor());
      },
      {"rms_norm", "int32", "(2, 4)"}));
  EXPECT_TRUE(raises([&] { layer_norm(scalar(1.0), Tensor(), Tensor()); }, {"layer_norm", "()"}));
  EXPECT_TRUE(raises([&] { rms_norm(x, zeros({4}, int32)); }, {"rms_norm", "scale", "int32"}));
  EXPECT_TRUE(raises([&] { rms_norm(x, Tensor(), -1.0); }, {"rms_norm", "eps"}));
}

TEST(NormTest, PrimitivesCompareByAttributes) {
  Norm a({NormKind::kRms, true, false, 1e-6});
  Norm b({NormKind::kRms, true, false, 1e-6});
  Norm c({NormKind::kRms, true, false, 1e-5});
  Norm d({NormKind::kLayer, true, false, 1e-6});
  EXPECT_TRUE(a.equals(b));
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_FALSE(a.equals(c));
  EXPECT_FALSE(a.equals(d));
  EXPECT_FALSE(a.equals(NormGrad({NormKind::kRms, true, false, 1e-6})));
}

}  // namespace
}  // namespace axlearn
