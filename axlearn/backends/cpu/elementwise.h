// Elementwise kernels on the CPU, built from chunk functions: each applies one op to a short
// contiguous run of values in the op's compute type (float for f32/bf16/f16, double for f64, the
// integer type itself for integers). Eager kernels and compile()'s fused loops call the same chunk
// functions, so fused code rounds exactly like the eager ops.
#pragma once

#include <cstdint>
#include <functional>

#include "axlearn/core/array.h"
#include "axlearn/core/primitives.h"

namespace axlearn::cpu {

// Elements per chunk: small enough that a handful of chunk buffers stay in L1.
inline constexpr int64_t kChunk = 512;

// y[i] = op(x[i]) for i < n. T is a compute type: float, double, int32_t, int64_t, uint32_t,
// uint8_t or bool. Ops that produce bool (kIsFinite) use unary_chunk_to_bool.
template <typename T>
void unary_chunk(UnaryOp op, const T* x, T* y, int64_t n);
template <typename T>
void unary_chunk_to_bool(UnaryOp op, const T* x, bool* y, int64_t n);

// y[i] = op(a[i], b[i]); comparisons go through compare_chunk.
template <typename T>
void binary_chunk(BinaryOp op, const T* a, const T* b, T* y, int64_t n);
template <typename T>
void compare_chunk(BinaryOp op, const T* a, const T* b, bool* y, int64_t n);

template <typename T>
void select_chunk(const bool* p, const T* a, const T* b, T* y, int64_t n);

// Loads n elements of `a` starting at row-major element `start` (any strides, any storage dtype)
// into `out` converted to compute type C.
template <typename C>
void load_chunk(const Array& a, int64_t start, int64_t n, C* out);
// Stores n compute-type values into contiguous storage of dtype `dtype` at element `start`,
// rounding to the storage type (round-to-nearest-even for 16-bit floats).
template <typename C>
void store_chunk(const C* in, Dtype dtype, void* base, int64_t start, int64_t n);
// Rounds compute-type values through `dtype` in place (identity unless dtype is 16-bit float):
// what storing then loading would give.
void round_chunk(Dtype dtype, float* x, int64_t n);

// The stride-0 view of `a` broadcast to `shape`, operand dim i feeding output dim dims[i]
// (broadcast_in_dim's kernel, also used by fused loops to read their inputs in place).
Array broadcast_view(const Array& a, const Shape& shape, const std::vector<int>& dims);

// Calls fn(C{}) with C the compute type of storage dtype d (16-bit floats compute in float).
template <typename Fn>
decltype(auto) dispatch_compute(Dtype d, Fn&& fn) {
  switch (compute_dtype(d)) {
    case Dtype::kBool:
      return fn(bool{});
    case Dtype::kU8:
      return fn(uint8_t{});
    case Dtype::kU32:
      return fn(uint32_t{});
    case Dtype::kI32:
      return fn(int32_t{});
    case Dtype::kI64:
      return fn(int64_t{});
    case Dtype::kF64:
      return fn(double{});
    default:
      return fn(float{});
  }
}

// Runs body(begin, end) over [0, n) split into chunk-aligned ranges on the OpenMP threads
// (serially below a size threshold).
void parallel_chunks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

// Vectorisable float math used by the kernels (max error a few ulp; NaN/inf handled).
float exp_f32(float x);
float log_f32(float x);
float tanh_f32(float x);
float erf_f32(float x);
float erfinv_f32(float x);
double erfinv_f64(double x);

}  // namespace axlearn::cpu
