// checkpoint (remat): values and gradients equal the unwrapped function's (bitwise in f32, and
// finite differences in f64), under grad-of-grad, nesting, compile and random keys; and the peak
// memory of a deep chain's gradient is lower because activations are recomputed.
#include "axlearn/core/remat.h"

#include <gtest/gtest.h>

#include "axlearn/core/compile.h"
#include "axlearn/core/random.h"
#include "test_util.h"

namespace axlearn {
namespace {

using testing::random_tensor;
using testing::values_of;

void expect_bitwise_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  std::vector<double> g = values_of(got), w = values_of(want);
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] != w[i] && bad++ < 4)
      ADD_FAILURE() << what << "[" << i << "]: " << g[i] << " vs " << w[i];
  }
}

// A small MLP block with several intermediates: (B, D) x (D, D) weights -> (B, D).
std::vector<Tensor> block(const std::vector<Tensor>& in) {
  const Tensor &x = in[0], &w1 = in[1], &w2 = in[2];
  Tensor h = tanh(matmul(x, w1));
  h = h * sigmoid(h) + 0.5 * square(h);
  Tensor y = x + matmul(h, w2);
  return {y};
}

Tensor sum_loss(const VectorFn& fn, const std::vector<Tensor>& args) {
  return sum(square(fn(args)[0]));
}

TEST(RematTest, ValuesAndGradientsAreBitwiseEqualToUnwrappedInF32) {
  std::vector<Tensor> args = {random_tensor({4, 8}, float32, -1, 1, 1),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 2),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 3)};
  VectorFn remat = checkpoint(block);
  expect_bitwise_equal(remat(args)[0], block(args)[0], "forward");

  auto plain =
      value_and_grad([](const std::vector<Tensor>& a) { return sum_loss(block, a); }, args);
  auto rematted =
      value_and_grad([&](const std::vector<Tensor>& a) { return sum_loss(remat, a); }, args);
  expect_bitwise_equal(rematted.value, plain.value, "loss");
  for (size_t i = 0; i < args.size(); ++i) {
    expect_bitwise_equal(rematted.grads[i], plain.grads[i], "grad " + std::to_string(i));
  }
}

TEST(RematTest, GradientsMatchFiniteDifferencesInF64) {
  std::vector<Tensor> args = {random_tensor({3, 5}, float64, -1, 1, 4),
                              random_tensor({5, 5}, float64, -0.7, 0.7, 5),
                              random_tensor({5, 5}, float64, -0.7, 0.7, 6)};
  VectorFn remat = checkpoint(block);
  testing::check_vjp([&](const std::vector<Tensor>& a) { return remat(a)[0]; }, args);
}

TEST(RematTest, TheGraphHoldsOneNodeAndTheBackwardIsCheckpointedToo) {
  Tensor x = random_tensor({4, 8}, float32, -1, 1, 7);
  Tensor w = random_tensor({8, 8}, float32, -1, 1, 8);
  Tensor y = checkpoint(block)({x, w, w})[0];
  ASSERT_NE(y.primitive(), nullptr);
  EXPECT_STREQ(y.primitive()->name(), "checkpoint");
  EXPECT_EQ(y.inputs().size(), 3u) << "inputs are the call's inputs (no captures here)";
  // The VJP of the checkpoint node is itself one checkpoint node: the recomputation is hidden.
  auto cts = y.primitive()->vjp(y.inputs(), y, ones_like(y));
  ASSERT_EQ(cts.size(), 3u);
  for (const Tensor& c : cts) EXPECT_FALSE(c.defined()) << "no input is being traced";
  auto vg = value_and_grad(
      [&](const std::vector<Tensor>& p) {
        return sum(checkpoint(block)({x, p[0], p[0]})[0]);
      },
      {w});
  // grad = ct(w1) + ct(w2): two outputs of one backward call, and nothing of the forward's.
  int calls = 0, outputs = 0;
  for (const Tensor& t : topological_order({vg.grads[0]})) {
    calls += dynamic_cast<const detail::RematCall*>(t.primitive()) != nullptr;
    outputs += dynamic_cast<const detail::RematOutput*>(t.primitive()) != nullptr;
  }
  EXPECT_EQ(calls, 1) << "one checkpointed backward for both cotangents";
  EXPECT_EQ(outputs, 2);
}

