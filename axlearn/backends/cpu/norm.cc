// CPU kernels of the fused normalisations (core/norm.h). Rows of the last axis are independent
// and run in parallel; each is read once in the compute type (f32 for 16-bit floats, f64 for f64),
// reduced with SIMD sums while in cache, and written once, with no intermediate tensors.
#include "axlearn/core/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "axlearn/backends/cpu/elementwise.h"

namespace axlearn {

namespace {

// Below this many elements the fork/join of a parallel region costs more than it saves.
constexpr int64_t kParallelElements = 1 << 15;
// NormGrad sums dscale/dbias per block of rows and then over blocks in order. The block count
// depends on the shape only, so the sums are associated the same way at any thread count.
constexpr int64_t kMaxGradBlocks = 128;

template <typename Fn>
void dispatch_float_compute(Dtype d, Fn&& fn) {
  if (compute_dtype(d) == float64) {
    fn(double{});
  } else {
    fn(float{});
  }
}

// Row `row` of the (R, D) view of `a` in compute type C: a pointer into a's storage when it
// already holds dense C (`direct`), else converted into `buf`.
template <typename C>
const C* load_row(const Array& a, bool direct, int64_t row, int64_t d, C* buf) {
  if (direct) return a.data<C>() + row * d;
  cpu::load_chunk<C>(a, row * d, d, buf);
  return buf;
}

template <typename C>
bool is_direct(const Array& a) {
  return a.dtype == dtype_of<C>() && a.is_contiguous();
}

template <typename C>
std::vector<C> load_param(const Array* a) {
  if (!a) return {};
  std::vector<C> v(size_t(a->size()));
  cpu::load_chunk<C>(*a, 0, a->size(), v.data());
  return v;
}

template <typename C>
struct RowStats {
  C mean;  // 0 for rms
  C rstd;  // rsqrt(mean((x - mean)^2) + eps)
};

// Two passes over the row (mean, then centred squares): as stable as the ops composition, and
// the row is still in cache for the second.
template <typename C>
RowStats<C> row_stats(NormKind kind, const C* x, int64_t d, C eps) {
  C mu = 0;
  if (kind == NormKind::kLayer) {
    C s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < d; ++j) s += x[j];
    mu = s / C(d);
  }
  C ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < d; ++j) {
    C v = x[j] - mu;
    ss += v * v;
  }
  return {mu, C(1) / std::sqrt(ss / C(d) + eps)};
}

// y = (x - mean) * rstd [* scale] [+ bias], rounded in that order (as AXLearn's layers write it).
template <typename C, bool kScale, bool kBias>
void norm_row(RowStats<C> st, const C* x, const C* scale, const C* bias, C* y, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) {
    C v = (x[j] - st.mean) * st.rstd;
    if constexpr (kScale) v = v * scale[j];
    if constexpr (kBias) v = v + bias[j];
    y[j] = v;
  }
}

template <typename C>
void norm_forward(const NormAttrs& attrs, const Array& x, const Array* scale, const Array* bias,
                  Array& out) {
  const int64_t d = x.shape.back();
  const int64_t rows = d == 0 ? 0 : x.size() / d;
  const std::vector<C> scale_v = load_param<C>(scale), bias_v = load_param<C>(bias);
  const C* sp = scale ? scale_v.data() : nullptr;
  const C* bp = bias ? bias_v.data() : nullptr;
  const C eps = C(attrs.eps);
  const bool x_direct = is_direct<C>(x), y_direct = out.dtype == dtype_of<C>();
  auto row_fn = sp ? (bp ? norm_row<C, true, true> : norm_row<C, true, false>)
                   : (bp ? norm_row<C, false, true> : norm_row<C, false, false>);
#pragma omp parallel if (x.size() >= kParallelElements)
  {
    std::vector<C> xbuf(x_direct ? 0 : size_t(d)), ybuf(y_direct ? 0 : size_t(d));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const C* xr = load_row<C>(x, x_direct, r, d, xbuf.data());
      C* yr = y_direct ? out.data<C>() + r * d : ybuf.data();
      row_fn(row_stats<C>(attrs.kind, xr, d, eps), xr, sp, bp, yr, d);
      if (!y_direct) cpu::store_chunk<C>(yr, out.dtype, out.raw(), r * d, d);
    }
  }
}

