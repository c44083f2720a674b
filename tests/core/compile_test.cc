// compile(): compiled functions return exactly (bit for bit) what the eager function returns, for
// every dtype and mix of ops; plans are traced once per signature, CSE and fusion shrink them, and
// liveness-based release keeps the memory of an elementwise chain near one output buffer.
#include "axlearn/core/compile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "test_util.h"

namespace axlearn {
namespace {

using testing::random_tensor;
using testing::random_values;

// Same shape, dtype and bytes; on mismatch names the first differing element.
::testing::AssertionResult bitwise_equal(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape() || got.dtype() != want.dtype()) {
    return ::testing::AssertionFailure() << "got " << got.dtype() << shape_str(got.shape())
                                         << ", want " << want.dtype() << shape_str(want.shape());
  }
  Array a = contiguous(got.array()), b = contiguous(want.array());
  const size_t es = size_of(a.dtype);
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  for (int64_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      return ::testing::AssertionFailure() << "element " << i << " of " << a.size() << ": got "
                                           << a.get_as_double(i) << ", want " << b.get_as_double(i);
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult all_bitwise_equal(const std::vector<Tensor>& got,
                                             const std::vector<Tensor>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " outputs, want " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    auto r = bitwise_equal(got[i], want[i]);
    if (!r) return ::testing::AssertionFailure() << "output " << i << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

std::vector<Tensor> run_eager(const VectorFn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> out = fn(inputs);
  eval(out);
  return out;
}

// The benchmark's chain: tanh(x*a + b) * exp(-x) - x/2, eight elementwise primitives.
std::vector<Tensor> six_op_chain(const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  return {tanh(x * 1.5 + 0.25) * exp(-x) - x / 2.0};
}

TEST(CompileTest, ElementwiseChainEqualsEagerBitwiseInEveryFloatDtype) {
  for (Dtype d : {float32, bfloat16, float16, float64}) {
    SCOPED_TRACE(dtype_name(d));
    // 3 x 1000: not a multiple of the chunk size, so the tail chunk is exercised.
    Tensor x = random_tensor({3, 1000}, d, -3, 3);
    CompiledFunction f(six_op_chain);
    std::vector<Tensor> got = f({x});
    EXPECT_TRUE(all_bitwise_equal(got, run_eager(six_op_chain, {x})));
    EXPECT_EQ(f.last_plan_stats().fused_groups, 1);
    // And both are right: an f64 reference within the dtype's rounding.
    std::vector<double> xv = x.to_vector<double>();
    std::vector<double> want(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      want[i] = std::tanh(xv[i] * 1.5 + 0.25) * std::exp(-xv[i]) - xv[i] / 2;
    }
    const double tol = d == float64 ? 1e-12 : d == float32 ? 1e-5 : 5e-2;
    EXPECT_TRUE(testing::all_close(got[0].to_vector<double>(), want, tol, tol));
  }
}

TEST(CompileTest, FusedBf16ChainRoundsAfterEveryOpLikeEager) {
  // Without rounding between ops the fused result would differ from eager in many elements:
  // check the test can see that, then that the compiled result matches eager exactly.
  auto fn = [](const std::vector<Tensor>& in) {
    Tensor x = in[0];
    return std::vector<Tensor>{((x * 1.1 + 0.3) * x - 0.7) * 3.3};
  };
  Tensor x = random_tensor({4096}, bfloat16, -2, 2);
  Tensor eager = run_eager(fn, {x})[0];
  Tensor unrounded = astype(fn({astype(x, float32)})[0], bfloat16);
  EXPECT_FALSE(bitwise_equal(unrounded, eager));
  CompiledFunction f(fn);
  EXPECT_TRUE(bitwise_equal(f({x})[0], eager));
}

TEST(CompileTest, BroadcastingAndStridedInputsEqualEager) {
  auto fn = [](const std::vector<Tensor>& in) {
    const Tensor &x = in[0], &row = in[1], &col = in[2], &s = in[3];
    Tensor y = (x + row) * col - s;  // (4, 5, 300) from (4, 5, 300), (1, 300), (5, 1), ()
    return std::vector<Tensor>{y, sigmoid(y) * row};
  };
  Tensor x = random_tensor({4, 5, 300}, float32, -2, 2, 1);
  Tensor row = random_tensor({1, 300}, float32, -2, 2, 2);
  Tensor col = random_tensor({5, 1}, float32, -2, 2, 3);
  Tensor s = random_tensor({}, float32, -2, 2, 4);
  CompiledFunction f(fn);
  std::vector<Tensor> in = {x, row, col, s};
  EXPECT_TRUE(all_bitwise_equal(f(in), run_eager(fn, in)));
  // Broadcasts are read as views inside the loop.
  EXPECT_EQ(f.last_plan_stats().kernels, 1) << f.last_plan_string();

  // A transposed (strided) input.
  Tensor t = transpose(random_tensor({300, 4}, float32, -2, 2, 5));
  eval(t);
  auto g = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{exp(in[0]) * in[0] + 1.0};
  };
  EXPECT_TRUE(all_bitwise_equal(CompiledFunction(g)({t}), run_eager(g, {t})));
}

TEST(CompileTest, MixedDtypesCompareSelectAndConvertEqualEager) {
  auto fn = [](const std::vector<Tensor>& in) {
    const Tensor &x = in[0], &y = in[1], &k = in[2];
    Tensor m = greater(x, y);               // bool
    Tensor s = where(m, x * 2.0, y - 1.0);  // select f32
    Tensor i = astype(s * 4.0, int32) + k;  // f32 -> i32, integer add
    Tensor r = astype(i, float32) * 0.5 + astype(isfinite(x / y), float32);
    Tensor b = astype(x, bfloat16) * 3.0 + astype(y, bfloat16);  // bf16 arithmetic
    Tensor d = astype(astype(x, float64) * 1.1, bfloat16);       // f64 -> bf16, rounded once
    Tensor l = logical_and(m, less(x, zeros({}, float32)));
    Tensor u = astype(astype(abs(i), uint8), float32) - 1.0;  // integer truncation
    return std::vector<Tensor>{s, i, r, b, d, l, u};
  };
  Tensor x = random_tensor({2, 777}, float32, -40, 40, 11);
  Tensor y = random_tensor({2, 777}, float32, -40, 40, 12);
  std::vector<int32_t> kv;
  for (int64_t v : testing::random_ints(2 * 777, -1000, 1000, 13)) kv.push_back(int32_t(v));
  Tensor k = array(kv, {2, 777});
  std::vector<Tensor> in = {x, y, k};
  CompiledFunction f(fn);
  EXPECT_TRUE(all_bitwise_equal(f(in), run_eager(fn, in)));
  EXPECT_GE(f.last_plan_stats().fused_nodes, 15);
}

TEST(CompileTest, ReductionsAndMatmulBetweenElementwiseChainsEqualEager) {
  auto fn = [](const std::vector<Tensor>& in) {
    const Tensor &x = in[0], &w = in[1], &b = in[2];
    Tensor h = tanh(matmul(x * 0.5 + 1.0, w) + b);  // (16, 64)
    // Softmax written out: the exp feeds a reduction whose result is used by the same chain,
    // which must not be fused into one loop with it.
    Tensor e = exp(h - max(h, {-1}, true));
    Tensor p = e / sum(e, {-1}, true);
    return std::vector<Tensor>{p * 2.0 - 1.0, mean(square(h))};
  };
  for (Dtype d : {float32, bfloat16}) {
    SCOPED_TRACE(dtype_name(d));
    std::vector<Tensor> in = {random_tensor({16, 32}, d, -1, 1, 21),
                              random_tensor({32, 64}, d, -0.3, 0.3, 22),
                              random_tensor({64}, d, -1, 1, 23)};
    CompiledFunction f(fn);
    std::vector<Tensor> got = f(in);
    EXPECT_TRUE(all_bitwise_equal(got, run_eager(fn, in)));
    // Rows of the softmax sum to one: (p*2-1) sums to 2 - 64.
    std::vector<double> v = got[0].to_vector<double>();
    double row0 = 0;
    for (int j = 0; j < 64; ++j) row0 += v[size_t(j)];
    EXPECT_NEAR(row0, 2.0 - 64.0, d == float32 ? 1e-4 : 0.6);
  }
}

// A two-layer MLP: loss and gradients traced together into one plan.
Tensor mlp_loss(const std::vector<Tensor>& a) {
  const Tensor &w1 = a[0], &b1 = a[1], &w2 = a[2], &b2 = a[3], &x = a[4], &y = a[5];
  Tensor h = gelu(matmul(x, w1) + b1, true);
  Tensor out = matmul(h, w2) + b2;
  return mean(square(out - y));
}

std::vector<Tensor> mlp_step(const std::vector<Tensor>& a) {
  ValueAndGrad vg = value_and_grad(mlp_loss, a, {0, 1, 2, 3});
  std::vector<Tensor> out = {vg.value};
  for (size_t i = 0; i < vg.grads.size(); ++i) out.push_back(a[i] - vg.grads[i] * 0.1);
  return out;
}

TEST(CompileTest, MlpForwardAndBackwardEqualEager) {
  for (Dtype d : {float32, bfloat16}) {
    SCOPED_TRACE(dtype_name(d));
    std::vector<Tensor> params = {
        random_tensor({8, 16}, d, -0.5, 0.5, 31), random_tensor({16}, d, -0.1, 0.1, 32),
        random_tensor({16, 4}, d, -0.5, 0.5, 33), random_tensor({4}, d, -0.1, 0.1, 34)};
    Tensor x = random_tensor({32, 8}, d, -1, 1, 35), y = random_tensor({32, 4}, d, -1, 1, 36);
    CompiledFunction step(mlp_step);
    std::vector<Tensor> eager_params = params;
    // Three training steps, each feeding the updated parameters back in.
    for (int it = 0; it < 3; ++it) {
      std::vector<Tensor> got = step({params[0], params[1], params[2], params[3], x, y});
      std::vector<Tensor> want = run_eager(
          mlp_step, {eager_params[0], eager_params[1], eager_params[2], eager_params[3], x, y});
      ASSERT_TRUE(all_bitwise_equal(got, want)) << "step " << it;
      for (int i = 0; i < 4; ++i) {
        params[i] = got[1 + i];
        eager_params[i] = want[1 + i];
      }
    }
    EXPECT_EQ(step.num_traces(), 1);
    EXPECT_GT(step.last_plan_stats().fused_groups, 0);
  }
}

TEST(CompileTest, GradOfCompiledFunctionEqualsGradOfTheFunction) {
  // Under an outer vjp the compiled function is inlined, so gradients flow through it.
  CompiledFunction f(six_op_chain);
  auto through_compiled = [&](const std::vector<Tensor>& a) { return sum(f({a[0]})[0]); };
  auto direct = [](const std::vector<Tensor>& a) { return sum(six_op_chain({a[0]})[0]); };
  Tensor x = random_tensor({100}, float32, -2, 2, 41);
  ValueAndGrad got = value_and_grad(through_compiled, {x});
  ValueAndGrad want = value_and_grad(direct, {x});
  eval(got.grads);
  eval(want.grads);
  EXPECT_TRUE(bitwise_equal(got.value, want.value));
  EXPECT_TRUE(bitwise_equal(got.grads[0], want.grads[0]));
  // d/dx of the chain is not zero anywhere here; a disconnected graph would give zeros.
  EXPECT_NE(got.grads[0].to_vector<float>()[0], 0.0f);
}

TEST(CompileTest, CompiledFunctionInsideAnotherIsInlinedIntoItsTrace) {
  CompiledFunction inner(six_op_chain);
  auto outer_fn = [&](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{inner({in[0] * 2.0})[0] + 1.0};
  };
  CompiledFunction outer(outer_fn);
  Tensor x = random_tensor({300}, float32, -1, 1, 45);
  std::vector<Tensor> got = outer({x});
  EXPECT_EQ(inner.num_traces(), 0);
  EXPECT_EQ(outer.last_plan_stats().kernels, 1);  // one loop across the call boundary
  // Called eagerly, the inner function runs its own plan; the results agree.
  EXPECT_TRUE(all_bitwise_equal(got, run_eager(outer_fn, {x})));
  EXPECT_EQ(inner.num_traces(), 1);
}

TEST(CompileTest, ConcurrentCallsShareOnePlan) {
  CompiledFunction f(six_op_chain);
  std::vector<Tensor> xs, want;
  for (uint32_t i = 0; i < 8; ++i) {
    xs.push_back(random_tensor({2000}, float32, -2, 2, 200 + i));
    want.push_back(run_eager(six_op_chain, {xs.back()})[0]);
  }
  std::vector<Tensor> got(xs.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < xs.size(); i += 2) got[i] = f({xs[i]})[0];
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(all_bitwise_equal(got, want));
  EXPECT_EQ(f.num_traces(), 1);
}

TEST(CompileTest, PlanIsReusedPerSignature) {
  int calls = 0;
  CompiledFunction f([&](const std::vector<Tensor>& in) {
    ++calls;  // side effects run at trace time only
    return std::vector<Tensor>{in[0] * 2.0 + in[0]};
  });
  for (int i = 0; i < 5; ++i) {
    Tensor x = full({10}, double(i), float32);
    // New values, same signature: a fresh result from the cached plan.
    EXPECT_EQ(f({x})[0].to_vector<float>()[3], 3.0f * float(i));
  }
  EXPECT_EQ(f.num_traces(), 1);
  EXPECT_EQ(calls, 1);
  f({zeros({11}, float32)});
  EXPECT_EQ(f.num_traces(), 2);
  f({zeros({10}, float64)});
  EXPECT_EQ(f.num_traces(), 3);
  f({ones({10}, float32)});
  EXPECT_EQ(f.num_traces(), 3);
  EXPECT_EQ(calls, 3);
}

TEST(CompileTest, CommonSubexpressionsAreMerged) {
  auto fn = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    Tensor a = exp(x) * sum(x);
    Tensor b = exp(x) * sum(x);  // the same three nodes again
    return std::vector<Tensor>{a + b};
  };
  Tensor x = random_tensor({64}, float32, -1, 1, 51);
  CompiledFunction f(fn);
  EXPECT_TRUE(all_bitwise_equal(f({x}), run_eager(fn, {x})));
  PlanStats s = f.last_plan_stats();
  // exp, sum, broadcast, mul twice, plus add: 9 traced, 5 after CSE.
  EXPECT_EQ(s.nodes_traced, 9);
  EXPECT_EQ(s.nodes_after_cse, 5);
}

TEST(CompileTest, FusionTurnsAChainIntoOneKernel) {
  Tensor x = random_tensor({1000}, float32, -1, 1, 61);
  CompiledFunction f(six_op_chain);
  f({x});
  PlanStats s = f.last_plan_stats();
  EXPECT_EQ(s.nodes_after_cse, 8 + 3);  // eight ops plus three scalar broadcasts
  EXPECT_EQ(s.fused_groups, 1);
  EXPECT_EQ(s.fused_nodes, 8);
  EXPECT_EQ(s.kernels, 1) << f.last_plan_string();
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

TEST(CompileTest, CompiledChainPeakMemoryStaysNearOneBuffer) {
  const int64_t n = 1 << 20;
  const size_t buffer = size_t(n) * 4;
  Tensor x = random_tensor({n}, float32, -2, 2, 71);
  CompiledFunction f(six_op_chain);
  f({x});  // trace outside the measurement
  size_t compiled = peak_extra_bytes([&] { Tensor y = f({x})[0]; });
  size_t eager = peak_extra_bytes([&] {
    Tensor y = six_op_chain({x})[0];
    eval(y);
  });
  EXPECT_LE(double(compiled), 2.5 * double(buffer));
  EXPECT_LT(compiled, eager);
  EXPECT_GE(eager, 2 * buffer);
}

TEST(CompileTest, FusedLoopWritesIntoTheDeadBufferOfItsInput) {
  // cumsum's output dies at the fused chain that reads it, which takes over its buffer.
  auto fn = [](const std::vector<Tensor>& in) {
    Tensor c = cumsum(in[0]);
    return std::vector<Tensor>{tanh(c * 0.01 + 1.0) * 2.0};
  };
  const int64_t n = 1 << 18;
  const size_t buffer = size_t(n) * 4;
  Tensor x = random_tensor({n}, float32, -1, 1, 81);
  CompiledFunction f(fn);
  std::vector<Tensor> first = f({x});
  EXPECT_TRUE(all_bitwise_equal(first, run_eager(fn, {x})));
  size_t compiled = peak_extra_bytes([&] { Tensor y = f({x})[0]; });
  EXPECT_LE(compiled, buffer + buffer / 4);
  // The result does not alias anything the next call writes.
  std::vector<float> v = first[0].to_vector<float>();
  f({random_tensor({n}, float32, -1, 1, 82)});
  EXPECT_EQ(first[0].to_vector<float>(), v);
}

TEST(CompileTest, NestedTreeFunctionEqualsEager) {
  auto sgd = [](const NestedTensor& t) {
    NestedTensor out;
    out["w"] = t.at("w").tensor() - t.at("g").at("w").tensor() * 0.1;
    out["b"] = t.at("b").tensor() - t.at("g").at("b").tensor() * 0.1;
    out["norm"] = sqrt(sum(square(t.at("g").at("w").tensor())));
    return out;
  };
  NestedTensor tree;
  tree["w"] = random_tensor({4, 3}, float32, -1, 1, 91);
  tree["b"] = random_tensor({3}, float32, -1, 1, 92);
  tree["g"]["w"] = random_tensor({4, 3}, float32, -1, 1, 93);
  tree["g"]["b"] = random_tensor({3}, float32, -1, 1, 94);
  NestedFn f = compile(sgd);
  NestedTensor got = f(tree), want = sgd(tree);
  eval(want);
  ASSERT_TRUE(got.same_structure(want));
  EXPECT_TRUE(all_bitwise_equal(got.leaves(), want.leaves()));
  EXPECT_EQ(got.at("norm").tensor().shape(), Shape{});
}

TEST(CompileTest, CapturedTensorsBecomeConstantsAndInputsMayBeReturned) {
  Tensor w = random_tensor({50}, float32, -1, 1, 101) * 3.0;  // lazy, captured
  auto fn = [&](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0] * w, in[0], full({2}, 7.0), in[0] * w};
  };
  Tensor x = random_tensor({50}, float32, -1, 1, 102);
  CompiledFunction f(fn);
  std::vector<Tensor> got = f({x});
  EXPECT_TRUE(all_bitwise_equal(got, run_eager(fn, {x})));
  EXPECT_TRUE(got[1].same(x));
  EXPECT_EQ(f.last_plan_stats().nodes_after_cse, 1);
}

TEST(CompileTest, ReadingATracedValueThrowsAnErrorThatExplains) {
  CompiledFunction f([](const std::vector<Tensor>& in) {
    if (sum(in[0]).item<float>() > 0) return std::vector<Tensor>{in[0]};
    return std::vector<Tensor>{-in[0]};
  });
  try {
    f({ones({3}, float32)});
    FAIL() << "no exception";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("compile"), std::string::npos) << msg;
    EXPECT_NE(msg.find("traced"), std::string::npos) << msg;
    EXPECT_NE(msg.find("float32(3,)"), std::string::npos) << msg;
  }
  EXPECT_EQ(f.num_traces(), 0);
}

