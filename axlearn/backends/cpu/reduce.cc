// CPU kernels of reductions, arg-reductions, cumulative sums, sorting and the fused softmax.
// Each views its operand as (outer, n, inner) around the reduced axis block.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/backends/cpu/math.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

using cpu::exp_impl;
using cpu::log_impl;

namespace {

struct Block {
  int64_t outer = 1, n = 1, inner = 1;
};
Block block_of(const Shape& s, int first, int last) {  // axes [first, last] reduced
  Block b;
  for (int i = 0; i < first; ++i) b.outer *= s[i];
  for (int i = first; i <= last; ++i) b.n *= s[i];
  for (size_t i = last + 1; i < s.size(); ++i) b.inner *= s[i];
  return b;
}

// Dense copy of `a` in its compute type (f32 for 16-bit floats), or `a` itself if already so.
Array as_compute(const Array& a) {
  Dtype c = compute_dtype(a.dtype);
  if (c == a.dtype) return contiguous(a);
  Array out = Array::empty(a.shape, c);
  const int64_t n = a.size();
  cpu::parallel_chunks(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; s += cpu::kChunk) {
      cpu::load_chunk<float>(a, s, std::min(cpu::kChunk, e - s), out.data<float>() + s);
    }
  });
  return out;
}

// Writes compute-type results into `out` (allocating it), rounding to its dtype.
template <typename C>
void store_result(const C* vals, int64_t n, Array& out) {
  out = Array::empty(out.shape, out.dtype);
  cpu::store_chunk<C>(vals, out.dtype, out.raw(), 0, n);
}

template <typename C>
C identity(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAny:
      return C(0);
    case ReduceOp::kProd:
    case ReduceOp::kAll:
      return C(1);
    case ReduceOp::kMax:
      if constexpr (std::is_floating_point_v<C>)
        return -std::numeric_limits<C>::infinity();
      else
        return std::numeric_limits<C>::lowest();
    case ReduceOp::kMin:
      if constexpr (std::is_floating_point_v<C>)
        return std::numeric_limits<C>::infinity();
      else
        return std::numeric_limits<C>::max();
  }
  return C(0);
}

template <typename C>
inline C combine(ReduceOp op, C a, C b) {
  switch (op) {
    case ReduceOp::kSum:
      return a + b;
    case ReduceOp::kProd:
      if constexpr (std::is_same_v<C, bool>)
        return a && b;
      else
        return a * b;
    case ReduceOp::kMax:
      if constexpr (std::is_floating_point_v<C>)
        return (a != a || a > b) ? a : b;
      else
        return a > b ? a : b;
    case ReduceOp::kMin:
      if constexpr (std::is_floating_point_v<C>)
        return (a != a || a < b) ? a : b;
      else
        return a < b ? a : b;
    case ReduceOp::kAny:
      return a || b;
    case ReduceOp::kAll:
      return a && b;
  }
  return a;
}

// Reduction of a contiguous row of length n.
// Float sums: 16 independent lanes over blocks of 2048 elements, block totals accumulated in
// double. The error grows with n / 2048 rather than n, whether or not the compiler vectorises, and
// the order (so the result) depends only on n.
template <typename C>
C sum_row(const C* x, int64_t n) {
  constexpr int kLanes = 16;
  constexpr int64_t kBlock = 2048;
  double total = 0;
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t e = std::min(n, b0 + kBlock);
    C lanes[kLanes] = {};
    int64_t i = b0;
    for (; i + kLanes <= e; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] += x[i + l];
    }
    C block = 0;
    for (int l = 0; l < kLanes; ++l) block += lanes[l];
    for (; i < e; ++i) block += x[i];
    total += double(block);
  }
  return C(total);
}

// Reduction of a contiguous row of length n.
template <typename C>
C reduce_row(ReduceOp op, const C* x, int64_t n) {
  if constexpr (std::is_same_v<C, float> || std::is_same_v<C, double>) {
    if (op == ReduceOp::kSum) return sum_row(x, n);
  }
  C acc = identity<C>(op);
  for (int64_t i = 0; i < n; ++i) acc = combine(op, acc, x[i]);
  return acc;
}

template <typename C>
void reduce_block(ReduceOp op, const C* x, const Block& b, C* y) {
  if (b.inner == 1) {
#pragma omp parallel for if (b.outer * b.n > (1 << 16) && b.outer > 1)
    for (int64_t o = 0; o < b.outer; ++o) y[o] = reduce_row(op, x + o * b.n, b.n);
    return;
  }
  if constexpr (std::is_same_v<C, float>) {
    if (op == ReduceOp::kSum) {
      // Sums over a leading axis (bias gradients over a batch): accumulate columns in double.
#pragma omp parallel for if (b.outer * b.n * b.inner > (1 << 16) && b.outer > 1)
      for (int64_t o = 0; o < b.outer; ++o) {
        std::vector<double> acc(size_t(b.inner), 0.0);
        for (int64_t j = 0; j < b.n; ++j) {
          const C* src = x + (o * b.n + j) * b.inner;
          for (int64_t k = 0; k < b.inner; ++k) acc[k] += double(src[k]);
        }
        for (int64_t k = 0; k < b.inner; ++k) y[o * b.inner + k] = C(acc[k]);
      }
      return;
    }
  }
#pragma omp parallel for if (b.outer * b.n * b.inner > (1 << 16) && b.outer > 1)
  for (int64_t o = 0; o < b.outer; ++o) {
    C* row = y + o * b.inner;
    for (int64_t k = 0; k < b.inner; ++k) row[k] = identity<C>(op);
    for (int64_t j = 0; j < b.n; ++j) {
      const C* src = x + (o * b.n + j) * b.inner;
      for (int64_t k = 0; k < b.inner; ++k) row[k] = combine(op, row[k], src[k]);
    }
  }
}

}  // namespace

