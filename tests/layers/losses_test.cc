// Losses (losses.h) against naive f64 loops, central finite differences, and their errors.
#include "axlearn/layers/losses.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn::layers {
namespace {

std::vector<double> pseudo_random(size_t n, double lo, double hi, uint32_t seed) {
  std::vector<double> v(n);
  uint32_t s = seed;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = lo + (hi - lo) * double(s >> 8) / double(1u << 24);
  }
  return v;
}

// Naive weighted mean cross-entropy with smoothing; labels < 0 are dead.
double naive_ce(const std::vector<double>& logits, const std::vector<int32_t>& labels,
                const std::vector<double>& w, int64_t V, double ls) {
  double num = 0, den = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] < 0 || w[r] == 0) continue;
    double mx = -1e300;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, logits[r * V + j]);
    double se = 0;
    for (int64_t j = 0; j < V; ++j) se += std::exp(logits[r * V + j] - mx);
    const double lse = mx + std::log(se);
    double loss = 0;
    for (int64_t j = 0; j < V; ++j) {
      const double t = (j == labels[r] ? 1 - ls : 0) + ls / double(V);
      loss -= t * (logits[r * V + j] - lse);
    }
    num += w[r] * loss;
    den += w[r];
  }
  return den == 0 ? 0 : num / den;
}

// Central differences of f at x (f64), compared with the autodiff gradient.
void expect_grad_matches_fd(const std::function<Tensor(const Tensor&)>& f,
                            const std::vector<double>& x0, const Shape& shape) {
  auto g =
      grad([&](const std::vector<Tensor>& a) { return f(a[0]); })({array(x0, shape, float64)})[0];
  const std::vector<double> got = g.to_vector<double>();
  ASSERT_EQ(got.size(), x0.size());
  const double h = 1e-6;
  for (size_t i = 0; i < x0.size(); ++i) {
    std::vector<double> xp = x0, xm = x0;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (f(array(xp, shape, float64)).item<double>() -
                       f(array(xm, shape, float64)).item<double>()) /
                      (2 * h);
    EXPECT_NEAR(got[i], fd, 1e-7 * std::max(1.0, std::abs(fd))) << "element " << i;
  }
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(CrossEntropyLoss, WeightedSmoothedMeanMatchesNaiveF64) {
  const int64_t B = 3, T = 4, V = 5;
  const auto logits = pseudo_random(B * T * V, -4, 4, 1);
  const std::vector<int32_t> labels = {0, 4, -1, 2, 3, 1, 1, -1, 4, 0, 2, 3};
  const auto w = pseudo_random(B * T, 0, 2, 2);
  for (double ls : {0.0, 0.1, 0.5}) {
    const double want = naive_ce(logits, labels, w, V, ls);
    const double got = cross_entropy(array(logits, {B, T, V}, float64), array(labels, {B, T}),
                                     array(w, {B, T}, float64), ls)
                           .item<double>();
    EXPECT_NEAR(got, want, 1e-12) << "label_smoothing " << ls;
  }
  // Without live_targets every label >= 0 has weight 1.
  const std::vector<double> ones_w(B * T, 1.0);
  EXPECT_NEAR(
      cross_entropy(array(logits, {B, T, V}, float64), array(labels, {B, T})).item<double>(),
      naive_ce(logits, labels, ones_w, V, 0), 1e-12);
}

TEST(CrossEntropyLoss, F32LogitsGiveF32ScalarCloseToF64) {
  const int64_t N = 6, V = 7;
  const auto logits = pseudo_random(N * V, -3, 3, 3);
  const std::vector<int32_t> labels = {6, 0, 3, 2, 5, 1};
  const std::vector<bool> live = {true, false, true, true, false, true};
  std::vector<double> w(live.begin(), live.end());
  Tensor got =
      cross_entropy(array(logits, {N, V}, float32), array(labels, {N}), array(live, {N}), 0.2);
  EXPECT_EQ(got.dtype(), float32);
  EXPECT_EQ(got.shape(), Shape{});
  EXPECT_NEAR(got.item<double>(), naive_ce(logits, labels, w, V, 0.2), 1e-5);
}

TEST(CrossEntropyLoss, GradientMatchesFiniteDifferences) {
  const int64_t N = 4, V = 3;
  const auto x0 = pseudo_random(N * V, -2, 2, 4);
  Tensor labels = array(std::vector<int32_t>{2, -1, 0, 1}, {N});
  Tensor w = array(std::vector<double>{0.5, 1, 2, 1.5}, {N}, float64);
  expect_grad_matches_fd([&](const Tensor& x) { return cross_entropy(x, labels, w, 0.3); }, x0,
                         {N, V});
}

TEST(CrossEntropyLoss, AllMaskedIsZeroWithZeroGradient) {
  const int64_t N = 3, V = 4;
  const auto x0 = pseudo_random(N * V, -2, 2, 5);
  Tensor labels = array(std::vector<int32_t>{-1, -1, -1}, {N});
  auto f = [&](const std::vector<Tensor>& a) { return cross_entropy(a[0], labels); };
  Tensor x = array(x0, {N, V}, float64);
  EXPECT_EQ(f({x}).item<double>(), 0.0);
  for (double g : grad(f)({x})[0].to_vector<double>()) EXPECT_EQ(g, 0.0);
  // Live labels with zero weights are masked as well.
  Tensor live_labels = array(std::vector<int32_t>{0, 1, 2}, {N});
  Tensor zero_w = zeros({N}, float32);
  EXPECT_EQ(cross_entropy(x, live_labels, zero_w).item<double>(), 0.0);
}

TEST(CrossEntropyLoss, ErrorsNameOpAndShapes) {
  Tensor logits = zeros({2, 3, 5});
  std::string msg = error_message([&] {
    cross_entropy(logits, zeros({2, 4}, int32)).item<float>();
  });
  EXPECT_NE(msg.find("cross_entropy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 4)"), std::string::npos) << msg;
  msg = error_message([&] { cross_entropy(logits, zeros({2, 3}, float32)); });
  EXPECT_NE(msg.find("target_labels must be integer"), std::string::npos) << msg;
  msg = error_message([&] { cross_entropy(logits, zeros({2, 3}, int32), ones({3, 2})); });
  EXPECT_NE(msg.find("live_targets (3, 2)"), std::string::npos) << msg;
  msg = error_message([&] { cross_entropy(logits, zeros({2, 3}, int32), {}, 1.5); });
  EXPECT_NE(msg.find("label_smoothing"), std::string::npos) << msg;
}

TEST(MeanSquaredErrorLoss, WeightedMeanMatchesNaiveF64) {
  const int64_t N = 10;
  const auto p = pseudo_random(N, -3, 3, 6), t = pseudo_random(N, -3, 3, 7);
  const auto w = pseudo_random(N, 0, 1, 8);
  double num = 0, den = 0, plain = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double d = (p[i] - t[i]) * (p[i] - t[i]);
    num += w[i] * d;
    den += w[i];
    plain += d;
  }
  Tensor P = array(p, {2, 5}, float64), Tt = array(t, {2, 5}, float64);
  EXPECT_NEAR(mean_squared_error(P, Tt, array(w, {2, 5}, float64)).item<double>(), num / den,
              1e-13);
  EXPECT_NEAR(mean_squared_error(P, Tt).item<double>(), plain / N, 1e-13);
  expect_grad_matches_fd(
      [&](const Tensor& x) {
        return mean_squared_error(x, Tt, array(w, {2, 5}, float64));
      },
      p, {2, 5});
}