TEST(CompileTest, ShapeErrorsWhileTracingNameTheSignature) {
  CompiledFunction f(
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] + in[1]}; });
  try {
    f({ones({3}, float32), ones({4}, float32)});
    FAIL() << "no exception";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("compile"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(3,)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(4,)"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace axlearn

namespace axlearn {
namespace {

// Two fusion groups must never each wait for the other: here {max, div, mul} would need the
// group {mul, add, mul} (through c2), which needs cumsum of the div. The fuser sees that a
// group runs as one kernel and keeps them apart; the compiled function matches eager.
TEST(CompileTest, FusionNeverMakesTwoGroupsWaitForEachOther) {
  auto fn = [](const std::vector<Tensor>& in) {
    Tensor m = maximum(in[0], in[1]);
    Tensor d1 = in[2] / m;
    Tensor q = cumsum(d1, 0);
    Tensor c1 = q * 2.0;
    Tensor c2 = in[3] + 1.0;
    Tensor c3 = c1 * c2;
    Tensor d2 = multiply(m, c2);
    return std::vector<Tensor>{c3, d2};
  };
  std::vector<Tensor> in;
  for (int i = 0; i < 4; ++i) in.push_back(astype(arange(1, 9), float32) * double(i + 1));
  CompiledFunction f(fn);
  std::vector<Tensor> got = f(in), want = fn(in);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(got[k].to_vector<float>(), want[k].to_vector<float>());
  }
}

}  // namespace
}  // namespace axlearn
