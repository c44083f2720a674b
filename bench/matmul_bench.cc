// Square matmul (n, n) x (n, n) in f32 and bf16: our `matmul` op (graph built and evaluated each
// iteration, inputs already materialised) next to a raw oneDNN matmul primitive created once.
// Both report GFLOP/s over 2 n^3 flops; bf16 runs accumulate in f32 and write bf16.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace {

using axlearn::Dtype;

constexpr int64_t kSizes[] = {256, 512, 1024, 2048};

// Deterministic values in [-1, 1) (an LCG), so both sides multiply the same numbers.
std::vector<float> test_values(int64_t count, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(count));
  uint32_t s = seed;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float(s >> 8) / float(1 << 23) - 1.0f;
  }
  return v;
}

void set_flops(benchmark::State& state, int64_t n) {
  // GFLOP per iteration; the rate flag divides by the elapsed time and multiplies by iterations.
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void bm_axlearn_matmul(benchmark::State& state, Dtype dtype, int64_t n) {
  auto a = axlearn::astype(axlearn::array(test_values(n * n, 1), {n, n}), dtype);
  auto b = axlearn::astype(axlearn::array(test_values(n * n, 2), {n, n}), dtype);
  axlearn::eval(a, b);
  for (auto _ : state) {
    axlearn::Tensor c = axlearn::matmul(a, b);
    c.eval();
    benchmark::DoNotOptimize(c.array().raw());
  }
  set_flops(state, n);
}

dnnl::memory::data_type dnnl_type(Dtype dtype) {
  return dtype == axlearn::bfloat16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

void bm_onednn_matmul(benchmark::State& state, Dtype dtype, int64_t n) {
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  memory::desc md({n, n}, dnnl_type(dtype), memory::format_tag::ab);
  memory a(md, engine), b(md, engine), c(md, engine);
  // Fill through our own conversion so the bf16 inputs round exactly as ours do.
  auto fill = [&](memory& m, uint32_t seed) {
    auto t = axlearn::astype(axlearn::array(test_values(n * n, seed), {n, n}), dtype);
    const axlearn::Array& arr = t.array();
    std::memcpy(m.get_data_handle(), arr.raw(), arr.nbytes());
  };
  fill(a, 1);
  fill(b, 2);
  dnnl::matmul prim;
  try {
#if DNNL_VERSION_MAJOR >= 3
    prim = dnnl::matmul(dnnl::matmul::primitive_desc(engine, md, md, md));
#else
    prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(md, md, md), engine));
#endif
  } catch (const dnnl::error& e) {
    state.SkipWithError(
        ("oneDNN has no matmul for this dtype on this CPU: " + std::string(e.what())).c_str());
    return;
  }
  for (auto _ : state) {
    prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
    benchmark::DoNotOptimize(c.get_data_handle());
  }
  set_flops(state, n);
}

void register_all() {
  for (Dtype dtype : {axlearn::float32, axlearn::bfloat16}) {
    std::string dt = axlearn::dtype_name(dtype);
    for (int64_t n : kSizes) {
      std::string suffix = dt + "/" + std::to_string(n);
      // Ours and the peer registered back to back so the table reads side by side.
      benchmark::RegisterBenchmark(("matmul/axlearn/" + suffix).c_str(), bm_axlearn_matmul, dtype,
                                   n)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("matmul/onednn/" + suffix).c_str(), bm_onednn_matmul, dtype, n)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
