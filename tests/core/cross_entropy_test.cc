// Fused cross-entropy: losses against naive f64 loops (label smoothing, z-loss, ignored labels,
// bf16 logits), the fused gradient against finite differences and the closed form, second order,
// and errors naming the op and the shapes.
#include "axlearn/core/cross_entropy.h"

#include <gtest/gtest.h>

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

struct Ref {
  std::vector<double> loss;     // per row
  std::vector<double> dlogits;  // per element, for dloss = 1
};

// Naive f64 loops from the (dtype-rounded) logit values.
Ref naive(const Tensor& logits, const std::vector<int64_t>& labels, CrossEntropyOptions o) {
  const std::vector<double> x = values_of(logits);
  const int64_t v = logits.shape().back();
  Ref ref{std::vector<double>(labels.size(), 0.0), std::vector<double>(x.size(), 0.0)};
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] < 0) continue;
    const double* row = x.data() + r * size_t(v);
    double m = -INFINITY;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, row[j]);
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(row[j] - m);
    const double lse = m + std::log(s);
    double loss = 0;
    for (int64_t j = 0; j < v; ++j) {
      const double t = (j == labels[r] ? 1 - o.label_smoothing : 0) + o.label_smoothing / double(v);
      loss -= t * (row[j] - lse);
      const double p = std::exp(row[j] - lse);
      ref.dlogits[r * size_t(v) + size_t(j)] = p - t + 2 * o.z_loss_scale * lse * p;
    }
    ref.loss[r] = loss + o.z_loss_scale * lse * lse;
  }
  return ref;
}

Tensor labels_tensor(const std::vector<int64_t>& v, const Shape& s, Dtype d = int32) {
  return astype(array(v, s, int64), d);
}

TEST(CrossEntropyTest, LossMatchesNaiveLoopsWithSmoothingZLossAndIgnoredLabels) {
  const std::vector<CrossEntropyOptions> opts = {{0, 0}, {0.1, 0}, {0, 1e-2}, {0.2, 1e-3}};
  for (Dtype dt : {float32, float64, bfloat16}) {
    for (const CrossEntropyOptions& o : opts) {
      const Shape shape{3, 5, 37};
      Tensor logits = random_tensor(shape, dt, -6, 6, 11);
      std::vector<int64_t> y = testing::random_ints(15, 0, 36, 12);
      y[3] = -1;
      y[9] = -100;  // any negative label is ignored
      Tensor loss = cross_entropy_loss(logits, labels_tensor(y, {3, 5}), o);
      const Dtype c = dt == float64 ? float64 : float32;
      const double rtol = dt == float64 ? 1e-13 : 2e-6;
      EXPECT_TRUE(tensor_close(loss, {3, 5}, c, naive(logits, y, o).loss, rtol, 1e-6))
          << dtype_name(dt) << " smoothing " << o.label_smoothing << " z " << o.z_loss_scale;
      EXPECT_EQ(values_of(loss)[3], 0.0);
    }
  }
}

TEST(CrossEntropyTest, LossMatchesOpsReferenceForLargeVocabularyAndInt64Labels) {
  Tensor logits = random_tensor({4, 1000}, float32, -20, 20, 5);
  std::vector<int64_t> y = {0, 999, 500, -1};
  const CrossEntropyOptions o{0.1, 1e-4};
  Tensor fused = cross_entropy_loss(logits, labels_tensor(y, {4}, int64), o);
  Tensor ref = cross_entropy_loss_reference(logits, labels_tensor(y, {4}, int64), o);
  EXPECT_TRUE(all_close(values_of(fused), values_of(ref), 1e-5, 1e-5));
}

TEST(CrossEntropyTest, GradientMatchesFiniteDifferencesInF64) {
  std::vector<int64_t> y = {2, -1, 0, 6, 4, 1};
  Tensor labels = labels_tensor(y, {2, 3});
  for (const CrossEntropyOptions& o :
       {CrossEntropyOptions{0, 0}, CrossEntropyOptions{0.15, 0.05}}) {
    auto fn = [&](const Args& a) { return cross_entropy_loss(a[0], labels, o); };
    check_vjp(fn, {random_tensor({2, 3, 7}, float64, -3, 3, 21)}, {}, 1e-7);
  }
}

TEST(CrossEntropyTest, GradientMatchesClosedFormAndIgnoredRowsGetZero) {
  for (Dtype dt : {float32, bfloat16, float64}) {
    Tensor logits = random_tensor({6, 50}, dt, -5, 5, 31);
    std::vector<int64_t> y = {3, -1, 49, 0, 7, 22};
    const CrossEntropyOptions o{0.1, 1e-2};
    Tensor labels = labels_tensor(y, {6});
    auto fn = [&](const Args& a) { return sum(cross_entropy_loss(a[0], labels, o)); };
    Tensor g = grad(fn)({logits})[0];
    ASSERT_EQ(g.dtype(), dt);
    const double tol = dt == float64 ? 1e-13 : (dt == bfloat16 ? 8e-3 : 2e-6);
    EXPECT_TRUE(tensor_close(g, {6, 50}, dt, naive(logits, y, o).dlogits, tol, tol))
        << dtype_name(dt);
    std::vector<double> gv = values_of(g);
    for (int j = 0; j < 50; ++j) EXPECT_EQ(gv[50 + j], 0.0);
  }
}

TEST(CrossEntropyTest, SecondOrderMatchesFiniteDifferences) {
  Tensor labels = labels_tensor({1, -1, 4}, {3});
  const CrossEntropyOptions o{0.1, 0.02};
  Tensor w = random_tensor({3}, float64, 0.5, 1.5, 3);
  auto fn = [&](const Args& a) {
    auto loss = [&](const Args& b) { return sum(cross_entropy_loss(b[0], labels, o) * w); };
    return grad(loss)({a[0]})[0];
  };
  check_vjp(fn, {random_tensor({3, 5}, float64, -2, 2, 41)}, {}, 1e-6);
}

TEST(CrossEntropyTest, ShapeAndDtypeErrorsNameOpAndShapes) {
  Tensor logits = zeros({2, 3, 10});
  try {
    cross_entropy_loss(logits, zeros({2, 4}, int32));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cross_entropy"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 4)"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3, 10)"), std::string::npos) << m;
  }
  EXPECT_THROW(cross_entropy_loss(logits, zeros({2, 3})), Error);  // float labels
  EXPECT_THROW(cross_entropy_loss(zeros({2, 3}, int32), zeros({2}, int32)), Error);
  EXPECT_THROW(cross_entropy_loss(logits, zeros({2, 3}, int32), {1.5, 0}), Error);
  EXPECT_THROW(cross_entropy_loss(logits, zeros({2, 3}, int32), {0, -1}), Error);
}

TEST(CrossEntropyTest, LabelAtOrBeyondVocabularyThrowsNamingThePosition) {
  Tensor logits = zeros({2, 3, 10});
  Tensor loss = cross_entropy_loss(logits, labels_tensor({0, 1, 2, 3, 10, 5}, {2, 3}));
  try {
    loss.eval();
    FAIL() << "expected Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("label 10 at position [1, 1]"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3, 10)"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace axlearn