TEST(RematTest, MultipleOutputsAndCapturedTensorsGetGradients) {
  Tensor x = random_tensor({3, 4}, float64, -1, 1, 9);
  Tensor w = random_tensor({4, 4}, float64, -1, 1, 10);
  Tensor v = random_tensor({3, 4}, float64, -1, 1, 11);
  // w is captured, not passed: closure conversion must make it an input of the node.
  auto body = [](const Tensor& ww) {
    return VectorFn([ww](const std::vector<Tensor>& in) {
      Tensor h = tanh(matmul(in[0], ww));
      return std::vector<Tensor>{h * in[1], sum(exp(h), {1}),
                                 astype(greater(h, zeros_like(h)), int32)};
    });
  };
  auto loss = [&](const std::vector<Tensor>& p, bool remat) {
    VectorFn f = body(p[1]);
    if (remat) f = checkpoint(f);
    auto outs = f({p[0], v});
    return sum(outs[0] * 2.0) + sum(square(outs[1])) + sum(astype(outs[2], float64));
  };
  auto plain = value_and_grad([&](const std::vector<Tensor>& p) { return loss(p, false); }, {x, w});
  auto rem = value_and_grad([&](const std::vector<Tensor>& p) { return loss(p, true); }, {x, w});
  // Two calls: the forward (square's vjp reads outs[1]) and a single checkpointed backward that
  // pulls back both float outputs' cotangents (one replay, not one per output).
  int calls = 0;
  for (const Tensor& t : topological_order({rem.grads[0], rem.grads[1]})) {
    calls += dynamic_cast<const detail::RematCall*>(t.primitive()) != nullptr;
  }
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(testing::all_close(values_of(rem.value), values_of(plain.value), 1e-14, 0));
  EXPECT_TRUE(testing::all_close(values_of(rem.grads[0]), values_of(plain.grads[0]), 1e-13, 1e-15));
  EXPECT_TRUE(testing::all_close(values_of(rem.grads[1]), values_of(plain.grads[1]), 1e-13, 1e-15));
  // The outputs themselves, and their dtypes, come through the token.
  auto outs = checkpoint(body(w))({x, v});
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_EQ(outs[2].dtype(), int32);
  auto ref = body(w)({x, v});
  for (size_t i = 0; i < 3; ++i)
    expect_bitwise_equal(outs[i], ref[i], "output " + std::to_string(i));
}

TEST(RematTest, GradOfGradMatchesUnwrapped) {
  Tensor x = random_tensor({6}, float64, -1.5, 1.5, 12);
  Tensor u = random_tensor({6}, float64, -1, 1, 13);
  auto f = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{sin(in[0]) * in[0] + exp(0.3 * in[0])};
  };
  // Hessian-vector product: d/dx <grad f(x), u>.
  auto hvp = [&](const VectorFn& fn) {
    auto inner = [&](const std::vector<Tensor>& p) {
      auto g = grad([&](const std::vector<Tensor>& q) { return sum(fn(q)[0]); })(p);
      return sum(g[0] * u);
    };
    return grad(inner)({x})[0];
  };
  Tensor want = hvp(f);
  Tensor got = hvp(checkpoint(f));
  EXPECT_TRUE(testing::all_close(values_of(got), values_of(want), 1e-13, 1e-15));
  // And against the closed form: f'' = 2 cos x - x sin x + 0.09 exp(0.3 x).
  std::vector<double> xs = values_of(x), us = values_of(u), closed;
  for (size_t i = 0; i < xs.size(); ++i) {
    closed.push_back(
        us[i] * (2 * std::cos(xs[i]) - xs[i] * std::sin(xs[i]) + 0.09 * std::exp(0.3 * xs[i])));
  }
  EXPECT_TRUE(testing::all_close(values_of(got), closed, 1e-12, 1e-14));
}

