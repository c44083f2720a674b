// Shape inference and VJP rules of the fused normalisations, and the user ops. Kernels are in
// backends/cpu/norm.cc.
#include "axlearn/core/norm.h"

#include <cmath>
#include <cstring>
#include <functional>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

namespace {

// Checks x and an optional (D,) parameter; `what` names the parameter in errors.
void check_operand(const char* op, const Tensor& x) {
  if (!x.defined()) fail(op, ": x is an undefined Tensor");
  if (x.ndim() == 0)
    fail(op, ": x must have at least one axis (normalised over the last), got shape ()");
  if (!is_floating(x.dtype())) {
    fail(op, ": expects a floating-point x, got ", shape_str(x.shape()), " ",
         dtype_name(x.dtype()));
  }
}

void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  const int64_t d = x.shape().back();
  if (p.shape() != Shape{d}) {
    fail(op, ": ", what, " of shape ", shape_str(p.shape()), " does not match x of shape ",
         shape_str(x.shape()), ": expected ", shape_str(Shape{d}), " (the last axis of x)");
  }
  if (!is_floating(p.dtype())) {
    fail(op, ": ", what, " must be floating-point, got ", shape_str(p.shape()), " ",
         dtype_name(p.dtype()));
  }
}

void check_arity(const char* op, const std::vector<Tensor>& in, size_t n) {
  if (in.size() != n) fail(op, ": expected ", n, " inputs, got ", in.size());
}

// Rows of the (R, D) view of x: the product of all but the last axis (also when D is 0).
int64_t rows_of(const Shape& s) {
  int64_t r = 1;
  for (size_t i = 0; i + 1 < s.size(); ++i) r *= s[i];
  return r;
}

size_t hash_attrs(const NormAttrs& a, size_t seed) {
  uint64_t eps_bits;
  std::memcpy(&eps_bits, &a.eps, sizeof(eps_bits));
  size_t h = seed ^ (size_t(a.kind) << 1) ^ (size_t(a.has_scale) << 2) ^ (size_t(a.has_bias) << 3);
  return h ^ (std::hash<uint64_t>()(eps_bits) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
}

void print_attrs(std::ostream& os, const char* name, const NormAttrs& a) {
  os << name << "[eps=" << a.eps << (a.has_scale ? ", scale" : "") << (a.has_bias ? ", bias" : "")
     << "]";
}

Tensor apply_norm(NormAttrs attrs, const Tensor& x, const Tensor& scale, const Tensor& bias) {
  check_operand(attrs.name(), x);
  if (!(attrs.eps >= 0)) fail(attrs.name(), ": eps must be >= 0, got ", attrs.eps);
  std::vector<Tensor> in{x};
  if (attrs.has_scale) in.push_back(scale);
  if (attrs.has_bias) in.push_back(bias);
  return Tensor::make(std::make_shared<Norm>(attrs), std::move(in));
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& scale, double eps) {
  return apply_norm({NormKind::kRms, scale.defined(), false, eps}, x, scale, Tensor());
}

Tensor layer_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, double eps) {
  return apply_norm({NormKind::kLayer, scale.defined(), bias.defined(), eps}, x, scale, bias);
}

// ------------------------------------------------------------------ Norm

OutputSpec Norm::infer(const std::vector<Tensor>& in) const {
  check_arity(name(), in, 1 + attrs_.has_scale + attrs_.has_bias);
  const Tensor& x = in[0];
  check_operand(name(), x);
  if (attrs_.has_scale) check_param(name(), "scale", in[1], x);
  if (attrs_.has_bias) check_param(name(), "bias", in.back(), x);
  return {x.shape(), x.dtype()};
}

namespace {

// NormGrad's three results written with ops, unpacked: dx as (rows, D), then (1, D) dscale and
// dbias where the norm has them.
std::vector<Tensor> norm_grad_parts(const NormAttrs& attrs, const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  const Dtype c = compute_dtype(x.dtype());
  const int64_t rows = rows_of(x.shape()), d = x.shape().back();
  Tensor xf = reshape(astype(x, c), {rows, d});
  Tensor dyf = reshape(astype(in.back(), c), {rows, d});
  Tensor xc = attrs.kind == NormKind::kLayer ? xf - mean(xf, {-1}, true) : xf;
  Tensor r = rsqrt(mean(xc * xc, {-1}, true) + attrs.eps);
  Tensor x_hat = xc * r;
  Tensor g = attrs.has_scale ? dyf * astype(in[1], c) : dyf;
  Tensor inner = g - x_hat * mean(g * x_hat, {-1}, true);
  if (attrs.kind == NormKind::kLayer) inner = inner - mean(g, {-1}, true);
  std::vector<Tensor> parts{r * inner};
  if (attrs.has_scale) parts.push_back(sum(dyf * x_hat, {0}, true));
  if (attrs.has_bias) parts.push_back(sum(dyf, {0}, true));
  return parts;
}

}  // namespace

