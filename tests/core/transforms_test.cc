// eval and autodiff behaviour that is about the graph rather than one op: laziness, graph
// release after eval, steady-state memory in a training loop, trees, multiple outputs.
#include "axlearn/core/transforms.h"

#include <gtest/gtest.h>

#include <cmath>

#include "axlearn/core/ops.h"

namespace axlearn {
namespace {

TEST(EvalTest, OpsAreLazyUntilEvaluated) {
  Tensor a = array(std::vector<float>{1, 2, 3}, {3});
  Tensor b = exp(a) + 1.0;
  EXPECT_FALSE(b.is_evaluated());
  EXPECT_EQ(b.inputs().size(), 2u);
  b.eval();
  EXPECT_TRUE(b.is_evaluated());
  EXPECT_TRUE(b.inputs().empty()) << "an evaluated tensor must drop its graph";
  EXPECT_NEAR(b.to_vector<double>()[2], std::exp(3.0) + 1.0, 1e-5);
}

TEST(EvalTest, ItemEvaluatesImplicitly) {
  Tensor s = sum(arange(5, float32));
  EXPECT_FALSE(s.is_evaluated());
  EXPECT_EQ(s.item<float>(), 10.0f);
  EXPECT_TRUE(s.is_evaluated());
}

TEST(EvalTest, IntermediatesAreReleasedDuringEval) {
  const int64_t n = 1 << 20;
  Tensor x = full({n}, 1.0, float32) + 0.0;
  x.eval();
  CpuAllocator::instance().reset_peak();
  size_t base = CpuAllocator::instance().bytes_in_use();
  // A chain of 8 ops: without release the peak would hold every intermediate.
  Tensor y = x;
  for (int i = 0; i < 8; ++i) y = y * 1.5 + 0.25;
  y.eval();
  size_t peak = CpuAllocator::instance().peak_bytes() - base;
  EXPECT_LE(peak, size_t(4 * n * sizeof(float))) << "peak " << peak;
}

TEST(AutodiffTest, TrainingLoopMemoryIsSteady) {
  // Updating parameters from their gradients must not keep earlier steps' graphs alive.
  Tensor w = full({64, 64}, 0.01, float32) + 0.0;
  Tensor x = full({32, 64}, 0.5, float32) + 0.0;
  eval(w, x);
  auto loss = [&](const std::vector<Tensor>& p) { return mean(square(tanh(matmul(x, p[0])))); };
  size_t in_use_after_3 = 0;
  for (int step = 0; step < 12; ++step) {
    ValueAndGrad vg = value_and_grad(loss, {w});
    w = w - vg.grads[0] * 0.1;
    eval(w, vg.value);
    EXPECT_TRUE(w.inputs().empty()) << "step " << step << ": the new parameters kept a graph";
    if (step == 3) in_use_after_3 = CpuAllocator::instance().bytes_in_use();
  }
  EXPECT_LE(CpuAllocator::instance().bytes_in_use(), in_use_after_3);
}

TEST(AutodiffTest, ValueAndGradOverTree) {
  NestedTensor params;
  params["layer"]["w"] = array(std::vector<double>{1.0, 2.0}, {2});
  params["b"] = scalar(0.5, float64);
  auto fn = [](const NestedTensor& p) {
    return sum(square(p.at("layer").at("w").tensor())) * p.at("b").tensor();
  };
  NestedValueAndGrad r = value_and_grad(fn, params);
  EXPECT_DOUBLE_EQ(r.value.item<double>(), 2.5);
  auto gw = r.grads.at_path("layer/w").tensor().to_vector<double>();
  EXPECT_DOUBLE_EQ(gw[0], 1.0);  // 2 w b
  EXPECT_DOUBLE_EQ(gw[1], 2.0);
  EXPECT_DOUBLE_EQ(r.grads.at("b").tensor().item<double>(), 5.0);
  auto flat = r.grads.flatten_with_paths();
  ASSERT_EQ(flat.size(), 2u);
  EXPECT_EQ(flat[0].first, "b");
  EXPECT_EQ(flat[1].first, "layer/w");
}

TEST(AutodiffTest, VjpWithTwoOutputsSumsContributions) {
  Tensor x = array(std::vector<double>{0.3, -0.7}, {2});
  auto fn = [](const std::vector<Tensor>& v) {
    return std::vector<Tensor>{sin(v[0]), v[0] * v[0]};
  };
  VjpResult r = vjp(fn, {x}, {ones({2}, float64), full({2}, 2.0, float64)});
  auto g = r.cotangents[0].to_vector<double>();
  EXPECT_NEAR(g[0], std::cos(0.3) + 4 * 0.3, 1e-12);
  EXPECT_NEAR(g[1], std::cos(-0.7) + 4 * -0.7, 1e-12);
}

TEST(AutodiffTest, UnusedAndIntegerInputsGetZeroGradients) {
  Tensor x = array(std::vector<double>{1.0, 2.0}, {2});
  Tensor i = array(std::vector<int32_t>{3, 4}, {2});
  auto fn = [](const std::vector<Tensor>& v) { return sum(v[0] * astype(v[1], float64)); };
  auto g = grad(fn)({x, i});
  EXPECT_EQ(g[0].to_vector<double>(), (std::vector<double>{3.0, 4.0}));
  EXPECT_EQ(g[1].dtype(), int32);
  EXPECT_EQ(g[1].to_vector<int>(), (std::vector<int>{0, 0}));
}

TEST(AutodiffTest, StopGradientBlocks) {
  Tensor x = scalar(3.0, float64);
  auto fn = [](const std::vector<Tensor>& v) { return v[0] * stop_gradient(v[0]); };
  EXPECT_DOUBLE_EQ(grad(fn)({x})[0].item<double>(), 3.0);
}

TEST(AutodiffTest, EvalInsideTheDifferentiatedFunctionKeepsTheGraph) {
  Tensor x = scalar(2.0, float64);
  auto fn = [](const std::vector<Tensor>& v) {
    Tensor y = v[0] * v[0];
    y.eval();  // reading values mid-function must not cut the gradient path
    return y * v[0];
  };
  EXPECT_DOUBLE_EQ(grad(fn)({x})[0].item<double>(), 12.0);
}

TEST(AutodiffTest, GradOfNonScalarIsAnError) {
  Tensor x = ones({3}, float32);
  auto fn = [](const std::vector<Tensor>& v) { return v[0] * 2.0; };
  try {
    grad(fn)({x});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(3,)"), std::string::npos) << e.what();
  }
}

TEST(AutodiffTest, SecondOrderThroughNestedGrad) {
  // d2/dx2 of x^3 sin(x) = -x^3 sin x + 6 x^2 cos x + 6 x sin x
  Tensor x = array(std::vector<double>{0.5, 1.5}, {2});
  auto f = [](const std::vector<Tensor>& v) { return sum(sin(v[0]) * v[0] * v[0] * v[0]); };
  auto df = [&](const std::vector<Tensor>& v) { return sum(grad(f)(v)[0]); };
  auto g2 = grad(df)({x})[0].to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    double v = i == 0 ? 0.5 : 1.5;
    double expect = -v * v * v * std::sin(v) + 6 * v * v * std::cos(v) + 6 * v * std::sin(v);
    EXPECT_NEAR(g2[i], expect, 1e-12);
  }
}

}  // namespace
}  // namespace axlearn