TEST(RematTest, DropoutInsideRematDrawsTheSameMaskWhenRecomputed) {
  Tensor x = random_tensor({16, 16}, float32, -1, 1, 14);
  Tensor key = random::key(42);
  auto dropout_block = [](const std::vector<Tensor>& in) {
    Tensor keep = random::bernoulli(in[1], 0.5, in[0].shape());
    Tensor h = where(keep, tanh(in[0]) / 0.5, zeros_like(in[0]));
    return std::vector<Tensor>{h * in[0]};
  };
  VectorFn remat = checkpoint(dropout_block);
  auto loss = [&](const VectorFn& fn) {
    return value_and_grad(
        [&](const std::vector<Tensor>& p) {
          return sum(square(fn({p[0], key})[0]));
        },
        {x});
  };
  auto plain = loss(dropout_block);
  auto rem = loss(remat);
  expect_bitwise_equal(rem.value, plain.value, "loss");
  expect_bitwise_equal(rem.grads[0], plain.grads[0], "grad");
  // The mask really is random: about half of the gradient is zero.
  int zeros_count = 0;
  for (double g : values_of(rem.grads[0])) zeros_count += g == 0;
  EXPECT_GT(zeros_count, 64);
  EXPECT_LT(zeros_count, 192);
}

TEST(RematTest, NestedCheckpointsGiveTheSameGradients) {
  std::vector<Tensor> args = {random_tensor({4, 8}, float32, -1, 1, 15),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 16),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 17)};
  VectorFn inner = checkpoint(block);
  VectorFn outer = checkpoint([&](const std::vector<Tensor>& a) {
    auto y = inner(a);
    return inner({y[0], a[1], a[2]});
  });
  auto twice = [](const std::vector<Tensor>& a) {
    auto y = block(a);
    return block({y[0], a[1], a[2]});
  };
  auto plain =
      value_and_grad([&](const std::vector<Tensor>& a) { return sum_loss(twice, a); }, args);
  auto rem = value_and_grad([&](const std::vector<Tensor>& a) { return sum_loss(outer, a); }, args);
  expect_bitwise_equal(rem.value, plain.value, "loss");
  for (size_t i = 0; i < args.size(); ++i) {
    expect_bitwise_equal(rem.grads[i], plain.grads[i], "grad " + std::to_string(i));
  }
}

TEST(RematTest, WorksInsideCompileForValuesAndGradients) {
  std::vector<Tensor> args = {random_tensor({4, 8}, float32, -1, 1, 18),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 19),
                              random_tensor({8, 8}, float32, -0.5, 0.5, 20)};
  VectorFn remat = checkpoint(block);
  auto step = [](const VectorFn& fn) {
    return [fn](const std::vector<Tensor>& a) {
      auto vg = value_and_grad([&](const std::vector<Tensor>& p) { return sum_loss(fn, p); }, a);
      std::vector<Tensor> out = {vg.value};
      out.insert(out.end(), vg.grads.begin(), vg.grads.end());
      return out;
    };
  };
  CompiledFunction compiled(step(remat));
  auto got = compiled(args);
  auto again = compiled(args);  // the cached plan, now without tracing
  EXPECT_EQ(compiled.num_traces(), 1);
  auto want = step(block)(args);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(testing::all_close(values_of(got[i]), values_of(want[i]), 1e-6, 1e-6)) << i;
    expect_bitwise_equal(again[i], got[i], "second call " + std::to_string(i));
  }
  // The forward alone under compile is one opaque step and bitwise equal.
  auto fwd = compile(remat)(args);
  expect_bitwise_equal(fwd[0], block(args)[0], "compiled forward");
}

