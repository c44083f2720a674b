// Elementwise CPU kernels: chunk functions (shared with compile's fused loops), strided loads,
// rounding stores, vectorisable float math, and the eager kernels of the elementwise primitives.
#include "axlearn/backends/cpu/elementwise.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "axlearn/backends/cpu/math.h"

namespace axlearn::cpu {

// ------------------------------------------------------------------ float math

float exp_f32(float x) { return exp_impl(x); }
float log_f32(float x) { return log_impl(x); }
float tanh_f32(float x) { return tanh_impl(x); }
float erf_f32(float x) { return std::erf(x); }

// ------------------------------------------------------------------ chunk ops

namespace {

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T>;

template <typename T>
inline T int_div(T a, T b) {
  if constexpr (std::is_same_v<T, bool>) {
    return a;
  } else if (b == 0) {
    return T(-1);  // XLA: all bits set
  } else if constexpr (std::is_signed_v<T>) {
    if (a == std::numeric_limits<T>::min() && b == T(-1)) return a;
    return a / b;
  } else {
    return a / b;
  }
}
template <typename T>
inline T int_rem(T a, T b) {
  if constexpr (std::is_same_v<T, bool>) {
    return false;
  } else if (b == 0) {
    return a;
  } else if constexpr (std::is_signed_v<T>) {
    if (a == std::numeric_limits<T>::min() && b == T(-1)) return 0;
    return a % b;
  } else {
    return a % b;
  }
}

// Exponentiation by squaring with wrap-around; negative exponents give 0 except for bases 1, -1.
template <typename T>
inline T int_pow(T base, T e) {
  if constexpr (std::is_signed_v<T>) {
    if (e < 0) {
      if (base == 1) return 1;
      if (base == -1) return (e & 1) ? T(-1) : T(1);
      return 0;
    }
  }
  using U = std::make_unsigned_t<T>;
  U result = 1, b = U(base);
  for (U k = U(e); k; k >>= 1) {
    if (k & 1) result = U(result * b);
    b = U(b * b);
  }
  return T(result);
}

}  // namespace

template <typename T>
void unary_chunk(UnaryOp op, const T* x, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, bool>) {
    switch (op) {
      case UnaryOp::kLogicalNot:
        for (int64_t i = 0; i < n; ++i) y[i] = !x[i];
        return;
      default:
        break;
    }
  } else if constexpr (!kIsFloat<T>) {
    switch (op) {
      case UnaryOp::kNeg:
        for (int64_t i = 0; i < n; ++i) y[i] = T(0) - x[i];
        return;
      case UnaryOp::kAbs:
        if constexpr (std::is_signed_v<T>) {
          for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0 ? T(0) - x[i] : x[i];
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = x[i];
        }
        return;
      case UnaryOp::kSign:
        for (int64_t i = 0; i < n; ++i) y[i] = T((x[i] > 0) - (x[i] < 0));
        return;
      case UnaryOp::kSquare:
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] * x[i];
        return;
      case UnaryOp::kLogicalNot:
        for (int64_t i = 0; i < n; ++i) y[i] = ~x[i];
        return;
      default:
        break;
    }
  } else {
    constexpr bool f32 = std::is_same_v<T, float>;
    switch (op) {
      case UnaryOp::kNeg:
        for (int64_t i = 0; i < n; ++i) y[i] = -x[i];
        return;
      case UnaryOp::kAbs:
        for (int64_t i = 0; i < n; ++i) y[i] = std::fabs(x[i]);
        return;
      case UnaryOp::kSign:
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] != x[i] ? x[i] : T((x[i] > 0) - (x[i] < 0));
        return;
      case UnaryOp::kExp:
        if constexpr (f32) {
          for (int64_t i = 0; i < n; ++i) y[i] = exp_impl(x[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
        }
        return;
      case UnaryOp::kExpm1:
        for (int64_t i = 0; i < n; ++i) y[i] = std::expm1(x[i]);
        return;
      case UnaryOp::kLog:
        if constexpr (f32) {
          for (int64_t i = 0; i < n; ++i) y[i] = log_impl(x[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = std::log(x[i]);
        }
        return;
      case UnaryOp::kLog1p:
        for (int64_t i = 0; i < n; ++i) y[i] = std::log1p(x[i]);
        return;
      case UnaryOp::kSqrt:
        for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]);
        return;
      case UnaryOp::kRsqrt:
        for (int64_t i = 0; i < n; ++i) y[i] = T(1) / std::sqrt(x[i]);
        return;
      case UnaryOp::kTanh:
        if constexpr (f32) {
          for (int64_t i = 0; i < n; ++i) y[i] = tanh_impl(x[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
        }
        return;
      case UnaryOp::kLogistic:
        if constexpr (f32) {
          for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + exp_impl(-x[i]));
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = 1.0 / (1.0 + std::exp(-x[i]));
        }
        return;
      case UnaryOp::kErf:
        for (int64_t i = 0; i < n; ++i) y[i] = std::erf(x[i]);
        return;
      case UnaryOp::kErfInv:
        if constexpr (f32) {
          for (int64_t i = 0; i < n; ++i) y[i] = erfinv_f32(x[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) y[i] = erfinv_f64(x[i]);
        }
        return;
      case UnaryOp::kSin:
        for (int64_t i = 0; i < n; ++i) y[i] = std::sin(x[i]);
        return;
      case UnaryOp::kCos:
        for (int64_t i = 0; i < n; ++i) y[i] = std::cos(x[i]);
        return;
      case UnaryOp::kFloor:
        for (int64_t i = 0; i < n; ++i) y[i] = std::floor(x[i]);
        return;
      case UnaryOp::kCeil:
        for (int64_t i = 0; i < n; ++i) y[i] = std::ceil(x[i]);
        return;
      case UnaryOp::kRound:
        for (int64_t i = 0; i < n; ++i) y[i] = std::nearbyint(x[i]);
        return;
      case UnaryOp::kSquare:
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] * x[i];
        return;
      case UnaryOp::kReciprocal:
        for (int64_t i = 0; i < n; ++i) y[i] = T(1) / x[i];
        return;
      default:
        break;
    }
  }
  AXLEARN_CHECK(false, "unary op ", unary_op_name(op), " has no kernel for this dtype");
}

template <typename T>
void unary_chunk_to_bool(UnaryOp op, const T* x, bool* y, int64_t n) {
  AXLEARN_CHECK(op == UnaryOp::kIsFinite, "unary_chunk_to_bool: ", unary_op_name(op));
  if constexpr (kIsFloat<T>) {
    for (int64_t i = 0; i < n; ++i) y[i] = std::isfinite(x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = true;
  }
}

template <typename T>
void binary_chunk(BinaryOp op, const T* a, const T* b, T* y, int64_t n) {
  switch (op) {
    case BinaryOp::kAdd:
      if constexpr (std::is_same_v<T, bool>)
        break;
      else
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
      return;
    case BinaryOp::kSub:
      if constexpr (std::is_same_v<T, bool>)
        break;
      else
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i];
      return;
    case BinaryOp::kMul:
      if constexpr (std::is_same_v<T, bool>)
        break;
      else
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
      return;
    case BinaryOp::kDiv:
      if constexpr (kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] / b[i];
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] = int_div(a[i], b[i]);
      }
      return;
    case BinaryOp::kRem:
      if constexpr (kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = std::fmod(a[i], b[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] = int_rem(a[i], b[i]);
      }
      return;
    case BinaryOp::kPow:
      if constexpr (kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = std::pow(a[i], b[i]);
        return;
      } else if constexpr (!std::is_same_v<T, bool>) {
        for (int64_t i = 0; i < n; ++i) y[i] = int_pow(a[i], b[i]);
        return;
      }
      break;
    case BinaryOp::kAtan2:
      if constexpr (kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = std::atan2(a[i], b[i]);
        return;
      }
      break;
    case BinaryOp::kMax:
      if constexpr (kIsFloat<T>) {
        // NaN propagates, as in jnp.maximum.
        for (int64_t i = 0; i < n; ++i) y[i] = (a[i] != a[i] || a[i] > b[i]) ? a[i] : b[i];
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] > b[i] ? a[i] : b[i];
      }
      return;
    case BinaryOp::kMin:
      if constexpr (kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = (a[i] != a[i] || a[i] < b[i]) ? a[i] : b[i];
      } else {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] < b[i] ? a[i] : b[i];
      }
      return;
    case BinaryOp::kAnd:
      if constexpr (!kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] & b[i];
        return;
      }
      break;
    case BinaryOp::kOr:
      if constexpr (!kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] | b[i];
        return;
      }
      break;
    case BinaryOp::kXor:
      if constexpr (!kIsFloat<T>) {
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] ^ b[i];
        return;
      }
      break;
    case BinaryOp::kShiftLeft:
    case BinaryOp::kShiftRightLogical:
      if constexpr (!kIsFloat<T> && !std::is_same_v<T, bool>) {
        using U = std::make_unsigned_t<T>;
        constexpr int64_t bits = sizeof(T) * 8;
        const bool left = op == BinaryOp::kShiftLeft;
        for (int64_t i = 0; i < n; ++i) {
          U s = U(b[i]);
          U v = U(a[i]);
          U r = s >= U(bits) ? U(0) : (left ? U(v << s) : U(v >> s));
          y[i] = T(r);
        }
        return;
      }
      break;
    default:
      break;
  }
  AXLEARN_CHECK(false, "binary op ", binary_op_name(op), " has no kernel for this dtype");
}

