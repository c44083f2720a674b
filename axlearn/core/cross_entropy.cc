// Shape inference and VJP rules of the fused cross-entropy, the user op and its ops-composed
// reference. Kernels are in backends/cpu/cross_entropy.cc.
#include "axlearn/core/cross_entropy.h"

#include <cmath>
#include <cstring>
#include <functional>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

namespace {

void check_inputs(const char* op, const Tensor& logits, const Tensor& labels) {
  if (!logits.defined() || !labels.defined()) fail(op, ": logits and labels must be defined");
  if (logits.ndim() == 0 || !is_floating(logits.dtype())) {
    fail(op, ": logits must be a float tensor with a class axis (..., V), got ",
         shape_str(logits.shape()), " ", dtype_name(logits.dtype()));
  }
  if (!is_integer(labels.dtype())) {
    fail(op, ": labels must be integers, got ", shape_str(labels.shape()), " ",
         dtype_name(labels.dtype()));
  }
  const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  if (labels.shape() != lead) {
    fail(op, ": labels of shape ", shape_str(labels.shape()), " do not match logits of shape ",
         shape_str(logits.shape()), ": expected ", shape_str(lead));
  }
}

void check_options(const char* op, const CrossEntropyOptions& o) {
  if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1)) {
    fail(op, ": label_smoothing must be in [0, 1], got ", o.label_smoothing);
  }
  if (!(o.z_loss_scale >= 0)) fail(op, ": z_loss_scale must be >= 0, got ", o.z_loss_scale);
}

size_t hash_options(const CrossEntropyOptions& o, size_t seed) {
  uint64_t a, b;
  std::memcpy(&a, &o.label_smoothing, sizeof(a));
  std::memcpy(&b, &o.z_loss_scale, sizeof(b));
  size_t h = seed ^ std::hash<uint64_t>()(a);
  return h ^ (std::hash<uint64_t>()(b) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
}

void print_options(std::ostream& os, const char* name, const CrossEntropyOptions& o) {
  os << name << "[label_smoothing=" << o.label_smoothing << ", z_loss_scale=" << o.z_loss_scale
     << "]";
}

// (target, live) of the reference: smoothed one-hot rows in `c`, and labels >= 0.
std::pair<Tensor, Tensor> targets_of(const Tensor& labels, int64_t v, Dtype c,
                                     const CrossEntropyOptions& o) {
  Tensor live = greater_equal(labels, zeros_like(labels));
  Tensor target = one_hot(where(live, labels, zeros_like(labels)), v, c);
  if (o.label_smoothing > 0) {
    target = target * (1 - o.label_smoothing) + o.label_smoothing / double(v);
  }
  return {target, live};
}

}  // namespace

Tensor cross_entropy_loss(const Tensor& logits, const Tensor& labels,
                          const CrossEntropyOptions& opts) {
  check_inputs("cross_entropy", logits, labels);
  check_options("cross_entropy", opts);
  return Tensor::make(std::make_shared<CrossEntropy>(opts), {logits, labels});
}

Tensor cross_entropy_loss_composed(const Tensor& logits, const Tensor& labels,
                                   const CrossEntropyOptions& opts) {
  check_inputs("cross_entropy_composed", logits, labels);
  check_options("cross_entropy_composed", opts);
  const Dtype c = compute_dtype(logits.dtype());
  Tensor lf = astype(logits, c);
  auto [target, live] = targets_of(labels, logits.shape().back(), c, opts);
  // The target sums to 1, so -sum(target * log_softmax) = lse - sum(target * logits).
  Tensor lse = logsumexp(lf, {-1});
  Tensor loss = lse - sum(target * lf, {-1});
  if (opts.z_loss_scale > 0) loss = loss + opts.z_loss_scale * lse * lse;
  return where(live, loss, zeros_like(loss));
}

