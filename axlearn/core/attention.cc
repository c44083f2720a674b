// Shape checks and VJP rules of the fused attention, the user op and its ops-composed reference.
// Kernels are in backends/cpu/attention.cc.
#include "axlearn/core/attention.h"

#include <cmath>
#include <cstring>
#include <functional>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

namespace {

struct Dims {
  int64_t b, t, n, h, s, k;
};

Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v) {
  if (!q.defined() || !k.defined() || !v.defined()) fail(op, ": q, k and v must be defined");
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) {
    fail(op, ": expects q (B, T, N, H), k and v (B, S, K, H), got q ", shape_str(q.shape()), ", k ",
         shape_str(k.shape()), ", v ", shape_str(v.shape()));
  }
  if (k.shape() != v.shape()) {
    fail(op, ": k ", shape_str(k.shape()), " and v ", shape_str(v.shape()),
         " must have the same shape");
  }
  const Dims d{q.shape(0), q.shape(1), q.shape(2), q.shape(3), k.shape(1), k.shape(2)};
  if (k.shape(0) != d.b || k.shape(3) != d.h) {
    fail(op, ": q ", shape_str(q.shape()), " and k ", shape_str(k.shape()),
         " must agree in batch (axis 0) and head dim (axis 3)");
  }
  if (d.k == 0 || d.n % d.k != 0) {
    fail(op, ": the number of kv heads must divide the number of query heads, got q ",
         shape_str(q.shape()), " and k ", shape_str(k.shape()));
  }
  if (!is_floating(q.dtype()) || q.dtype() != k.dtype() || q.dtype() != v.dtype()) {
    fail(op, ": q, k and v must share one float dtype, got ", dtype_name(q.dtype()), ", ",
         dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  }
  return d;
}

void check_side(const char* op, const char* what, const Tensor& x, const Shape& want,
                bool allow_bool) {
  const bool ok_dtype = is_integer(x.dtype()) || (allow_bool && x.dtype() == bool_);
  if (x.shape() != want || !ok_dtype) {
    fail(op, ": ", what, " must be ", allow_bool ? "bool or integer " : "integer ", shape_str(want),
         ", got ", shape_str(x.shape()), " ", dtype_name(x.dtype()));
  }
}

// Checks everything and returns the primitive's attributes and inputs.
std::pair<AttentionAttrs, std::vector<Tensor>> prepare(const char* op, const Tensor& q,
                                                       const Tensor& k, const Tensor& v,
                                                       const AttentionOptions& o) {
  const Dims d = check_qkv(op, q, k, v);
  AttentionAttrs a;
  a.scale = o.scale ? *o.scale : 1.0 / std::sqrt(double(d.h));
  a.causal = o.causal || o.sliding_window.has_value();
  if (o.sliding_window) {
    if (*o.sliding_window < 0) fail(op, ": sliding_window must be >= 0, got ", *o.sliding_window);
    a.window = *o.sliding_window;
  }
  if (o.logit_cap) {
    if (!(*o.logit_cap > 0)) fail(op, ": logit_cap must be > 0, got ", *o.logit_cap);
    a.cap = *o.logit_cap;
  }
  std::vector<Tensor> in{q, k, v};
  if (o.q_segment_ids.defined() != o.kv_segment_ids.defined()) {
    fail(op, ": give both q_segment_ids and kv_segment_ids or neither");
  }
  if (o.q_segment_ids.defined()) {
    check_side(op, "q_segment_ids", o.q_segment_ids, {d.b, d.t}, false);
    check_side(op, "kv_segment_ids", o.kv_segment_ids, {d.b, d.s}, false);
    a.has_segments = true;
    in.push_back(o.q_segment_ids);
    in.push_back(o.kv_segment_ids);
  }
  if (o.kv_mask.defined()) {
    check_side(op, "kv_mask", o.kv_mask, {d.b, d.s}, true);
    a.has_mask = true;
    in.push_back(o.kv_mask);
  }
  return {a, in};
}

size_t hash_attrs(const AttentionAttrs& a, size_t seed) {
  uint64_t s, c;
  std::memcpy(&s, &a.scale, sizeof(s));
  std::memcpy(&c, &a.cap, sizeof(c));
  size_t h = seed ^ std::hash<uint64_t>()(s) ^ (std::hash<int64_t>()(a.window) << 1);
  h ^= std::hash<uint64_t>()(c) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h ^ (size_t(a.causal) << 3) ^ (size_t(a.has_segments) << 4) ^ (size_t(a.has_mask) << 5);
}

