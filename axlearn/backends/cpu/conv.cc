// conv_general_dilated and rev on the CPU. Operands are viewed in canonical axis order
// (lhs (N, C, S...), rhs (O, I, K...), out (N, O, Q...)) by permuting strides, without copying.
// f32 and bf16 run on oneDNN's convolution_forward (f32 accumulation); lhs dilation and negative
// padding, which oneDNN does not take, are materialised first. f64 and f16 (and anything oneDNN
// rejects) use a reference loop accumulating in f64 resp. f32. Batch groups are rewritten as
// feature groups by regrouping the lhs.
#include "axlearn/core/conv.h"

#include <algorithm>
#include <cstring>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace axlearn {

namespace {

thread_local const char* g_last_kernel = "none";

// A convolution in canonical axis order with feature groups only.
struct ConvProblem {
  Array x, w, y;  // (N, C, S...), (O, I, K...), (N, O, Q...); strided views
  int ns = 0;
  std::vector<int64_t> stride, lo, hi, ldil, rdil;
  int64_t groups = 1;
};

Array permuted_view(const Array& a, const std::vector<int>& spec) {
  Array v = a;
  for (size_t i = 0; i < spec.size(); ++i) {
    v.shape[i] = a.shape[spec[i]];
    v.strides[i] = a.strides[spec[i]];
  }
  return v;
}

// (B * N', C, S...) -> dense (N', B * C, S...): batch group b becomes feature group b.
Array batch_groups_to_feature_groups(const Array& x, int64_t b) {
  Array v = x;
  const int64_t n = x.shape[0] / b;
  v.shape = {n, b};
  v.strides = {x.strides[0], n * x.strides[0]};
  v.shape.insert(v.shape.end(), x.shape.begin() + 1, x.shape.end());
  v.strides.insert(v.strides.end(), x.strides.begin() + 1, x.strides.end());
  Array d = contiguous(v);
  d.shape = x.shape;
  d.shape[0] = n;
  d.shape[1] = b * x.shape[1];
  d.strides = row_major_strides(d.shape);
  return d;
}

int64_t dilate_dim(int64_t size, int64_t dilation) {
  return size == 0 ? 0 : 1 + dilation * (size - 1);
}

// For spatial axis d: index of the lhs element under output position q and tap k, or -1 where
// the tap falls on padding or on a hole of the lhs dilation. Table is (Q, K) row-major.
std::vector<int64_t> tap_table(const ConvProblem& p, int d) {
  const int64_t q_n = p.y.shape[2 + d], k_n = p.w.shape[2 + d];
  const int64_t dilated = dilate_dim(p.x.shape[2 + d], p.ldil[d]);
  std::vector<int64_t> t(size_t(q_n * k_n), -1);
  for (int64_t q = 0; q < q_n; ++q) {
    for (int64_t k = 0; k < k_n; ++k) {
      const int64_t pos = q * p.stride[d] + k * p.rdil[d] - p.lo[d];
      if (pos >= 0 && pos < dilated && pos % p.ldil[d] == 0)
        t[size_t(q * k_n + k)] = pos / p.ldil[d];
    }
  }
  return t;
}

template <typename A>
std::vector<A> load_dense(const Array& v) {
  Array d = contiguous(v);
  std::vector<A> out(size_t(d.size()));
  dispatch_dtype(d.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* p = d.data<T>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = cast_value<A>(p[i]);
  });
  return out;
}

