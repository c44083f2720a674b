// CPU kernels of the data-movement primitives. Broadcast, transpose, slice, dynamic slice and
// (dense) reshape return views of their input's storage; the rest copy, splitting the output
// into ranges for the OpenMP threads and moving whole contiguous runs with memcpy / memset.
#include <algorithm>
#include <cstring>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/primitives.h"

namespace axlearn {

namespace {

// Bytes per parallel task: large enough to amortise a fork, small enough to balance two to a
// few dozen threads on the tensors of a training step.
constexpr int64_t kCopyGrainBytes = int64_t(1) << 17;

// Elements per parallel task for element size `es`.
int64_t copy_grain(size_t es) { return std::max<int64_t>(1, kCopyGrainBytes / int64_t(es)); }

// memcpy of n bytes split across the threads.
void parallel_memcpy(char* dst, const char* src, int64_t n) {
  cpu::parallel_chunks(n, kCopyGrainBytes,
                       [&](int64_t b, int64_t e) { std::memcpy(dst + b, src + b, size_t(e - b)); });
}

// Writes n copies of the es-byte value at `v` to dst: memset when its bits are all zero.
void fill_bytes(char* dst, int64_t n, const char* v, size_t es) {
  if (n <= 0) return;
  if (std::all_of(v, v + es, [](char c) { return c == 0; })) {
    std::memset(dst, 0, size_t(n) * es);
    return;
  }
  auto fill_as = [&](auto tag) {
    using U = decltype(tag);
    U x;
    std::memcpy(&x, v, sizeof(U));
    std::fill_n(reinterpret_cast<U*>(dst), n, x);
  };
  switch (es) {
    case 1:
      std::memset(dst, static_cast<unsigned char>(v[0]), size_t(n));
      break;
    case 2:
      fill_as(uint16_t{});
      break;
    case 4:
      fill_as(uint32_t{});
      break;
    case 8:
      fill_as(uint64_t{});
      break;
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * int64_t(es), v, es);
  }
}

// True when every stride is 0: one stored value broadcast to the whole shape (zeros, full).
bool is_splat(const Array& a) {
  return std::all_of(a.strides.begin(), a.strides.end(), [](int64_t s) { return s == 0; });
}

// Element offset (in `a`'s storage, from a.offset) of row `row` of `a` seen as (rows, shape
// [axis:]) — that is, of the multi-index `row` over the axes before `axis`.
int64_t row_offset(const Array& a, int axis, int64_t row) {
  int64_t off = 0;
  for (int i = axis - 1; i >= 0; --i) {
    off += (row % a.shape[i]) * a.strides[i];
    row /= a.shape[i];
  }
  return off;
}

// True when the axes from `axis` on are dense row-major in `a` (each row is one memcpy).
bool rows_are_dense(const Array& a, int axis) {
  int64_t expect = 1;
  for (int i = a.ndim() - 1; i >= axis; --i) {
    if (a.shape[i] == 1) continue;
    if (a.strides[i] != expect) return false;
    expect *= a.shape[i];
  }
  return true;
}

// n elements of `es` bytes from src (stride `stride` elements) to dense dst.
void gather_strided(char* dst, const char* src, int64_t stride, int64_t n, size_t es) {
  auto copy_as = [&](auto tag) {
    using U = decltype(tag);
    U* d = reinterpret_cast<U*>(dst);
    for (int64_t i = 0; i < n; ++i) std::memcpy(d + i, src + i * stride * int64_t(es), sizeof(U));
  };
  switch (es) {
    case 1:
      copy_as(uint8_t{});
      break;
    case 2:
      copy_as(uint16_t{});
      break;
    case 4:
      copy_as(uint32_t{});
      break;
    case 8:
      copy_as(uint64_t{});
      break;
    default:
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(dst + i * int64_t(es), src + i * stride * int64_t(es), es);
  }
}

// A dense row-major copy of `a` (or `a` itself when already dense), made on all threads: whole
// rows by memcpy where the trailing axes are dense, a typed strided loop otherwise.
Array dense(const Array& a) {
  if (a.is_contiguous()) return a;
  Array out = Array::empty(a.shape, a.dtype, a.storage->device);
  const int nd = a.ndim();
  const size_t es = size_of(a.dtype);
  // Rows: the largest dense trailing block, or the last axis read through its stride.
  int axis = nd - 1;
  while (axis > 0 && rows_are_dense(a, axis - 1)) --axis;
  const bool dense_rows = rows_are_dense(a, axis);
  int64_t row = 1;
  for (int i = axis; i < nd; ++i) row *= a.shape[i];
  const int64_t rows = row == 0 ? 0 : a.size() / row;
  const char* src = static_cast<const char*>(a.raw());
  char* dst = static_cast<char*>(out.raw());
  const int64_t grain = std::max<int64_t>(1, copy_grain(es) / std::max<int64_t>(row, 1));
  cpu::parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const char* s = src + row_offset(a, axis, r) * int64_t(es);
      if (dense_rows) {
        std::memcpy(dst + r * row * int64_t(es), s, size_t(row) * es);
      } else {
        gather_strided(dst + r * row * int64_t(es), s, a.strides[nd - 1], row, es);
      }
    }
  });
  return out;
}

