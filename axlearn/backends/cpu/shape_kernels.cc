// CPU kernels of the data-movement primitives. Broadcast, transpose, slice, dynamic slice and
// (dense) reshape return views of their input's storage; the rest copy.
#include <algorithm>
#include <cstring>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

namespace {

// A fresh dense copy (never aliases `a`), for kernels that write into their output.
Array dense_copy(const Array& a) {
  Array c = contiguous(a);
  if (c.storage != a.storage) return c;
  Array out = Array::empty(a.shape, a.dtype, a.storage->device);
  std::memcpy(out.raw(), a.raw(), a.nbytes());
  return out;
}

std::vector<int64_t> read_indices(const Array& a) {
  Array c = contiguous(a);
  std::vector<int64_t> out(c.size());
  dispatch_dtype(c.dtype, [&](auto t) {
    using T = decltype(t);
    const T* p = c.data<T>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = cast_value<int64_t>(p[i]);
  });
  return out;
}

// Starts of a dynamic slice clamped so the window [start, start+size) fits (XLA semantics).
std::vector<int64_t> clamped_starts(const Array& starts, const Shape& operand, const Shape& sizes) {
  std::vector<int64_t> s = read_indices(starts);
  for (size_t i = 0; i < operand.size(); ++i)
    s[i] = std::clamp<int64_t>(s[i], 0, operand[i] - sizes[i]);
  return s;
}

}  // namespace

Array cpu::broadcast_view(const Array& a, const Shape& shape, const std::vector<int>& dims) {
  Array v = a;
  v.shape = shape;
  v.strides.assign(shape.size(), 0);
  for (size_t i = 0; i < dims.size(); ++i) {
    if (a.shape[i] == shape[dims[i]]) v.strides[dims[i]] = a.strides[i];
  }
  return v;
}

void BroadcastInDim::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = cpu::broadcast_view(in[0], shape_, dims_);
}

void Reshape::eval_cpu(const std::vector<Array>& in, Array& out) const {
  Array x = contiguous(in[0]);
  out.storage = x.storage;
  out.offset = x.offset;
  out.strides = row_major_strides(out.shape);
}

void Transpose::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array& x = in[0];
  out.storage = x.storage;
  out.offset = x.offset;
  out.strides.resize(perm_.size());
  for (size_t i = 0; i < perm_.size(); ++i) out.strides[i] = x.strides[perm_[i]];
}

void Slice::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array& x = in[0];
  out.storage = x.storage;
  out.offset = x.offset;
  out.strides.resize(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) {
    out.offset += start_[i] * x.strides[i];
    out.strides[i] = x.strides[i] * strides_[i];
  }
}

void DynamicSlice::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array& x = in[0];
  std::vector<int64_t> s = clamped_starts(in[1], x.shape, sizes_);
  out.storage = x.storage;
  out.offset = x.offset;
  out.strides = x.strides;
  for (int i = 0; i < x.ndim(); ++i) out.offset += s[i] * x.strides[i];
}

void DynamicUpdateSlice::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = dense_copy(in[0]);
  const Array u = contiguous(in[1]);
  std::vector<int64_t> s = clamped_starts(in[2], out.shape, u.shape);
  const int nd = out.ndim();
  const size_t es = size_of(out.dtype);
  if (u.size() == 0) return;
  if (nd == 0) {
    std::memcpy(out.raw(), u.raw(), es);
    return;
  }
  const int64_t row = u.shape[nd - 1];
  const int64_t rows = u.size() / row;
  std::vector<int64_t> idx(nd, 0);
  char* dst = static_cast<char*>(out.raw());
  const char* src = static_cast<const char*>(u.raw());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    for (int i = 0; i < nd; ++i) off += (s[i] + idx[i]) * out.strides[i];
    std::memcpy(dst + off * es, src + r * row * es, row * es);
    for (int i = nd - 2; i >= 0; --i) {
      if (++idx[i] < u.shape[i]) break;
      idx[i] = 0;
    }
  }
}

void Concatenate::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const size_t es = size_of(out.dtype);
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis_; ++i) outer *= out.shape[i];
  for (int i = axis_ + 1; i < out.ndim(); ++i) inner *= out.shape[i];
  const int64_t out_row = out.shape[axis_] * inner;
  char* dst = static_cast<char*>(out.raw());
  int64_t col = 0;
  for (const Array& a : in) {
    Array c = contiguous(a);
    const int64_t row = a.shape[axis_] * inner;
    const char* src = static_cast<const char*>(c.raw());
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(dst + (o * out_row + col) * es, src + o * row * es, row * es);
    }
    col += row;
  }
}