template <typename T>
void compare_chunk(BinaryOp op, const T* a, const T* b, bool* y, int64_t n) {
  switch (op) {
    case BinaryOp::kEq:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] == b[i];
      return;
    case BinaryOp::kNe:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] != b[i];
      return;
    case BinaryOp::kLt:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] < b[i];
      return;
    case BinaryOp::kLe:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] <= b[i];
      return;
    case BinaryOp::kGt:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] > b[i];
      return;
    case BinaryOp::kGe:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] >= b[i];
      return;
    default:
      AXLEARN_CHECK(false, "compare_chunk: ", binary_op_name(op));
  }
}

template <typename T>
void select_chunk(const bool* p, const T* a, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = p[i] ? a[i] : b[i];
}

// ------------------------------------------------------------------ loads and stores

namespace {

template <typename S, typename C>
inline void convert_run(const S* src, int64_t stride, int64_t n, C* out) {
  if constexpr (std::is_same_v<S, bfloat16_t> && std::is_same_v<C, float>) {
    for (int64_t i = 0; i < n; ++i) out[i] = f32_from_bits(uint32_t(src[i * stride].bits) << 16);
  } else {
    if (stride == 1) {
      for (int64_t i = 0; i < n; ++i) out[i] = cast_value<C>(src[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = cast_value<C>(src[i * stride]);
    }
  }
}

}  // namespace

template <typename C>
void load_chunk(const Array& a, int64_t start, int64_t n, C* out) {
  const int nd = a.ndim();
  dispatch_dtype(a.dtype, [&](auto tag) {
    using S = decltype(tag);
    const S* base = a.data<S>();
    if (a.is_contiguous()) {
      convert_run(base + start, 1, n, out);
      return;
    }
    // Walk rows of the last axis with a multi-index.
    int64_t idx_small[16];
    std::vector<int64_t> idx_heap;
    int64_t* idx = idx_small;
    if (nd > 16) {
      idx_heap.resize(nd);
      idx = idx_heap.data();
    }
    int64_t rem = start;
    for (int i = nd - 1; i >= 0; --i) {
      idx[i] = rem % a.shape[i];
      rem /= a.shape[i];
    }
    int64_t done = 0;
    const int64_t last = a.shape[nd - 1], last_stride = a.strides[nd - 1];
    while (done < n) {
      int64_t off = 0;
      for (int i = 0; i < nd; ++i) off += idx[i] * a.strides[i];
      int64_t run = std::min(last - idx[nd - 1], n - done);
      if (last_stride == 0) {
        C v = cast_value<C>(base[off]);
        for (int64_t j = 0; j < run; ++j) out[done + j] = v;
      } else {
        convert_run(base + off, last_stride, run, out + done);
      }
      done += run;
      idx[nd - 1] += run;
      for (int i = nd - 1; i > 0 && idx[i] >= a.shape[i]; --i) {
        idx[i] = 0;
        ++idx[i - 1];
      }
    }
  });
}

template <typename C>
void store_chunk(const C* in, Dtype dtype, void* base, int64_t start, int64_t n) {
  dispatch_dtype(dtype, [&](auto tag) {
    using S = decltype(tag);
    S* dst = static_cast<S*>(base) + start;
    if constexpr (std::is_same_v<S, C>) {
      std::memcpy(dst, in, n * sizeof(C));
    } else if constexpr (std::is_same_v<S, bfloat16_t> && std::is_same_v<C, float>) {
      for (int64_t i = 0; i < n; ++i) dst[i].bits = bfloat16_t::from_float(in[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = cast_value<S>(in[i]);
    }
  });
}

void round_chunk(Dtype dtype, float* x, int64_t n) {
  if (dtype == bfloat16) {
    for (int64_t i = 0; i < n; ++i)
      x[i] = f32_from_bits(uint32_t(bfloat16_t::from_float(x[i])) << 16);
  } else if (dtype == float16) {
    for (int64_t i = 0; i < n; ++i) x[i] = float16_t::to_float(float16_t::from_float(x[i]));
  }
}

void parallel_chunks(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, kChunk);
  const int64_t blocks = (n + grain - 1) / grain;
  if (blocks <= 1 || omp_in_parallel()) {
    body(0, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) body(b * grain, std::min(n, (b + 1) * grain));
}

#define AXLEARN_INSTANTIATE_CHUNKS(T)                                           \
  template void unary_chunk<T>(UnaryOp, const T*, T*, int64_t);                 \
  template void unary_chunk_to_bool<T>(UnaryOp, const T*, bool*, int64_t);      \
  template void binary_chunk<T>(BinaryOp, const T*, const T*, T*, int64_t);     \
  template void compare_chunk<T>(BinaryOp, const T*, const T*, bool*, int64_t); \
  template void select_chunk<T>(const bool*, const T*, const T*, T*, int64_t);  \
  template void load_chunk<T>(const Array&, int64_t, int64_t, T*);              \
  template void store_chunk<T>(const T*, Dtype, void*, int64_t, int64_t);
AXLEARN_INSTANTIATE_CHUNKS(float)
AXLEARN_INSTANTIATE_CHUNKS(double)
AXLEARN_INSTANTIATE_CHUNKS(int32_t)
AXLEARN_INSTANTIATE_CHUNKS(int64_t)
AXLEARN_INSTANTIATE_CHUNKS(uint32_t)
AXLEARN_INSTANTIATE_CHUNKS(uint8_t)
AXLEARN_INSTANTIATE_CHUNKS(bool)
#undef AXLEARN_INSTANTIATE_CHUNKS

// ------------------------------------------------------------------ eager kernels

namespace {

// Grain (elements per parallel task): large enough to amortise a fork.
constexpr int64_t kGrain = 1 << 15;

// Direct pointer into `a` for [start, start+n) when it is dense and already of compute type C.
template <typename C>
const C* direct(const Array& a, int64_t start) {
  if (compute_dtype(a.dtype) == a.dtype && dtype_of<C>() == a.dtype && a.is_contiguous()) {
    return a.data<C>() + start;
  }
  return nullptr;
}

template <typename C, typename Op>
void run_elementwise(const std::vector<Array>& in, Array& out, Op&& op) {
  out = Array::empty(out.shape, out.dtype);
  const int64_t n = out.size();
  parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) C bufs[3][kChunk];
    const C* ptrs[3];
    for (int64_t s = begin; s < end; s += kChunk) {
      const int64_t len = std::min(kChunk, end - s);
      for (size_t k = 0; k < in.size(); ++k) {
        ptrs[k] = direct<C>(in[k], s);
        if (!ptrs[k]) {
          load_chunk<C>(in[k], s, len, bufs[k]);
          ptrs[k] = bufs[k];
        }
      }
      op(ptrs, s, len);
    }
  });
}

}  // namespace
}  // namespace axlearn::cpu