void Reduce::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = in[0];
  const int nd = x.ndim();
  // Reduced axes must form one contiguous block; otherwise move them to the end first.
  bool block = true;
  for (size_t i = 1; i < axes_.size(); ++i) block = block && axes_[i] == axes_[i - 1] + 1;
  int first = axes_.front(), last = axes_.back();
  if (!block) {
    std::vector<int> perm;
    for (int i = 0; i < nd; ++i) {
      if (!std::binary_search(axes_.begin(), axes_.end(), i)) perm.push_back(i);
    }
    perm.insert(perm.end(), axes_.begin(), axes_.end());
    Array t = x;
    for (int i = 0; i < nd; ++i) {
      t.shape[i] = x.shape[perm[i]];
      t.strides[i] = x.strides[perm[i]];
    }
    x = t;
    first = nd - int(axes_.size());
    last = nd - 1;
  }
  Block b = block_of(x.shape, first, last);
  Array xc = as_compute(x);
  dispatch_dtype(xc.dtype, [&](auto tag) {
    using C = decltype(tag);
    if constexpr (std::is_same_v<C, bfloat16_t> || std::is_same_v<C, float16_t>) {
      AXLEARN_CHECK(false, "unreachable");
    } else {
      const int64_t n = b.outer * b.inner;
      std::unique_ptr<C[]> y(new C[std::max<int64_t>(n, 1)]);
      if (b.n == 0) {
        std::fill(y.get(), y.get() + n, identity<C>(op_));
      } else {
        reduce_block<C>(op_, xc.data<C>(), b, y.get());
      }
      store_result(y.get(), n, out);
    }
  });
}

namespace {

// argmax / argmin of one contiguous float row: the first NaN if there is one, else the first
// index holding the extreme value. Two vectorisable passes instead of one branchy scan.
template <typename C>
int64_t arg_extreme_row(const C* p, int64_t n, bool is_max) {
  bool nan = false;
  C m = p[0];
  if (is_max) {
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t j = 0; j < n; ++j) {
      nan |= p[j] != p[j];
      m = p[j] > m ? p[j] : m;
    }
  } else {
#pragma omp simd reduction(min : m) reduction(| : nan)
    for (int64_t j = 0; j < n; ++j) {
      nan |= p[j] != p[j];
      m = p[j] < m ? p[j] : m;
    }
  }
  int64_t j = 0;
  if (nan) {
    while (p[j] == p[j]) ++j;
  } else {
    while (p[j] != m) ++j;
  }
  return j;
}

}  // namespace

void ArgReduce::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array xc = as_compute(in[0]);
  Block b = block_of(xc.shape, axis_, axis_);
  out = Array::empty(out.shape, out.dtype);
  int32_t* y = out.data<int32_t>();
  if (b.n == 0) {
    std::fill(y, y + out.size(), 0);
    return;
  }
  dispatch_dtype(xc.dtype, [&](auto tag) {
    using C = decltype(tag);
    const C* x = xc.data<C>();
#pragma omp parallel for schedule(static) if (xc.size() >= (1 << 16) && b.outer > 1)
    for (int64_t o = 0; o < b.outer; ++o) {
      if constexpr (std::is_floating_point_v<C>) {
        if (b.inner == 1) {
          y[o] = int32_t(arg_extreme_row(x + o * b.n, b.n, is_max_));
          continue;
        }
      }
      for (int64_t k = 0; k < b.inner; ++k) {
        const C* p = x + o * b.n * b.inner + k;
        int64_t best = 0;
        C bv = p[0];
        for (int64_t j = 1; j < b.n; ++j) {
          C v = p[j * b.inner];
          bool better;
          if constexpr (std::is_floating_point_v<C>) {
            if (bv != bv) break;  // NaN already found: it wins
            better = v != v || (is_max_ ? v > bv : v < bv);
          } else {
            better = is_max_ ? v > bv : v < bv;
          }
          if (better) {
            best = j;
            bv = v;
          }
        }
        y[o * b.inner + k] = int32_t(best);
      }
    }
  });
}