TEST(MeanSquaredErrorLoss, AllMaskedIsZeroAndShapeErrorsNameOp) {
  Tensor p = ones({2, 2}), t = zeros({2, 2});
  EXPECT_EQ(mean_squared_error(p, t, zeros({2, 2})).item<float>(), 0.0f);
  const std::string msg = error_message([&] { mean_squared_error(p, zeros({2, 3})); });
  EXPECT_NE(msg.find("mean_squared_error"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
}

TEST(BinaryCrossEntropyLoss, WeightedMeanMatchesNaiveF64) {
  const int64_t N = 12;
  const auto x = pseudo_random(N, -6, 6, 9), y = pseudo_random(N, 0, 1, 10);
  const auto w = pseudo_random(N, 0, 1, 11);
  double num = 0, den = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double s = 1 / (1 + std::exp(-x[i]));
    num += w[i] * -(y[i] * std::log(s) + (1 - y[i]) * std::log(1 - s));
    den += w[i];
  }
  Tensor X = array(x, {3, 4}, float64), Y = array(y, {3, 4}, float64);
  EXPECT_NEAR(binary_cross_entropy(X, Y, array(w, {3, 4}, float64)).item<double>(), num / den,
              1e-12);
  expect_grad_matches_fd(
      [&](const Tensor& v) {
        return binary_cross_entropy(v, Y, array(w, {3, 4}, float64));
      },
      x, {3, 4});
}

TEST(BinaryCrossEntropyLoss, StableForLargeLogits) {
  // -log sigmoid(-100) = 100 + log1p(e^-100); naive log(1 - sigmoid(100)) in f32 would be inf.
  Tensor x = array(std::vector<float>{100, -100, 100, -100}, {4});
  Tensor y = array(std::vector<float>{0, 1, 1, 0}, {4});
  const float got = binary_cross_entropy(x, y).item<float>();
  EXPECT_TRUE(std::isfinite(got));
  EXPECT_NEAR(got, 50.0f, 1e-4f);
}

TEST(BinaryCrossEntropyLoss, AllMaskedIsZeroWithZeroGradient) {
  Tensor y = array(std::vector<double>{0, 1, 1}, {3}, float64);
  Tensor w = zeros({3}, float64);
  auto f = [&](const std::vector<Tensor>& a) { return binary_cross_entropy(a[0], y, w); };
  Tensor x = array(std::vector<double>{0.5, -2, 3}, {3}, float64);
  EXPECT_EQ(f({x}).item<double>(), 0.0);
  for (double g : grad(f)({x})[0].to_vector<double>()) EXPECT_EQ(g, 0.0);
  const std::string msg = error_message([&] { binary_cross_entropy(x, zeros({4}, float64)); });
  EXPECT_NE(msg.find("binary_cross_entropy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3,)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace axlearn::layers