// A fresh dense copy (never aliases `a`), for kernels that write into their output.
Array dense_copy(const Array& a) {
  Array c = dense(a);
  if (c.storage != a.storage) return c;
  Array out = Array::empty(a.shape, a.dtype, a.storage->device);
  parallel_memcpy(static_cast<char*>(out.raw()), static_cast<const char*>(a.raw()),
                  int64_t(a.nbytes()));
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
  Array x = dense(in[0]);
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
  const Array u = dense(in[1]);
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
  // Output row o (of `outer`) is input 0's row o, then input 1's, ...; col[k] is where input k's
  // part of a row starts (elements). Inputs are read in place when their rows are dense (slices
  // along earlier axes, e.g. rotate_half's halves, stay views).
  const int64_t out_row = out.shape[axis_] * inner;
  std::vector<Array> srcs;
  std::vector<int64_t> col{0};
  for (const Array& a : in) {
    srcs.push_back(is_splat(a) || rows_are_dense(a, axis_) ? a : dense(a));
    col.push_back(col.back() + a.shape[axis_] * inner);
  }
  char* dst = static_cast<char*>(out.raw());
  cpu::parallel_chunks(outer * out_row, copy_grain(es), [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end;) {
      const int64_t o = e / out_row, c = e % out_row;
      const size_t k = size_t(std::upper_bound(col.begin(), col.end(), c) - col.begin() - 1);
      const int64_t stop = std::min(end, o * out_row + col[k + 1]);
      const Array& x = srcs[k];
      const char* src = static_cast<const char*>(x.raw());
      if (is_splat(x)) {
        fill_bytes(dst + e * int64_t(es), stop - e, src, es);
      } else {
        const int64_t off = row_offset(x, axis_, o) + c - col[k];
        std::memcpy(dst + e * int64_t(es), src + off * int64_t(es), size_t(stop - e) * es);
      }
      e = stop;
    }
  });
}

namespace {

// lax.pad on dense row-major data, seen as: lines (every index of the axes before `axis`) x
// positions along `axis` (the innermost padded one) x a block of `block` elements (the trailing
// axes, unpadded and contiguous in the operand). A position holds either an operand block or
// padding, so every write is a memcpy of runs of blocks or a fill.
struct PadLayout {
  int axis = 0;
  int64_t block = 1;
  int64_t positions = 1;  // out.shape[axis]
  int64_t lines = 1;
};

PadLayout pad_layout(const Array& x, const Shape& out, const Shape& low, const Shape& high,
                     const Shape& interior) {
  const int nd = int(out.size());
  PadLayout l;
  l.axis = 0;
  for (int i = nd - 1; i >= 0; --i) {
    if (low[i] != 0 || high[i] != 0 || (interior[i] != 0 && x.shape[i] > 1)) {
      l.axis = i;
      break;
    }
  }
  for (int i = l.axis + 1; i < nd; ++i) l.block *= out[i];
  l.positions = out[l.axis];
  for (int i = 0; i < l.axis; ++i) l.lines *= out[i];
  return l;
}

}  // namespace