void Cumsum::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array xc = as_compute(in[0]);
  Block b = block_of(xc.shape, axis_, axis_);
  dispatch_dtype(xc.dtype, [&](auto tag) {
    using C = decltype(tag);
    if constexpr (std::is_same_v<C, bool> || std::is_same_v<C, bfloat16_t> ||
                  std::is_same_v<C, float16_t>) {
      AXLEARN_CHECK(false, "unreachable");
    } else {
      std::unique_ptr<C[]> y(new C[std::max<int64_t>(xc.size(), 1)]);
      const C* x = xc.data<C>();
#pragma omp parallel for if (xc.size() > (1 << 16) && b.outer > 1)
      for (int64_t o = 0; o < b.outer; ++o) {
        for (int64_t k = 0; k < b.inner; ++k) {
          C acc = 0;
          for (int64_t jj = 0; jj < b.n; ++jj) {
            int64_t j = reverse_ ? b.n - 1 - jj : jj;
            int64_t at = (o * b.n + j) * b.inner + k;
            acc += x[at];
            y[at] = acc;
          }
        }
      }
      store_result(y.get(), xc.size(), out);
    }
  });
}

void Sort::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array xc = contiguous(in[0]);
  Block b = block_of(xc.shape, axis_, axis_);
  out = Array::empty(out.shape, out.dtype);
  dispatch_dtype(xc.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* x = xc.data<T>();
#pragma omp parallel for collapse(2) if (xc.size() > (1 << 15))
    for (int64_t o = 0; o < b.outer; ++o) {
      for (int64_t k = 0; k < b.inner; ++k) {
        std::vector<int32_t> perm(b.n);
        std::iota(perm.begin(), perm.end(), 0);
        const T* p = x + o * b.n * b.inner + k;
        auto less = [&](int32_t i, int32_t j) {
          if constexpr (std::is_same_v<T, bool>) {
            return !p[i * b.inner] && p[j * b.inner];
          } else {
            auto a =
                cast_value<std::conditional_t<std::is_integral_v<T>, T, double>>(p[i * b.inner]);
            auto c =
                cast_value<std::conditional_t<std::is_integral_v<T>, T, double>>(p[j * b.inner]);
            if constexpr (!std::is_integral_v<T>) {
              if (a != a) return false;  // NaN sorts last
              if (c != c) return true;
            }
            return a < c;
          }
        };
        std::stable_sort(perm.begin(), perm.end(), less);
        for (int64_t j = 0; j < b.n; ++j) {
          int64_t at = (o * b.n + j) * b.inner + k;
          if (indices_) {
            out.data<int32_t>()[at] = perm[j];
          } else {
            out.data<T>()[at] = p[perm[j] * b.inner];
          }
        }
      }
    }
  });
}

namespace {

template <typename C>
void softmax_row(const C* x, C* y, int64_t n, int64_t stride, bool log) {
  C m = -std::numeric_limits<C>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j * stride]);
  if (!std::isfinite(m)) m = std::isnan(m) ? m : C(0);
  C s = 0;
  if constexpr (std::is_same_v<C, float>) {
    if (stride == 1) {
      for (int64_t j = 0; j < n; ++j) y[j] = exp_impl(x[j] - m);
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < n; ++j) s += y[j];
    } else {
      for (int64_t j = 0; j < n; ++j) s += (y[j * stride] = exp_impl(x[j * stride] - m));
    }
  } else {
    for (int64_t j = 0; j < n; ++j) s += (y[j * stride] = std::exp(x[j * stride] - m));
  }
  if (log) {
    C ls;
    if constexpr (std::is_same_v<C, float>)
      ls = log_impl(s);
    else
      ls = std::log(s);
    for (int64_t j = 0; j < n; ++j) y[j * stride] = x[j * stride] - m - ls;
  } else {
    C inv = C(1) / s;
    for (int64_t j = 0; j < n; ++j) y[j * stride] *= inv;
  }
}

}  // namespace

void Softmax::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array xc = as_compute(in[0]);
  Block b = block_of(xc.shape, axis_, axis_);
  const bool direct = xc.dtype == out.dtype;
  Array yc = Array::empty(xc.shape, xc.dtype);
  dispatch_dtype(xc.dtype, [&](auto tag) {
    using C = decltype(tag);
    if constexpr (std::is_same_v<C, float> || std::is_same_v<C, double>) {
      const C* x = xc.data<C>();
      C* y = yc.data<C>();
#pragma omp parallel for collapse(2) if (xc.size() > (1 << 15))
      for (int64_t o = 0; o < b.outer; ++o) {
        for (int64_t k = 0; k < b.inner; ++k) {
          int64_t base = o * b.n * b.inner + k;
          softmax_row<C>(x + base, y + base, b.n, b.inner, log_);
        }
      }
    } else {
      AXLEARN_CHECK(false, "softmax on non-float");
    }
  });
  if (direct) {
    out = yc;
  } else {
    out = Array::empty(out.shape, out.dtype);
    cpu::store_chunk<float>(yc.data<float>(), out.dtype, out.raw(), 0, yc.size());
  }
}

}  // namespace axlearn
