// `axlearn bench train-step`: times the compiled training step of a registered experiment on
// synthetic tokens and prints one JSON line (tokens/s, median step time, achieved GFLOP/s, MFU,
// peak RSS), the numbers bench/compare_cpu.sh sets next to PyTorch and JAX.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace axlearn::cli {

struct BenchOptions {
  std::string config;                  // a registered experiment, e.g. fuji-nano
  std::vector<std::string> overrides;  // "path=value", applied in order
  int steps = 10;                      // timed steps
  int warmup = 2;                      // untimed steps first (the first one traces and compiles)
  std::string dtype = "f32";           // f32 | bf16 (train_dtype bfloat16, f32 master weights)
  bool profile = false;  // also run one step op by op and print where the time goes (stderr)
  int profile_top = 20;  // rows of the per-op-signature table
  int64_t devices = 1;   // virtual CPU devices; the mesh comes from the config's mesh_shape
};

// Returns the exit status. The JSON line goes to `out`; the profile (if asked) to stderr.
int run_bench_train_step(const BenchOptions& options, std::ostream& out);

}  // namespace axlearn::cli
