// The CPU pad and concatenate kernels on shapes large enough to run on several threads, on
// strided and broadcast operands and in every storage width; and slice VJPs, whose cotangents
// the backward pass joins into one concatenate instead of a sum of zero-padded copies.
#include <gtest/gtest.h>

#include <algorithm>

#include "axlearn/core/primitives.h"
#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::ravel;
using testing::tensor_close;
using testing::unravel;
using testing::values_of;

// Small integers, exact in every dtype tested here (bf16 included).
Tensor int_valued(const Shape& shape, Dtype dtype, uint32_t seed = testing::kSeed) {
  std::vector<int64_t> v = testing::random_ints(num_elements(shape), -100, 100, seed);
  std::vector<double> d(v.begin(), v.end());
  return array(d, shape, dtype);
}

// lax.pad by definition: every output element is the padding value unless it is the image
// low + i * (interior + 1) of an operand index i on every axis.
std::vector<double> naive_pad(const std::vector<double>& x, const Shape& xs, double value,
                              const Shape& lo, const Shape& hi, const Shape& in, Shape* out) {
  out->clear();
  for (size_t d = 0; d < xs.size(); ++d) {
    out->push_back(lo[d] + hi[d] + xs[d] + std::max<int64_t>(xs[d] - 1, 0) * in[d]);
  }
  std::vector<double> y(size_t(num_elements(*out)), value);
  for (int64_t o = 0; o < int64_t(y.size()); ++o) {
    std::vector<int64_t> idx = unravel(o, *out);
    bool hit = true;
    for (size_t d = 0; d < xs.size() && hit; ++d) {
      const int64_t q = idx[d] - lo[d];
      hit = q >= 0 && q % (in[d] + 1) == 0 && q / (in[d] + 1) < xs[d];
      idx[d] = hit ? q / (in[d] + 1) : 0;
    }
    if (hit) y[size_t(o)] = x[size_t(ravel(idx, xs))];
  }
  return y;
}

struct PadCase {
  Shape shape, lo, hi, in;
};

// Output sizes from a few elements up to ~100k (several parallel tasks), padding on the first,
// a middle or the last axis, crops (negative widths) and interior padding.
const std::vector<PadCase>& pad_cases() {
  static const std::vector<PadCase> cases = {
      {{6, 40, 64}, {2, 0, 0}, {1, 0, 0}, {0, 0, 0}},  // whole leading blocks (layer stacks)
      {{8, 30, 3, 16}, {0, 0, 2, 0}, {0, 0, 1, 0}, {0, 0, 0, 0}},  // a middle axis (QKV split)
      {{16, 64, 32}, {0, 0, 32}, {0, 0, 0}, {0, 0, 0}},            // the last axis (rotate_half)
      {{16, 64, 32}, {0, 0, 0}, {0, 0, 32}, {0, 0, 0}},
      {{9, 7, 300}, {-2, 1, 3}, {1, -3, -5}, {0, 0, 0}},  // crops and pads at once
      {{5, 11, 40}, {1, 0, -1}, {0, 2, 2}, {1, 0, 2}},    // interior padding
      {{3, 4}, {0, 0}, {0, 0}, {0, 0}},                   // no padding at all
      {{300, 1, 200}, {0, 1, 0}, {0, 0, 0}, {0, 5, 0}},   // interior on a size-1 axis
      {{0, 5}, {1, 2}, {1, 0}, {0, 0}},                   // empty operand: all padding
  };
  return cases;
}

TEST(PadKernelTest, MatchesDefinitionInEveryWidth) {
  for (Dtype dtype : {float32, bfloat16, float64, int32, uint8}) {
    for (double value : {0.0, 3.0}) {
      for (const PadCase& c : pad_cases()) {
        Tensor x = int_valued(c.shape, dtype);
        if (dtype == uint8) x = astype(abs(astype(x, int32)), uint8);
        Shape s;
        auto want = naive_pad(values_of(x), c.shape, value, c.lo, c.hi, c.in, &s);
        Tensor y = pad_general(x, scalar(value, dtype), c.lo, c.hi, c.in);
        EXPECT_TRUE(tensor_close(y, s, dtype, want, 0, 0))
            << dtype_name(dtype) << " value " << value << " shape " << shape_str(c.shape) << " lo "
            << shape_str(c.lo) << " hi " << shape_str(c.hi) << " in " << shape_str(c.in);
      }
    }
  }
}