void Pad::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const Array x = contiguous(in[0]);
  const size_t es = size_of(out.dtype);
  const int nd = out.ndim();
  char* dst = static_cast<char*>(out.raw());
  // Fill with the padding value.
  const char* v = static_cast<const char*>(in[1].raw());
  const int64_t n = out.size();
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * es, v, es);
  if (x.size() == 0) return;
  if (nd == 0) {
    std::memcpy(dst, x.raw(), es);
    return;
  }
  // Place each operand element at low + i * (interior + 1) along every axis, if inside.
  const int64_t last = x.shape[nd - 1];
  const int64_t rows = x.size() / last;
  std::vector<int64_t> idx(nd, 0);
  const char* src = static_cast<const char*>(x.raw());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    bool inside = true;
    for (int i = 0; i < nd - 1 && inside; ++i) {
      int64_t p = low_[i] + idx[i] * (interior_[i] + 1);
      inside = p >= 0 && p < out.shape[i];
      off += p * out.strides[i];
    }
    if (inside) {
      const int64_t step = interior_[nd - 1] + 1;
      for (int64_t j = 0; j < last; ++j) {
        int64_t p = low_[nd - 1] + j * step;
        if (p >= 0 && p < out.shape[nd - 1]) {
          std::memcpy(dst + (off + p) * es, src + (r * last + j) * es, es);
        }
      }
    }
    for (int i = nd - 2; i >= 0; --i) {
      if (++idx[i] < x.shape[i]) break;
      idx[i] = 0;
    }
  }
}

namespace {
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const Shape& s, int axis) {
  AxisSplit a;
  for (int i = 0; i < axis; ++i) a.outer *= s[i];
  a.n = s[axis];
  for (size_t i = axis + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}
int64_t normalize_index(int64_t i, int64_t n) {
  if (i < 0) i += n;
  return std::clamp<int64_t>(i, 0, n - 1);
}
}  // namespace

void Gather::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const Array x = contiguous(in[0]);
  std::vector<int64_t> idx = read_indices(in[1]);
  AxisSplit a = split_at(x.shape, axis_);
  const size_t es = size_of(out.dtype);
  const int64_t m = int64_t(idx.size());
  for (auto& i : idx) i = normalize_index(i, a.n);
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  const int64_t row = a.inner * int64_t(es);
#pragma omp parallel for collapse(2) if (a.outer * m * a.inner > 65536)
  for (int64_t o = 0; o < a.outer; ++o) {
    for (int64_t j = 0; j < m; ++j) {
      std::memcpy(dst + (o * m + j) * row, src + (o * a.n + idx[j]) * row, row);
    }
  }
}

void ScatterAdd::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = dense_copy(in[0]);
  const Array u = contiguous(in[2]);
  std::vector<int64_t> idx = read_indices(in[1]);
  AxisSplit a = split_at(out.shape, axis_);
  const int64_t m = int64_t(idx.size());
  for (auto& i : idx) i = normalize_index(i, a.n);
  dispatch_dtype(out.dtype, [&](auto t) {
    using T = decltype(t);
    using C =
        std::conditional_t<std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>, float, T>;
    T* dst = out.data<T>();
    const T* src = u.data<T>();
    // Each outer slice is independent; within one, updates run in index order (deterministic).
#pragma omp parallel for if (a.outer * m * a.inner > 65536)
    for (int64_t o = 0; o < a.outer; ++o) {
      for (int64_t j = 0; j < m; ++j) {
        T* d = dst + (o * a.n + idx[j]) * a.inner;
        const T* s = src + (o * m + j) * a.inner;
        for (int64_t k = 0; k < a.inner; ++k) {
          if constexpr (std::is_same_v<T, bool>) {
            d[k] = d[k] || s[k];
          } else {
            d[k] = cast_value<T>(C(cast_value<C>(d[k]) + cast_value<C>(s[k])));
          }
        }
      }
    }
  });
}

void Iota::eval_cpu(const std::vector<Array>&, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  AxisSplit a = split_at(out.shape, dimension_);
  dispatch_dtype(out.dtype, [&](auto t) {
    using T = decltype(t);
    T* p = out.data<T>();
    for (int64_t o = 0; o < a.outer; ++o) {
      for (int64_t j = 0; j < a.n; ++j) {
        T v = cast_value<T>(j);
        T* row = p + (o * a.n + j) * a.inner;
        for (int64_t k = 0; k < a.inner; ++k) row[k] = v;
      }
    }
  });
}

}  // namespace axlearn
