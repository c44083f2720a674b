// Causal self-attention, q, k, v (B=4, T, N=8, H=64) in f32, T = 256 and 512: the fused op
// `attention` (tiled online softmax, core/attention.h) next to `attention_reference` (the same
// function from ops: einsum logits, where, softmax, einsum), forward alone and forward + backward
// (value_and_grad of sum(out * w) for q, k and v). Inputs are materialised outside the timed loop.
// GFLOP/s counts the causal half of the matmuls: 2 (fwd) or 5 (fwd + bwd) B N T^2 H flops.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "axlearn/core/attention.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace {

using axlearn::Tensor;

constexpr int64_t kB = 4, kN = 8, kH = 64;

// Deterministic values in [-1, 1) (an LCG).
Tensor test_input(int64_t t, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(kB * t * kN * kH));
  uint32_t s = seed;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float(s >> 8) / float(1 << 23) - 1.0f;
  }
  Tensor x = axlearn::array(v, {kB, t, kN, kH});
  axlearn::eval(x);
  return x;
}

using AttentionFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&,
                               const axlearn::AttentionOptions&);

void set_flops(benchmark::State& state, int64_t t, double matmuls) {
  state.counters["GFLOP/s"] = benchmark::Counter(matmuls * double(kB * kN * t * t * kH) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void bm_forward(benchmark::State& state, AttentionFn fn) {
  const int64_t t = state.range(0);
  Tensor q = test_input(t, 1), k = test_input(t, 2), v = test_input(t, 3);
  axlearn::AttentionOptions opts;
  opts.causal = true;
  fn(q, k, v, opts).eval();  // warm the allocator's cache
  for (auto _ : state) {
    Tensor out = fn(q, k, v, opts);
    out.eval();
    benchmark::DoNotOptimize(out.array().raw());
  }
  set_flops(state, t, 2.0);
}

void bm_forward_backward(benchmark::State& state, AttentionFn fn) {
  const int64_t t = state.range(0);
  Tensor q = test_input(t, 1), k = test_input(t, 2), v = test_input(t, 3), w = test_input(t, 4);
  axlearn::AttentionOptions opts;
  opts.causal = true;
  auto step = [&] {
    auto vg = axlearn::value_and_grad(
        [&](const std::vector<Tensor>& p) { return axlearn::sum(fn(p[0], p[1], p[2], opts) * w); },
        {q, k, v});
    axlearn::eval(vg.value, vg.grads[0], vg.grads[1], vg.grads[2]);
    return vg;
  };
  step();
  for (auto _ : state) {
    auto vg = step();
    benchmark::DoNotOptimize(vg.grads[0].array().raw());
  }
  set_flops(state, t, 5.0);
}

// Real time: the work runs on OpenMP threads, not the timing thread.
#define AXLEARN_ATTENTION_BENCH(fn, name, op)               \
  BENCHMARK_CAPTURE(fn, name, static_cast<AttentionFn>(op)) \
      ->Arg(256)                                            \
      ->Arg(512)                                            \
      ->Unit(benchmark::kMillisecond)                       \
      ->UseRealTime()                                       \
      ->MinTime(1.0)
AXLEARN_ATTENTION_BENCH(bm_forward, fused, axlearn::attention);
AXLEARN_ATTENTION_BENCH(bm_forward, reference, axlearn::attention_reference);
AXLEARN_ATTENTION_BENCH(bm_forward_backward, fused, axlearn::attention);
AXLEARN_ATTENTION_BENCH(bm_forward_backward, reference, axlearn::attention_reference);

}  // namespace

BENCHMARK_MAIN();