TEST(PadKernelTest, ReadsStridedAndBroadcastOperands) {
  // A transposed view (no contiguous rows), a strided slice view, and a broadcast (stride 0).
  Tensor base = int_valued({40, 24, 36}, float32);
  std::vector<Tensor> operands = {transpose(base, {1, 0, 2}), transpose(base, {2, 1, 0}),
                                  slice(base, {1, 0, 2}, {40, 24, 36}, {3, 1, 2}),
                                  slice(base, {0, 4, 0}, {40, 20, 36}),
                                  broadcast_to(int_valued({1, 24, 1}, float32), {30, 24, 50})};
  for (const Tensor& x : operands) {
    const Shape lo{1, 0, 2}, hi{0, 3, -1}, in{0, 1, 0};
    Shape s;
    auto want = naive_pad(values_of(x), x.shape(), -1.5, lo, hi, in, &s);
    EXPECT_TRUE(
        tensor_close(pad_general(x, scalar(-1.5, float32), lo, hi, in), s, float32, want, 0, 0))
        << shape_str(x.shape());
    const Shape lo2{0, 0, 5}, hi2{0, 0, 7}, zero{0, 0, 0};
    want = naive_pad(values_of(x), x.shape(), 0, lo2, hi2, zero, &s);
    EXPECT_TRUE(
        tensor_close(pad_general(x, scalar(0, float32), lo2, hi2, zero), s, float32, want, 0, 0))
        << shape_str(x.shape());
  }
}

TEST(PadKernelTest, NegativeZeroPaddingIsNotZeroBits) {
  // -0.0 must be stored as -0.0 (sign bit set), not memset to +0.0.
  Tensor y = pad(int_valued({4, 1000}, float32), {{1, 1}, {0, 0}}, -0.0);
  std::vector<float> v = y.to_vector<float>();
  EXPECT_TRUE(std::signbit(v[0]) && v[0] == 0.0f);
  EXPECT_TRUE(std::signbit(v.back()) && v.back() == 0.0f);
}

TEST(ConcatenateKernelTest, MatchesNaiveOnLargeStridedAndZeroOperands) {
  for (Dtype dtype : {float32, bfloat16, float64, int32}) {
    // (8, 30, n_k, 16) pieces along axis 2, one a transposed view, one zeros (a broadcast scalar),
    // one empty.
    Tensor a = int_valued({8, 30, 5, 16}, dtype, 1);
    Tensor b = transpose(int_valued({8, 30, 16, 3}, dtype, 2), {0, 1, 3, 2});
    Tensor z = zeros({8, 30, 4, 16}, dtype);
    Tensor e = zeros({8, 30, 0, 16}, dtype);
    Tensor c = int_valued({8, 30, 200, 16}, dtype, 3);
    std::vector<Tensor> parts = {a, b, e, z, c};
    Tensor y = concatenate(parts, 2);
    const Shape s{8, 30, 212, 16};
    std::vector<std::vector<double>> vals;
    for (const Tensor& p : parts) vals.push_back(values_of(p));
    std::vector<double> want(size_t(num_elements(s)));
    for (int64_t o = 0; o < num_elements(s); ++o) {
      std::vector<int64_t> idx = unravel(o, s);
      size_t k = 0;
      while (idx[2] >= parts[k].shape(2)) idx[2] -= parts[k++].shape(2);
      want[size_t(o)] = vals[k][size_t(ravel(idx, parts[k].shape()))];
    }
    EXPECT_TRUE(tensor_close(y, s, dtype, want, 0, 0)) << dtype_name(dtype);
  }
}