void print_attrs(std::ostream& os, const char* name, const AttentionAttrs& a) {
  os << name << "[scale=" << a.scale << (a.causal ? ", causal" : "");
  if (a.window >= 0) os << ", window=" << a.window;
  if (a.cap > 0) os << ", cap=" << a.cap;
  os << (a.has_segments ? ", segments" : "") << (a.has_mask ? ", kv_mask" : "") << "]";
}

size_t side_inputs(const AttentionAttrs& a) { return 3 + 2 * a.has_segments + a.has_mask; }

// The reference with the attributes already resolved; `in` as Attention's inputs.
Tensor reference_from(const AttentionAttrs& a, const std::vector<Tensor>& in) {
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const int64_t b = q.shape(0), t = q.shape(1), n = q.shape(2), h = q.shape(3);
  const int64_t s = k.shape(1), kh = k.shape(2), g = n / kh;
  const Dtype c = compute_dtype(q.dtype());
  Tensor qf = astype(q, c), kf = astype(k, c), vf = astype(v, c);
  if (g > 1) {
    kf = reshape(broadcast_to(expand_dims(kf, 3), {b, s, kh, g, h}), {b, s, n, h});
    vf = reshape(broadcast_to(expand_dims(vf, 3), {b, s, kh, g, h}), {b, s, n, h});
  }
  Tensor logits = einsum("btnh,bsnh->bnts", qf, kf) * a.scale;  // (B, N, T, S)
  if (a.cap > 0) logits = a.cap * tanh(logits / a.cap);

  Tensor visible = ones({1, 1, t, s}, bool_);
  Tensor tpos = iota({1, 1, t, s}, 2, int64), spos = iota({1, 1, t, s}, 3, int64);
  if (a.causal) visible = logical_and(visible, less_equal(spos, tpos));
  if (a.window >= 0) {
    visible =
        logical_and(visible, less_equal(tpos - spos, full({1, 1, t, s}, double(a.window), int64)));
  }
  size_t at = 3;
  if (a.has_segments) {
    Tensor qs = reshape(astype(in[at], int64), {b, 1, t, 1});
    Tensor ks = reshape(astype(in[at + 1], int64), {b, 1, 1, s});
    visible = logical_and(visible, equal(qs, ks));
    at += 2;
  }
  if (a.has_mask) visible = logical_and(visible, reshape(astype(in[at], bool_), {b, 1, 1, s}));
  visible = broadcast_to(visible, logits.shape());
  // A finite fill keeps fully hidden rows finite; multiplying by the mask then zeroes them.
  Tensor probs = softmax(where(visible, logits, full_like(logits, -1e30)), -1) * astype(visible, c);
  return astype(einsum("bnts,bsnh->btnh", probs, vf), q.dtype());
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts) {
  auto [attrs, in] = prepare("attention", q, k, v, opts);
  return Tensor::make(std::make_shared<Attention>(attrs), std::move(in));
}

Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& opts) {
  auto [attrs, in] = prepare("attention_reference", q, k, v, opts);
  return reference_from(attrs, in);
}

// ------------------------------------------------------------------ Attention

OutputSpec Attention::infer(const std::vector<Tensor>& in) const {
  if (in.size() != side_inputs(attrs_)) {
    fail(name(), ": expected ", side_inputs(attrs_), " inputs, got ", in.size());
  }
  check_qkv(name(), in[0], in[1], in[2]);
  return {in[0].shape(), in[0].dtype()};
}

namespace {

// AttentionGrad's packed layout, (B, K, G*T*H + 2*S*H): per batch row and kv head, the q
// gradients of the head's group of G query heads (g, t, h), then its k and v gradients (s, h).
// Batch rows and kv heads are leading axes, so the packed tensor splits over devices as q, k
// and v do.
struct GradLayout {
  int64_t b, t, n, h, s, k, g;
  GradLayout(const Shape& q, const Shape& kv)
      : b(q[0]), t(q[1]), n(q[2]), h(q[3]), s(kv[1]), k(kv[2]), g(q[2] / kv[2]) {}
  int64_t q_part() const { return g * t * h; }
  int64_t kv_part() const { return s * h; }
  int64_t row() const { return q_part() + 2 * kv_part(); }
};

Tensor pack_grads(const GradLayout& l, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                  Dtype dtype) {
  const Tensor q = reshape(transpose(reshape(dq, {l.b, l.t, l.k, l.g, l.h}), {0, 2, 3, 1, 4}),
                           {l.b, l.k, l.q_part()});
  auto kv = [&](const Tensor& x) {
    return reshape(transpose(x, {0, 2, 1, 3}), {l.b, l.k, l.kv_part()});
  };
  return concatenate({astype(q, dtype), astype(kv(dk), dtype), astype(kv(dv), dtype)}, 2);
}

std::vector<Tensor> unpack_grads(const GradLayout& l, const Tensor& packed) {
  const Tensor q =
      reshape(transpose(reshape(slice_axis(packed, 2, 0, l.q_part()), {l.b, l.k, l.g, l.t, l.h}),
                        {0, 3, 1, 2, 4}),
              {l.b, l.t, l.n, l.h});
  auto kv = [&](int64_t start) {
    return transpose(
        reshape(slice_axis(packed, 2, start, start + l.kv_part()), {l.b, l.k, l.s, l.h}),
        {0, 2, 1, 3});
  };
  return {q, kv(l.q_part()), kv(l.q_part() + l.kv_part())};
}

}  // namespace