std::vector<Tensor> Norm::vjp(const std::vector<Tensor>& in, const Tensor&,
                              const Tensor& ct) const {
  const Tensor& x = in[0];
  std::vector<Tensor> grad_in{x};
  if (attrs_.has_scale) grad_in.push_back(in[1]);
  grad_in.push_back(ct);
  if (x.is_sharded() || ct.is_sharded()) {
    // Split over devices the rows' gradients stay split and dscale / dbias become partial sums;
    // the packed (rows + 2, D) layout of the fused kernel cannot be split that way.
    std::vector<Tensor> parts = norm_grad_parts(attrs_, grad_in);
    std::vector<Tensor> cts{astype(reshape(parts[0], x.shape()), x.dtype())};
    for (size_t k = 1; k < in.size(); ++k) {
      cts.push_back(astype(reshape(parts[k], {x.shape().back()}), in[k].dtype()));
    }
    return cts;
  }
  Tensor packed = Tensor::make(std::make_shared<NormGrad>(attrs_), std::move(grad_in));

  const int64_t rows = rows_of(x.shape()), d = x.shape().back();
  std::vector<Tensor> cts{astype(reshape(slice_axis(packed, 0, 0, rows), x.shape()), x.dtype())};
  int64_t at = rows;
  for (size_t k = 1; k < in.size(); ++k, ++at) {
    cts.push_back(astype(reshape(slice_axis(packed, 0, at, at + 1), {d}), in[k].dtype()));
  }
  return cts;
}

bool Norm::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Norm*>(&o);
  return p && p->attrs_ == attrs_;
}
size_t Norm::hash() const { return hash_attrs(attrs_, 0x5100); }
void Norm::print(std::ostream& os) const { print_attrs(os, name(), attrs_); }

// ------------------------------------------------------------------ NormGrad

OutputSpec NormGrad::infer(const std::vector<Tensor>& in) const {
  check_arity(name(), in, 2 + attrs_.has_scale);
  const Tensor& x = in[0];
  const Tensor& dy = in.back();
  check_operand(name(), x);
  if (attrs_.has_scale) check_param(name(), "scale", in[1], x);
  if (dy.shape() != x.shape() || !is_floating(dy.dtype())) {
    fail(name(), ": the cotangent must be a float of x's shape ", shape_str(x.shape()), ", got ",
         shape_str(dy.shape()), " ", dtype_name(dy.dtype()));
  }
  const int64_t rows = rows_of(x.shape()) + attrs_.has_scale + attrs_.has_bias;
  return {{rows, x.shape().back()}, compute_dtype(x.dtype())};
}

std::vector<Tensor> NormGrad::vjp(const std::vector<Tensor>& in, const Tensor&,
                                  const Tensor& ct) const {
  const NormAttrs attrs = attrs_;
  auto composed = [attrs](const std::vector<Tensor>& p) {
    return std::vector<Tensor>{norm_grad_composed(attrs, p)};
  };
  return axlearn::vjp(composed, in, {ct}).cotangents;
}

bool NormGrad::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const NormGrad*>(&o);
  return p && p->attrs_ == attrs_;
}
size_t NormGrad::hash() const { return hash_attrs(attrs_, 0x5200); }
void NormGrad::print(std::ostream& os) const { print_attrs(os, name(), attrs_); }

// With x_hat = (x - mean) * r, r = rsqrt(var + eps) (mean = 0 for rms), g = dy * scale:
//   dx = r * (g - mean(g) - x_hat * mean(g * x_hat))   (no mean(g) term for rms)
Tensor norm_grad_composed(const NormAttrs& attrs, const std::vector<Tensor>& in) {
  std::vector<Tensor> parts = norm_grad_parts(attrs, in);
  return parts.size() == 1 ? parts[0] : concatenate(parts, 0);
}

}  // namespace axlearn