void Pad::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const size_t es = size_of(out.dtype);
  const int nd = out.ndim();
  char* dst = static_cast<char*>(out.raw());
  const char* value = static_cast<const char*>(in[1].raw());
  if (out.size() == 0) return;
  if (nd == 0) {
    std::memcpy(dst, in[0].raw(), es);
    return;
  }
  const PadLayout l = pad_layout(in[0], out.shape, low_, high_, interior_);
  // The operand is read through its strides (slices of a cotangent stay views); only blocks
  // that are not contiguous force a dense copy first.
  const Array x = rows_are_dense(in[0], l.axis + 1) ? in[0] : dense(in[0]);
  const char* src = static_cast<const char*>(x.raw());
  const int a = l.axis;
  const int64_t step = interior_[a] + 1, n = x.shape[a];

  // Operand offset (elements) of line `line`'s data, or -1 when the whole line is padding.
  auto line_source = [&](int64_t line) -> int64_t {
    int64_t off = 0;
    for (int i = a - 1; i >= 0; --i) {
      const int64_t p = line % out.shape[i] - low_[i];
      line /= out.shape[i];
      const int64_t s = interior_[i] + 1;
      if (p < 0 || p % s != 0 || p / s >= x.shape[i]) return -1;
      off += (p / s) * x.strides[i];
    }
    return off;
  };
  // Elements [e0, e1) of one output line whose operand data starts at `base` (or -1).
  const bool one_run = step == 1 && (x.strides[a] == l.block || n == 1);
  auto do_range = [&](char* d, int64_t base, int64_t e0, int64_t e1) {
    if (base < 0 || x.size() == 0) {
      fill_bytes(d + e0 * int64_t(es), e1 - e0, value, es);
      return;
    }
    if (one_run) {
      // Padding, then the operand's positions [low, low + n) as one run, then padding.
      const int64_t c0 = std::clamp(low_[a] * l.block, e0, e1);
      const int64_t c1 = std::clamp((low_[a] + n) * l.block, e0, e1);
      fill_bytes(d + e0 * int64_t(es), c0 - e0, value, es);
      std::memcpy(d + c0 * int64_t(es), src + (base + c0 - low_[a] * l.block) * int64_t(es),
                  size_t(c1 - c0) * es);
      fill_bytes(d + c1 * int64_t(es), e1 - c1, value, es);
      return;
    }
    for (int64_t e = e0; e < e1;) {
      const int64_t p = e / l.block, stop = std::min(e1, (p + 1) * l.block);
      const int64_t q = p - low_[a];
      if (q >= 0 && q % step == 0 && q / step < n) {
        const int64_t off = base + (q / step) * x.strides[a] + e - p * l.block;
        std::memcpy(d + e * int64_t(es), src + off * int64_t(es), size_t(stop - e) * es);
      } else {
        fill_bytes(d + e * int64_t(es), stop - e, value, es);
      }
      e = stop;
    }
  };
  // Parallel over output elements, so that one long line is split as well as many short ones.
  const int64_t line_elems = l.positions * l.block;
  cpu::parallel_chunks(out.size(), copy_grain(es), [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end;) {
      const int64_t line = u / line_elems, stop = std::min(end, (line + 1) * line_elems);
      do_range(dst + line * line_elems * int64_t(es), line_source(line), u - line * line_elems,
               stop - line * line_elems);
      u = stop;
    }
  });
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
  const Array x = dense(in[0]);
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
  const Array u = dense(in[2]);
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