std::vector<Tensor> Attention::vjp(const std::vector<Tensor>& in, const Tensor& out,
                                   const Tensor& ct) const {
  std::vector<Tensor> grad_in = in;
  grad_in.push_back(out);
  grad_in.push_back(ct);
  Tensor packed = Tensor::make(std::make_shared<AttentionGrad>(attrs_), std::move(grad_in));
  const std::vector<Tensor> g = unpack_grads(GradLayout(in[0].shape(), in[1].shape()), packed);
  std::vector<Tensor> cts(in.size());
  for (size_t i = 0; i < 3; ++i) cts[i] = astype(g[i], in[i].dtype());
  return cts;
}

bool Attention::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Attention*>(&o);
  return p && p->attrs_ == attrs_;
}
size_t Attention::hash() const { return hash_attrs(attrs_, 0xa770); }
void Attention::print(std::ostream& os) const { print_attrs(os, name(), attrs_); }

// ------------------------------------------------------------------ AttentionGrad

OutputSpec AttentionGrad::infer(const std::vector<Tensor>& in) const {
  const size_t n = side_inputs(attrs_);
  if (in.size() != n + 2) fail(name(), ": expected ", n + 2, " inputs, got ", in.size());
  check_qkv(name(), in[0], in[1], in[2]);
  for (size_t i : {n, n + 1}) {
    if (in[i].shape() != in[0].shape() || !is_floating(in[i].dtype())) {
      fail(name(), ": the output and its cotangent must be floats of q's shape ",
           shape_str(in[0].shape()), ", got ", shape_str(in[i].shape()), " ",
           dtype_name(in[i].dtype()));
    }
  }
  const GradLayout l(in[0].shape(), in[1].shape());
  return {{l.b, l.k, l.row()}, compute_dtype(in[0].dtype())};
}

// The kernel reads the forward output only to form rowsum(dout * out); mathematically that is a
// function of q, k and v, which the composed version recomputes, so `out` gets no cotangent here
// and its dependence reaches q, k, v through the forward's own VJP instead.
std::vector<Tensor> AttentionGrad::vjp(const std::vector<Tensor>& in, const Tensor&,
                                       const Tensor& ct) const {
  const AttentionAttrs attrs = attrs_;
  const size_t n = side_inputs(attrs_);
  const std::vector<Tensor> side(in.begin() + 3, in.begin() + long(n));
  auto composed = [attrs, side](const std::vector<Tensor>& p) {
    auto fwd = [&](const std::vector<Tensor>& qkv) {
      std::vector<Tensor> full = qkv;
      full.insert(full.end(), side.begin(), side.end());
      return std::vector<Tensor>{reference_from(attrs, full)};
    };
    std::vector<Tensor> g = axlearn::vjp(fwd, {p[0], p[1], p[2]}, {p[3]}).cotangents;
    return std::vector<Tensor>{pack_grads(GradLayout(p[0].shape(), p[1].shape()), g[0], g[1], g[2],
                                          compute_dtype(p[0].dtype()))};
  };
  std::vector<Tensor> cts =
      axlearn::vjp(composed, {in[0], in[1], in[2], in[n + 1]}, {ct}).cotangents;
  std::vector<Tensor> out(in.size());
  out[0] = cts[0];
  out[1] = cts[1];
  out[2] = cts[2];
  out[n + 1] = cts[3];
  return out;
}

bool AttentionGrad::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const AttentionGrad*>(&o);
  return p && p->attrs_ == attrs_;
}
size_t AttentionGrad::hash() const { return hash_attrs(attrs_, 0xa771); }
void AttentionGrad::print(std::ostream& os) const { print_attrs(os, name(), attrs_); }

}  // namespace axlearn