// Direct loop over (n, o) pairs; accumulates in A (double for f64, float otherwise). Spatial axes
// are padded to three with size-1 axes.
template <typename A>
void conv_reference(const ConvProblem& p) {
  const int64_t N = p.x.shape[0], C = p.x.shape[1], O = p.w.shape[0], I = p.w.shape[1];
  const int64_t og = O / p.groups;
  int64_t S[3] = {1, 1, 1}, K[3] = {1, 1, 1}, Q[3] = {1, 1, 1}, ys[3] = {0, 0, 0};
  std::vector<int64_t> tab[3];
  for (int d = 0; d < 3; ++d) {
    if (d < p.ns) {
      S[d] = p.x.shape[2 + d];
      K[d] = p.w.shape[2 + d];
      Q[d] = p.y.shape[2 + d];
      ys[d] = p.y.strides[2 + d];
      tab[d] = tap_table(p, d);
    } else {
      tab[d] = {0};
    }
  }
  const int64_t s_total = S[0] * S[1] * S[2], k_total = K[0] * K[1] * K[2];
  const int64_t q_total = Q[0] * Q[1] * Q[2];
  const std::vector<A> xv = load_dense<A>(p.x), wv = load_dense<A>(p.w);
  const Array& y = p.y;
  const int64_t work = N * O * q_total * I * k_total;
#pragma omp parallel for schedule(static) if (work > (1 << 16))
  for (int64_t no = 0; no < N * O; ++no) {
    const int64_t n = no / O, o = no % O, g = o / og;
    std::vector<A> acc(size_t(q_total), A(0));
    for (int64_t i = 0; i < I; ++i) {
      const A* xp = xv.data() + (n * C + g * I + i) * s_total;
      const A* wp = wv.data() + (o * I + i) * k_total;
      for (int64_t k0 = 0; k0 < K[0]; ++k0) {
        for (int64_t k1 = 0; k1 < K[1]; ++k1) {
          for (int64_t k2 = 0; k2 < K[2]; ++k2) {
            const A wk = wp[(k0 * K[1] + k1) * K[2] + k2];
            for (int64_t q0 = 0; q0 < Q[0]; ++q0) {
              const int64_t i0 = tab[0][size_t(q0 * K[0] + k0)];
              if (i0 < 0) continue;
              for (int64_t q1 = 0; q1 < Q[1]; ++q1) {
                const int64_t i1 = tab[1][size_t(q1 * K[1] + k1)];
                if (i1 < 0) continue;
                const A* xrow = xp + (i0 * S[1] + i1) * S[2];
                A* arow = acc.data() + (q0 * Q[1] + q1) * Q[2];
                const int64_t* t2 = tab[2].data() + k2;
                for (int64_t q2 = 0; q2 < Q[2]; ++q2) {
                  const int64_t i2 = t2[q2 * K[2]];
                  if (i2 >= 0) arow[q2] += xrow[i2] * wk;
                }
              }
            }
          }
        }
      }
    }
    dispatch_dtype(y.dtype, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float> ||
                    std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float16_t>) {
        T* base = y.data<T>() + n * y.strides[0] + o * y.strides[1];
        for (int64_t q0 = 0; q0 < Q[0]; ++q0)
          for (int64_t q1 = 0; q1 < Q[1]; ++q1)
            for (int64_t q2 = 0; q2 < Q[2]; ++q2)
              base[q0 * ys[0] + q1 * ys[1] + q2 * ys[2]] =
                  cast_value<T>(acc[size_t((q0 * Q[1] + q1) * Q[2] + q2)]);
      }
    });
  }
}

// Writes the lhs with its padding and dilation applied into a dense (N, C, P...) array, so the
// problem becomes unpadded and undilated on the lhs.
void materialise_lhs(ConvProblem& p) {
  const Array dense = contiguous(p.x);
  int64_t S[3] = {1, 1, 1}, P[3] = {1, 1, 1};
  std::vector<int64_t> src[3];
  for (int d = 0; d < 3; ++d) {
    if (d >= p.ns) {
      src[d] = {0};
      continue;
    }
    S[d] = p.x.shape[2 + d];
    const int64_t dilated = dilate_dim(S[d], p.ldil[d]);
    P[d] = dilated + p.lo[d] + p.hi[d];
    src[d].assign(size_t(P[d]), -1);
    for (int64_t j = 0; j < P[d]; ++j) {
      const int64_t q = j - p.lo[d];
      if (q >= 0 && q < dilated && q % p.ldil[d] == 0) src[d][size_t(j)] = q / p.ldil[d];
    }
  }
  Shape shape = {p.x.shape[0], p.x.shape[1]};
  for (int d = 0; d < p.ns; ++d) shape.push_back(P[d]);
  Array out = Array::empty(shape, p.x.dtype);
  std::memset(out.raw(), 0, out.nbytes());
  const int64_t planes = shape[0] * shape[1];
  const size_t es = size_of(p.x.dtype);
  const char* in_base = static_cast<const char*>(dense.raw());
  char* out_base = static_cast<char*>(out.raw());
#pragma omp parallel for schedule(static) if (out.size() > (1 << 16))
  for (int64_t pl = 0; pl < planes; ++pl) {
    for (int64_t j0 = 0; j0 < P[0]; ++j0) {
      const int64_t i0 = src[0][size_t(j0)];
      if (i0 < 0) continue;
      for (int64_t j1 = 0; j1 < P[1]; ++j1) {
        const int64_t i1 = src[1][size_t(j1)];
        if (i1 < 0) continue;
        for (int64_t j2 = 0; j2 < P[2]; ++j2) {
          const int64_t i2 = src[2][size_t(j2)];
          if (i2 < 0) continue;
          std::memcpy(out_base + (((pl * P[0] + j0) * P[1] + j1) * P[2] + j2) * es,
                      in_base + (((pl * S[0] + i0) * S[1] + i1) * S[2] + i2) * es, es);
        }
      }
    }
  }
  p.x = out;
  for (int d = 0; d < p.ns; ++d) {
    p.lo[d] = p.hi[d] = 0;
    p.ldil[d] = 1;
  }
}