namespace axlearn {
using namespace cpu;

void Unary::eval_cpu(const std::vector<Array>& in, Array& out) const {
  dispatch_compute(in[0].dtype, [&](auto tag) {
    using C = decltype(tag);
    if (op_ == UnaryOp::kIsFinite) {
      run_elementwise<C>(in, out, [&](const C** x, int64_t s, int64_t len) {
        unary_chunk_to_bool<C>(op_, x[0], out.data<bool>() + s, len);
      });
      return;
    }
    const bool same = out.dtype == dtype_of<C>();
    run_elementwise<C>(in, out, [&](const C** x, int64_t s, int64_t len) {
      if (same) {
        unary_chunk<C>(op_, x[0], out.data<C>() + s, len);
      } else {
        alignas(64) C y[kChunk];
        unary_chunk<C>(op_, x[0], y, len);
        store_chunk<C>(y, out.dtype, out.raw(), s, len);
      }
    });
  });
}

void Binary::eval_cpu(const std::vector<Array>& in, Array& out) const {
  dispatch_compute(in[0].dtype, [&](auto tag) {
    using C = decltype(tag);
    if (is_comparison(op_)) {
      run_elementwise<C>(in, out, [&](const C** x, int64_t s, int64_t len) {
        compare_chunk<C>(op_, x[0], x[1], out.data<bool>() + s, len);
      });
      return;
    }
    const bool same = out.dtype == dtype_of<C>();
    run_elementwise<C>(in, out, [&](const C** x, int64_t s, int64_t len) {
      if (same) {
        binary_chunk<C>(op_, x[0], x[1], out.data<C>() + s, len);
      } else {
        alignas(64) C y[kChunk];
        binary_chunk<C>(op_, x[0], x[1], y, len);
        store_chunk<C>(y, out.dtype, out.raw(), s, len);
      }
    });
  });
}

void Select::eval_cpu(const std::vector<Array>& in, Array& out) const {
  dispatch_compute(in[1].dtype, [&](auto tag) {
    using C = decltype(tag);
    out = Array::empty(out.shape, out.dtype);
    const int64_t n = out.size();
    parallel_chunks(n, kGrain, [&](int64_t begin, int64_t end) {
      alignas(64) bool p[kChunk];
      alignas(64) C a[kChunk], b[kChunk], y[kChunk];
      for (int64_t s = begin; s < end; s += kChunk) {
        const int64_t len = std::min(kChunk, end - s);
        load_chunk<bool>(in[0], s, len, p);
        load_chunk<C>(in[1], s, len, a);
        load_chunk<C>(in[2], s, len, b);
        select_chunk<C>(p, a, b, y, len);
        store_chunk<C>(y, out.dtype, out.raw(), s, len);
      }
    });
  });
}

namespace {
// Element-by-element conversion from storage type to storage type, for pairs where going through
// a shared compute type could lose bits (64-bit integers, f64 to 16-bit floats, 32-bit integers
// with floats).
void convert_direct(const Array& x, Array& out) {
  const Array xc = contiguous(x);
  const int64_t n = out.size();
  dispatch_dtype(xc.dtype, [&](auto f) {
    using F = decltype(f);
    dispatch_dtype(out.dtype, [&](auto t) {
      using T = decltype(t);
      const F* src = xc.data<F>();
      T* dst = out.data<T>();
      for (int64_t i = 0; i < n; ++i) dst[i] = cast_value<T>(src[i]);
    });
  });
}
}  // namespace

void Convert::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const Array& x = in[0];
  const Dtype from = x.dtype, to = out.dtype;
  auto wide_int = [](Dtype d) { return d == int64 || d == int32 || d == uint32; };
  const bool direct = from == int64 || to == int64 ||
                      (from == float64 && (to == bfloat16 || to == float16)) ||
                      ((is_floating(from) || is_floating(to)) && (wide_int(from) || wide_int(to)));
  if (direct) {
    convert_direct(x, out);
    return;
  }
  // Otherwise one shared compute type holds every value exactly: f64 if either side is f64,
  // f32 for the other floats, int64 among narrow integers.
  auto go = [&](auto tag) {
    using C = decltype(tag);
    parallel_chunks(out.size(), kGrain, [&](int64_t begin, int64_t end) {
      alignas(64) C buf[kChunk];
      for (int64_t s = begin; s < end; s += kChunk) {
        const int64_t len = std::min(kChunk, end - s);
        load_chunk<C>(x, s, len, buf);
        store_chunk<C>(buf, out.dtype, out.raw(), s, len);
      }
    });
  };
  if (from == float64 || to == float64) {
    go(double{});
  } else if (is_floating(from) || is_floating(to)) {
    go(float{});
  } else {
    go(int64_t{});
  }
}

void BitcastConvert::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = contiguous(in[0]);
  Shape shape = out.shape;
  Dtype d = out.dtype;
  out = x;
  out.shape = shape;
  out.dtype = d;
}

void StopGradient::eval_cpu(const std::vector<Array>& in, Array& out) const { out = in[0]; }

}  // namespace axlearn