Tensor cross_entropy_loss_reference(const Tensor& logits, const Tensor& labels,
                                    const CrossEntropyOptions& opts) {
  check_inputs("cross_entropy_reference", logits, labels);
  check_options("cross_entropy_reference", opts);
  const Dtype c = compute_dtype(logits.dtype());
  Tensor lf = astype(logits, c);
  auto [target, live] = targets_of(labels, logits.shape().back(), c, opts);
  Tensor loss = -sum(target * log_softmax(lf, -1), {-1});
  if (opts.z_loss_scale > 0) {
    Tensor lse = logsumexp(lf, {-1});
    loss = loss + opts.z_loss_scale * lse * lse;
  }
  return where(live, loss, zeros_like(loss));
}

// ------------------------------------------------------------------ CrossEntropy

OutputSpec CrossEntropy::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 2) fail(name(), ": expected 2 inputs (logits, labels), got ", in.size());
  check_inputs(name(), in[0], in[1]);
  return {in[1].shape(), compute_dtype(in[0].dtype())};
}

std::vector<Tensor> CrossEntropy::vjp(const std::vector<Tensor>& in, const Tensor&,
                                      const Tensor& ct) const {
  Tensor dlogits = Tensor::make(std::make_shared<CrossEntropyGrad>(opts_), {in[0], in[1], ct});
  return {dlogits, Tensor()};
}

bool CrossEntropy::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const CrossEntropy*>(&o);
  return p && p->opts_ == opts_;
}
size_t CrossEntropy::hash() const { return hash_options(opts_, 0xce00); }
void CrossEntropy::print(std::ostream& os) const { print_options(os, name(), opts_); }

// ------------------------------------------------------------------ CrossEntropyGrad

OutputSpec CrossEntropyGrad::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 3) {
    fail(name(), ": expected 3 inputs (logits, labels, dloss), got ", in.size());
  }
  check_inputs(name(), in[0], in[1]);
  if (in[2].shape() != in[1].shape() || !is_floating(in[2].dtype())) {
    fail(name(), ": the cotangent must be a float of labels' shape ", shape_str(in[1].shape()),
         ", got ", shape_str(in[2].shape()), " ", dtype_name(in[2].dtype()));
  }
  return {in[0].shape(), in[0].dtype()};
}

std::vector<Tensor> CrossEntropyGrad::vjp(const std::vector<Tensor>& in, const Tensor&,
                                          const Tensor& ct) const {
  const CrossEntropyOptions opts = opts_;
  const Tensor labels = in[1];
  auto composed = [opts, labels](const std::vector<Tensor>& p) {
    return std::vector<Tensor>{cross_entropy_grad_composed(opts, {p[0], labels, p[1]})};
  };
  std::vector<Tensor> cts = axlearn::vjp(composed, {in[0], in[2]}, {ct}).cotangents;
  return {cts[0], Tensor(), cts[1]};
}

bool CrossEntropyGrad::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const CrossEntropyGrad*>(&o);
  return p && p->opts_ == opts_;
}
size_t CrossEntropyGrad::hash() const { return hash_options(opts_, 0xce01); }
void CrossEntropyGrad::print(std::ostream& os) const { print_options(os, name(), opts_); }

// d loss / d logits_j = softmax_j - target_j + 2 z * lse * softmax_j, times dloss, on live rows.
Tensor cross_entropy_grad_composed(const CrossEntropyOptions& opts, const std::vector<Tensor>& in) {
  const Tensor& logits = in[0];
  const Dtype c = compute_dtype(logits.dtype());
  Tensor lf = astype(logits, c);
  auto [target, live] = targets_of(in[1], logits.shape().back(), c, opts);
  Tensor p = softmax(lf, -1);
  Tensor g = p - target;
  if (opts.z_loss_scale > 0) {
    g = g + (2 * opts.z_loss_scale) * logsumexp(lf, {-1}, true) * p;
  }
  g = g * expand_dims(astype(in[2], c), -1);
  g = where(expand_dims(live, -1), g, zeros_like(g));
  return astype(g, logits.dtype());
}

}  // namespace axlearn