// ---- oneDNN ----

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct OnednnConv {
  dnnl::memory::desc src_md, wei_md, dst_md;  // the caller's strided layouts
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward conv;
  // Present when oneDNN's preferred layout differs from the caller's.
  std::optional<dnnl::reorder> src_reorder, wei_reorder, dst_reorder;
};

// Null when oneDNN has no implementation for the problem.
const OnednnConv* cached_conv(const ConvProblem& p, dnnl::memory::data_type dt) {
  using dims = dnnl::memory::dims;
  std::vector<int64_t> key = {int64_t(dt), p.ns, p.groups};
  for (const Array* a : {&p.x, &p.w, &p.y}) {
    key.insert(key.end(), a->shape.begin(), a->shape.end());
    key.insert(key.end(), a->strides.begin(), a->strides.end());
  }
  for (const auto* v : {&p.stride, &p.lo, &p.hi, &p.rdil})
    key.insert(key.end(), v->begin(), v->end());

  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::unique_ptr<OnednnConv>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  auto c = std::make_unique<OnednnConv>();
  c->src_md = dnnl::memory::desc(dims(p.x.shape), dt, dims(p.x.strides));
  c->dst_md = dnnl::memory::desc(dims(p.y.shape), dt, dims(p.y.strides));
  dims wshape = p.w.shape, wstrides = p.w.strides;
  if (p.groups > 1) {
    // Grouped weights are (G, O / G, I, K...).
    wshape[0] = p.w.shape[0] / p.groups;
    wshape.insert(wshape.begin(), p.groups);
    wstrides.insert(wstrides.begin(), wshape[1] * p.w.strides[0]);
  }
  c->wei_md = dnnl::memory::desc(wshape, dt, wstrides);
  using tag = dnnl::memory::format_tag;
  dnnl::memory::desc src_any(dims(p.x.shape), dt, tag::any);
  dnnl::memory::desc wei_any(wshape, dt, tag::any);
  dnnl::memory::desc dst_any(dims(p.y.shape), dt, tag::any);
  dims dil(p.rdil.size());
  for (size_t i = 0; i < dil.size(); ++i) dil[i] = p.rdil[i] - 1;  // oneDNN counts the holes
  try {
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_any, wei_any,
        dnnl::memory::desc(), dst_any, dims(p.stride), dil, dims(p.lo), dims(p.hi));
    c->pd = dnnl::convolution_forward::primitive_desc(desc, engine());
  } catch (const dnnl::error&) {
    cache.emplace(key, nullptr);
    return nullptr;
  }
  c->conv = dnnl::convolution_forward(c->pd);
  auto reorder = [&](const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    return dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to));
  };
  if (c->pd.src_desc() != c->src_md) c->src_reorder = reorder(c->src_md, c->pd.src_desc());
  if (c->pd.weights_desc() != c->wei_md) c->wei_reorder = reorder(c->wei_md, c->pd.weights_desc());
  if (c->pd.dst_desc() != c->dst_md) c->dst_reorder = reorder(c->pd.dst_desc(), c->dst_md);
  if (cache.size() > 512) cache.clear();
  return cache.emplace(key, std::move(c)).first->second.get();
}

// Replaces stride-0 (broadcast) operands by dense copies and gives size-1 axes a non-zero
// stride; oneDNN wants neither broadcasts nor zero strides.
Array onednn_friendly(const Array& a) {
  for (int i = 0; i < a.ndim(); ++i) {
    if (a.strides[i] == 0 && a.shape[i] > 1) return contiguous(a);
  }
  Array v = a;
  for (int i = 0; i < v.ndim(); ++i) {
    if (v.shape[i] == 1) v.strides[i] = 1;
  }
  return v;
}

