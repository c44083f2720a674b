// CPU kernels of the fused cross-entropy (core/cross_entropy.h). Rows of the class axis are
// independent and run in parallel; each is read in the compute type (f32 for 16-bit logits, f64
// for f64), reduced for max and logsumexp while in cache, and the backward writes d logits in the
// same visit, so the probabilities never exist as a tensor.
#include "axlearn/core/cross_entropy.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/backends/cpu/math.h"

namespace axlearn {

namespace {

constexpr int64_t kParallelElements = 1 << 15;

template <typename C>
C exp_c(C x) {
  if constexpr (std::is_same_v<C, float>) {
    return cpu::exp_impl(x);
  } else {
    return std::exp(x);
  }
}

template <typename C>
struct RowLse {
  C lse;
  C sum;  // sum of the row's logits, for label smoothing
};

template <typename C>
RowLse<C> row_lse(const C* x, int64_t v) {
  C m = -std::numeric_limits<C>::infinity();
  C total = 0;
#pragma omp simd reduction(max : m) reduction(+ : total)
  for (int64_t j = 0; j < v; ++j) {
    m = x[j] > m ? x[j] : m;
    total += x[j];
  }
  if (!std::isfinite(m)) return {m, total};  // all -inf, or inf/nan in the row
  C s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < v; ++j) s += exp_c<C>(x[j] - m);
  return {m + std::log(s), total};
}

// Labels of every row as int64; throws Error for the first label >= V.
std::vector<int64_t> load_labels(const Array& labels, int64_t v, const Shape& logits_shape) {
  std::vector<int64_t> out(size_t(labels.size()));
  if (!out.empty()) cpu::load_chunk<int64_t>(labels, 0, labels.size(), out.data());
  for (size_t r = 0; r < out.size(); ++r) {
    if (out[r] >= v) {
      std::ostringstream pos;
      int64_t flat = int64_t(r);
      std::vector<int64_t> idx(labels.shape.size());
      for (int i = int(idx.size()) - 1; i >= 0; --i) {
        idx[size_t(i)] = flat % labels.shape[size_t(i)];
        flat /= labels.shape[size_t(i)];
      }
      for (size_t i = 0; i < idx.size(); ++i) pos << (i ? ", " : "") << idx[i];
      fail("cross_entropy: label ", out[r], " at position [", pos.str(),
           "] is out of range for logits of shape ", shape_str(logits_shape), " (", v,
           " classes); use a negative label to ignore a position");
    }
  }
  return out;
}

template <typename C>
const C* load_row(const Array& a, bool direct, int64_t row, int64_t d, C* buf) {
  if (direct) return a.data<C>() + row * d;
  cpu::load_chunk<C>(a, row * d, d, buf);
  return buf;
}

template <typename C>
void forward(const CrossEntropyOptions& o, const Array& logits, const Array& labels, Array& out) {
  const int64_t v = logits.shape.back();
  const int64_t rows = labels.size();
  const std::vector<int64_t> y = load_labels(labels, v, logits.shape);
  C* loss = out.data<C>();
  const bool direct = logits.dtype == dtype_of<C>() && logits.is_contiguous();
  const C keep = C(1 - o.label_smoothing), spread = v > 0 ? C(o.label_smoothing / double(v)) : 0;
  const C z = C(o.z_loss_scale);
#pragma omp parallel if (logits.size() >= kParallelElements)
  {
    std::vector<C> buf(direct ? 0 : size_t(v));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (y[size_t(r)] < 0) {
        loss[r] = 0;
        continue;
      }
      const C* x = load_row<C>(logits, direct, r, v, buf.data());
      const RowLse<C> st = row_lse<C>(x, v);
      C l = st.lse - keep * x[y[size_t(r)]];
      if (o.label_smoothing > 0) l -= spread * st.sum;
      if (o.z_loss_scale > 0) l += z * st.lse * st.lse;
      loss[r] = l;
    }
  }
}

template <typename C>
void backward(const CrossEntropyOptions& o, const Array& logits, const Array& labels,
              const Array& dloss, Array& out) {
  const int64_t v = logits.shape.back();
  const int64_t rows = labels.size();
  const std::vector<int64_t> y = load_labels(labels, v, logits.shape);
  std::vector<C> dl(static_cast<size_t>(rows));
  if (rows > 0) cpu::load_chunk<C>(dloss, 0, rows, dl.data());
  const bool direct = logits.dtype == dtype_of<C>() && logits.is_contiguous();
  const bool out_direct = out.dtype == dtype_of<C>();
  const C keep = C(1 - o.label_smoothing), spread = v > 0 ? C(o.label_smoothing / double(v)) : 0;
  const C z2 = C(2 * o.z_loss_scale);
#pragma omp parallel if (logits.size() >= kParallelElements)
  {
    std::vector<C> buf(direct ? 0 : size_t(v)), gbuf(out_direct ? 0 : size_t(v));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      C* g = out_direct ? out.data<C>() + r * v : gbuf.data();
      const int64_t label = y[size_t(r)];
      if (label < 0) {
        for (int64_t j = 0; j < v; ++j) g[j] = 0;
      } else {
        const C* x = load_row<C>(logits, direct, r, v, buf.data());
        const C lse = row_lse<C>(x, v).lse;
        // (1 + 2 z lse) * softmax - target, all times dloss.
        const C a = dl[size_t(r)] * (1 + z2 * lse), b = dl[size_t(r)] * spread;
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) g[j] = a * exp_c<C>(x[j] - lse) - b;
        g[label] -= dl[size_t(r)] * keep;
      }
      if (!out_direct) cpu::store_chunk<C>(g, out.dtype, out.raw(), r * v, v);
    }
  }
}

template <typename Fn>
void dispatch_float(Dtype d, Fn&& fn) {
  if (compute_dtype(d) == float64) {
    fn(double{});
  } else {
    fn(float{});
  }
}

}  // namespace

void CrossEntropy::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  dispatch_float(in[0].dtype, [&](auto tag) { forward<decltype(tag)>(opts_, in[0], in[1], out); });
}

void CrossEntropyGrad::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  dispatch_float(in[0].dtype,
                 [&](auto tag) { backward<decltype(tag)>(opts_, in[0], in[1], in[2], out); });
}

}  // namespace axlearn