TEST(RematTest, UnderCompileOnlyDifferentiatedInputsGetCotangents) {
  // b is an input of the compiled step but not differentiated: the backward call must pull back
  // w alone (one output), not b as well, though both are abstract while compile traces.
  VectorFn f = checkpoint([](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{tanh(matmul(in[0], in[1]) + in[2])};
  });
  Tensor x = random_tensor({4, 8}, float32, -1, 1, 23);
  Tensor w = random_tensor({8, 8}, float32, -1, 1, 24);
  Tensor b = random_tensor({4, 8}, float32, -1, 1, 25);
  CompiledFunction step([&](const std::vector<Tensor>& in) {
    return grad([&](const std::vector<Tensor>& p) { return sum(f({x, p[0], in[1]})[0]); })({in[0]});
  });
  Tensor g = step({w, b})[0];
  const std::string plan = step.last_plan_string();
  EXPECT_EQ(plan.find("outputs=2"), std::string::npos) << plan;
  size_t calls = 0;
  for (size_t at = plan.find("checkpoint[outputs=1"); at != std::string::npos;
       at = plan.find("checkpoint[outputs=1", at + 1)) {
    ++calls;
  }
  EXPECT_EQ(calls, 1u) << "the backward alone (grad does not read the forward's value)\n" << plan;
  auto want =
      grad([&](const std::vector<Tensor>& p) { return sum(tanh(matmul(x, p[0]) + b)); })({w})[0];
  EXPECT_TRUE(testing::all_close(values_of(g), values_of(want), 1e-6, 1e-6));
}

// Bytes allocated beyond what was in use before fn ran, at the peak.
template <typename Fn>
size_t peak_extra_bytes(Fn&& fn) {
  CpuAllocator& a = CpuAllocator::instance();
  const size_t before = a.bytes_in_use();
  a.reset_peak();
  fn();
  return a.peak_bytes() - before;
}

TEST(RematTest, DeepChainGradientPeaksLowerUnderRemat) {
  // 8 layers of 5 elementwise ops on 1 MiB activations: without remat the backward keeps ~5
  // activations per layer alive at its start; with it, one per layer plus one layer's worth.
  const int64_t n = 1 << 18;
  const int layers = 8;
  Tensor x = random_tensor({n}, float32, -1, 1, 21);
  x.eval();
  auto layer = [](const std::vector<Tensor>& in) {
    Tensor h = tanh(in[0] * in[1]);
    h = sigmoid(h) * h;
    return std::vector<Tensor>{exp(h * 0.5) + in[0]};
  };
  auto run = [&](bool remat) {
    VectorFn f = remat ? checkpoint(layer) : VectorFn(layer);
    Tensor s = scalar(0.9f);
    ValueAndGrad vg = value_and_grad(
        [&](const std::vector<Tensor>& p) {
          Tensor h = p[0];
          for (int i = 0; i < layers; ++i) h = f({h, p[1]})[0];
          return sum(h);
        },
        {x, s});
    eval(vg.value, vg.grads[0], vg.grads[1]);
    return vg;
  };
  ValueAndGrad plain, rem;
  const size_t plain_peak = peak_extra_bytes([&] { plain = run(false); });
  const size_t remat_peak = peak_extra_bytes([&] { rem = run(true); });
  const size_t activation = size_t(n) * 4;
  EXPECT_GT(plain_peak, size_t(3 * layers) * activation) << "the baseline keeps activations";
  EXPECT_LT(remat_peak, plain_peak / 2) << "remat peak " << remat_peak / activation
                                        << " activations, plain " << plain_peak / activation;
  expect_bitwise_equal(rem.grads[0], plain.grads[0], "grad x");
  expect_bitwise_equal(rem.grads[1], plain.grads[1], "grad s");
}

TEST(RematTest, ReadingAValueInsideTheFunctionIsAnError) {
  VectorFn f = checkpoint([](const std::vector<Tensor>& in) {
    double v = sum(in[0]).item<double>();
    return std::vector<Tensor>{in[0] * v};
  });
  try {
    f({ones({3})});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint"), std::string::npos) << e.what();
  }
}

TEST(RematTest, IntegerInputsPassNoGradient) {
  Tensor x = random_tensor({5}, float32, -1, 1, 22);
  Tensor idx = array(std::vector<int32_t>{4, 0, 2}, {3});
  VectorFn f = checkpoint(
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{take(in[0], in[1]) * 3.0}; });
  auto g = grad([&](const std::vector<Tensor>& p) { return sum(f({p[0], idx})[0]); })({x});
  EXPECT_EQ(values_of(g[0]), (std::vector<double>{3, 0, 3, 0, 3}));
}

}  // namespace
}  // namespace axlearn