bool conv_onednn(ConvProblem p) {
  const dnnl::memory::data_type dt =
      p.x.dtype == Dtype::kBF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  bool materialise = false;
  for (int d = 0; d < p.ns; ++d) materialise |= p.ldil[d] > 1 || p.lo[d] < 0 || p.hi[d] < 0;
  if (materialise) materialise_lhs(p);
  if (p.ns == 0) {
    // oneDNN wants a spatial axis: add a size-1 one.
    for (Array* a : {&p.x, &p.w, &p.y}) {
      a->shape.push_back(1);
      a->strides.push_back(1);
    }
    p.ns = 1;
    p.stride = p.rdil = {1};
    p.lo = p.hi = {0};
  }
  p.x = onednn_friendly(p.x);
  p.w = onednn_friendly(p.w);
  p.y = onednn_friendly(p.y);
  const OnednnConv* c = cached_conv(p, dt);
  if (!c) return false;
  dnnl::stream s(engine());
  dnnl::memory src(c->src_md, engine(), p.x.raw());
  dnnl::memory wei(c->wei_md, engine(), p.w.raw());
  dnnl::memory dst(c->dst_md, engine(), p.y.raw());
  if (c->src_reorder) {
    dnnl::memory t(c->pd.src_desc(), engine());
    c->src_reorder->execute(s, src, t);
    src = t;
  }
  if (c->wei_reorder) {
    dnnl::memory t(c->pd.weights_desc(), engine());
    c->wei_reorder->execute(s, wei, t);
    wei = t;
  }
  dnnl::memory out = c->dst_reorder ? dnnl::memory(c->pd.dst_desc(), engine()) : dst;
  c->conv.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, out}});
  if (c->dst_reorder) c->dst_reorder->execute(s, out, dst);
  s.wait();
  return true;
}

}  // namespace

const char* last_conv_kernel() { return g_last_kernel; }

void ConvGeneralDilated::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const ConvParams& cp = params_;
  out = Array::empty(out.shape, out.dtype);
  if (out.size() == 0) return;
  ConvProblem p;
  p.x = permuted_view(in[0], cp.dn.lhs_spec);
  p.w = permuted_view(in[1], cp.dn.rhs_spec);
  p.y = permuted_view(out, cp.dn.out_spec);
  p.ns = out.ndim() - 2;
  p.stride = cp.window_strides;
  p.ldil = cp.lhs_dilation;
  p.rdil = cp.rhs_dilation;
  for (auto [lo, hi] : cp.padding) {
    p.lo.push_back(lo);
    p.hi.push_back(hi);
  }
  p.groups = cp.feature_group_count;
  if (cp.batch_group_count > 1) {
    p.x = batch_groups_to_feature_groups(p.x, cp.batch_group_count);
    p.groups = cp.batch_group_count;
  }
  if (p.x.size() == 0 || p.w.size() == 0) {
    std::memset(out.raw(), 0, out.nbytes());  // nothing to sum: all zeros
    return;
  }
  if ((out.dtype == Dtype::kF32 || out.dtype == Dtype::kBF16) && conv_onednn(p)) {
    g_last_kernel = "onednn";
    return;
  }
  g_last_kernel = "reference";
  if (out.dtype == Dtype::kF64) {
    conv_reference<double>(p);
  } else {
    conv_reference<float>(p);
  }
}

// ------------------------------------------------------------------ rev

void Rev::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array& x = in[0];
  out = Array::empty(out.shape, out.dtype);
  const int nd = x.ndim();
  if (out.size() == 0) return;
  // Read x backwards along the reversed axes: start at their last element, step negatively.
  std::vector<int64_t> step(x.strides.begin(), x.strides.end());
  int64_t start = 0;
  for (int d : dims_) {
    start += (x.shape[d] - 1) * x.strides[d];
    step[d] = -x.strides[d];
  }
  const size_t es = size_of(x.dtype);
  const int64_t inner = nd ? x.shape[nd - 1] : 1;
  const int64_t inner_step = nd ? step[nd - 1] : 1;
  const int64_t rows = out.size() / inner;
  const char* base = static_cast<const char*>(x.raw()) + start * int64_t(es);
  char* dst = static_cast<char*>(out.raw());
#pragma omp parallel for schedule(static) if (out.size() > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0, rest = r;
    for (int d = nd - 2; d >= 0; --d) {
      off += (rest % x.shape[d]) * step[d];
      rest /= x.shape[d];
    }
    const char* src = base + off * int64_t(es);
    char* row = dst + r * inner * int64_t(es);
    for (int64_t j = 0; j < inner; ++j)
      std::memcpy(row + j * es, src + j * inner_step * int64_t(es), es);
  }
}

}  // namespace axlearn