TEST(ConcatenateKernelTest, StacksLargeBlocksAlongTheFirstAxis) {
  std::vector<Tensor> layers;
  std::vector<double> want;
  for (uint32_t i = 0; i < 3; ++i) {
    layers.push_back(int_valued({1, 200, 300}, float32, 10 + i));
    std::vector<double> v = values_of(layers.back());
    want.insert(want.end(), v.begin(), v.end());
  }
  EXPECT_TRUE(tensor_close(concatenate(layers, 0), {3, 200, 300}, float32, want, 0, 0));
}

// ---- slice VJPs ----

bool graph_has(const std::vector<Tensor>& outputs, const char* name) {
  for (const Tensor& t : topological_order(outputs)) {
    if (t.primitive() && std::string(t.primitive()->name()) == name) return true;
  }
  return false;
}

TEST(SliceVjpTest, PiecesAlongOneAxisJoinWithoutPadding) {
  // f(x) = sum_i w_i * x[i] over the rows of a (4, 3, 5) stack, with row 2 unused and x also
  // used whole: df/dx[i] = w_i (0 for row 2) + v.
  Tensor x = testing::random_tensor({4, 3, 5}, float64);
  std::vector<Tensor> w;
  for (uint32_t i = 0; i < 4; ++i) w.push_back(testing::random_tensor({3, 5}, float64, -1, 1, i));
  Tensor v = testing::random_tensor({4, 3, 5}, float64, -1, 1, 99);
  auto f = [&](const std::vector<Tensor>& p) {
    Tensor total = sum(p[0] * v);
    for (int64_t i : {3, 0, 1}) total = total + sum(squeeze(slice_axis(p[0], 0, i, i + 1)) * w[i]);
    return total;
  };
  ValueAndGrad r = value_and_grad(f, {x});
  EXPECT_FALSE(graph_has(r.grads, "pad"));
  EXPECT_TRUE(graph_has(r.grads, "concatenate"));
  std::vector<double> want = values_of(v);
  for (int64_t i : {0, 1, 3}) {
    std::vector<double> wi = values_of(w[size_t(i)]);
    for (size_t j = 0; j < wi.size(); ++j) want[size_t(i) * 15 + j] += wi[j];
  }
  EXPECT_TRUE(tensor_close(r.grads[0], {4, 3, 5}, float64, want, 1e-15, 0));
}

TEST(SliceVjpTest, SplitAndRotateHalfMatchFiniteDifferences) {
  Tensor x = testing::random_tensor({2, 3, 7, 4}, float64);
  // A grouped QKV split on axis 2, then rotate_half on the last axis of q.
  testing::check_vjp(
      [](const std::vector<Tensor>& p) {
        auto parts = split(p[0], std::vector<int64_t>{3, 5}, 2);
        Tensor q = parts[0];
        Tensor rot = concatenate({negative(slice_axis(q, -1, 2, 4)), slice_axis(q, -1, 0, 2)}, -1);
        return q * 0.5 + rot * 2.0 + sum(parts[1] * parts[2], {2}, /*keepdims=*/true);
      },
      {x});
  Tensor rot_grad = grad([](const std::vector<Tensor>& p) {
    const Tensor& q = p[0];
    Tensor rot = concatenate({negative(slice_axis(q, -1, 2, 4)), slice_axis(q, -1, 0, 2)}, -1);
    return sum(q * rot);
  })({x})[0];
  EXPECT_FALSE(graph_has({rot_grad}, "pad"));
}

TEST(SliceVjpTest, OverlappingAndStridedSlicesStillAddUp) {
  // Windows that overlap, cut two axes, or step by 2 cannot be one concatenate; their padded
  // cotangents are summed as before.
  Tensor x = testing::random_tensor({6, 8}, float64);
  testing::check_vjp(
      [](const std::vector<Tensor>& p) {
        Tensor a = slice_axis(p[0], 0, 0, 4);
        Tensor b = slice_axis(p[0], 0, 2, 6);
        Tensor c = slice(p[0], {1, 1}, {5, 7});
        Tensor d = slice(p[0], {0, 0}, {6, 8}, {2, 1});
        return sum(a * b, {1}) + sum(c) + sum(d * d);
      },
      {x});
}

}  // namespace
}  // namespace axlearn