// One row of the backward. With x_hat = (x - mean) * rstd and g = dy * scale:
//   dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))   (no mean(g) for rms),
// and the row's dy * x_hat and dy are added to the block's dscale / dbias partial sums.
template <typename C, bool kScale>
void grad_row(NormKind kind, RowStats<C> st, const C* x, const C* scale, const C* dy, C* dx,
              C* part_scale, C* part_bias, int64_t d) {
  C sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
  for (int64_t j = 0; j < d; ++j) {
    C xh = (x[j] - st.mean) * st.rstd;
    C g = dy[j];
    if constexpr (kScale) g = g * scale[j];
    sg += g;
    sgx += g * xh;
  }
  const C mg = kind == NormKind::kLayer ? sg / C(d) : C(0);
  const C mgx = sgx / C(d);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) {
    C xh = (x[j] - st.mean) * st.rstd;
    C g = dy[j];
    if constexpr (kScale) g = g * scale[j];
    dx[j] = st.rstd * (g - mg - xh * mgx);
  }
  if (part_scale) {
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) part_scale[j] += dy[j] * ((x[j] - st.mean) * st.rstd);
  }
  if (part_bias) {
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) part_bias[j] += dy[j];
  }
}

// Sums `blocks` partial rows of length d into `dst`, in block order.
template <typename C>
void sum_blocks(const std::vector<C>& parts, int64_t blocks, int64_t d, C* dst) {
#pragma omp parallel for schedule(static) if (blocks * d >= kParallelElements)
  for (int64_t j = 0; j < d; ++j) {
    C s = 0;
    for (int64_t b = 0; b < blocks; ++b) s += parts[size_t(b * d + j)];
    dst[j] = s;
  }
}

template <typename C>
void norm_backward(const NormAttrs& attrs, const Array& x, const Array* scale, const Array& dy,
                   Array& out) {
  const int64_t d = x.shape.back();
  const int64_t rows = d == 0 ? 0 : x.size() / d;
  C* dx = out.data<C>();
  C* dscale = attrs.has_scale ? dx + rows * d : nullptr;
  C* dbias = attrs.has_bias ? dx + (rows + attrs.has_scale) * d : nullptr;
  if (d == 0) return;

  const std::vector<C> scale_v = load_param<C>(scale);
  const C* sp = scale ? scale_v.data() : nullptr;
  const C eps = C(attrs.eps);
  const int64_t blocks = std::min(rows, kMaxGradBlocks);
  std::vector<C> part_scale(dscale ? size_t(blocks * d) : 0, C(0));
  std::vector<C> part_bias(dbias ? size_t(blocks * d) : 0, C(0));
  const bool x_direct = is_direct<C>(x), dy_direct = is_direct<C>(dy);
  auto row_fn = sp ? grad_row<C, true> : grad_row<C, false>;
#pragma omp parallel if (x.size() >= kParallelElements)
  {
    std::vector<C> xbuf(x_direct ? 0 : size_t(d)), dybuf(dy_direct ? 0 : size_t(d));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      C* ps = dscale ? part_scale.data() + b * d : nullptr;
      C* pb = dbias ? part_bias.data() + b * d : nullptr;
      for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
        const C* xr = load_row<C>(x, x_direct, r, d, xbuf.data());
        const C* dyr = load_row<C>(dy, dy_direct, r, d, dybuf.data());
        row_fn(attrs.kind, row_stats<C>(attrs.kind, xr, d, eps), xr, sp, dyr, dx + r * d, ps, pb,
               d);
      }
    }
  }
  if (dscale) sum_blocks<C>(part_scale, blocks, d, dscale);
  if (dbias) sum_blocks<C>(part_bias, blocks, d, dbias);
}

}  // namespace

void Norm::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array* scale = attrs_.has_scale ? &in[1] : nullptr;
  const Array* bias = attrs_.has_bias ? &in.back() : nullptr;
  out = Array::empty(out.shape, out.dtype);
  dispatch_float_compute(
      in[0].dtype, [&](auto tag) { norm_forward<decltype(tag)>(attrs_, in[0], scale, bias, out); });
}

void NormGrad::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array* scale = attrs_.has_scale ? &in[1] : nullptr;
  out = Array::empty(out.shape, out.dtype);
  dispatch_float_compute(in[0].dtype, [&](auto tag) {
    norm_backward<decltype(tag)>(attrs_, in[0], scale, in.back(), out);
  });
}

}  // namespace axlearn
