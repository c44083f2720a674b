// An elementwise chain over 16M values, y = tanh(x*1.5 + 0.25) * exp(-x) - x/2 (eight
// primitives: mul, add, tanh, neg, exp, mul, div, sub), run eagerly (graph built and evaluated
// op by op each iteration) next to compile() of the same function (one fused loop). Both report
// GB/s over the bytes the chain must move at least: read x once, write y once.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "axlearn/core/compile.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace {

using axlearn::Dtype;
using axlearn::Tensor;

constexpr int64_t kElements = int64_t(1) << 24;

// Deterministic values in [-2, 2) (an LCG).
Tensor test_input(int64_t n, Dtype dtype) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t s = 12345;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float(s >> 8) / float(1 << 22) - 2.0f;
  }
  Tensor x = axlearn::astype(axlearn::array(v, {n}), dtype);
  axlearn::eval(x);
  return x;
}

std::vector<Tensor> chain(const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  return {axlearn::tanh(x * 1.5 + 0.25) * axlearn::exp(-x) - x / 2.0};
}

void set_bytes(benchmark::State& state, Dtype dtype) {
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * kElements *
                          int64_t(axlearn::size_of(dtype)));
}

void bm_eager(benchmark::State& state, Dtype dtype) {
  Tensor x = test_input(kElements, dtype);
  chain({x})[0].eval();  // warm the allocator's cache, as the compiled run's first call does
  for (auto _ : state) {
    Tensor y = chain({x})[0];
    y.eval();
    benchmark::DoNotOptimize(y.array().raw());
  }
  set_bytes(state, dtype);
}

void bm_compiled(benchmark::State& state, Dtype dtype) {
  Tensor x = test_input(kElements, dtype);
  axlearn::CompiledFn f = axlearn::compile(chain);
  f({x});  // trace (and warm the allocator's cache) outside the timed loop
  for (auto _ : state) {
    Tensor y = f({x})[0];
    benchmark::DoNotOptimize(y.array().raw());
  }
  set_bytes(state, dtype);
}

// Real time: the work runs on OpenMP threads, not the timing thread.
#define AXLEARN_CHAIN_BENCH(fn, name, dtype) \
  BENCHMARK_CAPTURE(fn, name, dtype)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0)
AXLEARN_CHAIN_BENCH(bm_eager, f32, axlearn::float32);
AXLEARN_CHAIN_BENCH(bm_compiled, f32, axlearn::float32);
AXLEARN_CHAIN_BENCH(bm_eager, bf16, axlearn::bfloat16);
AXLEARN_CHAIN_BENCH(bm_compiled, bf16, axlearn::bfloat16);

}  // namespace

BENCHMARK_MAIN();
