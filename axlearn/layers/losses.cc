#include "axlearn/layers/losses.h"

#include "axlearn/core/cross_entropy.h"
#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn::layers {
namespace {

Dtype compute_dtype(const Tensor& x) { return x.dtype() == float64 ? float64 : float32; }

void check_float(const char* op, const char* what, const Tensor& x) {
  if (!is_floating(x.dtype())) {
    fail(op, ": ", what, " must be a float tensor, got ", dtype_name(x.dtype()), " ",
         shape_str(x.shape()));
  }
}

void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                      const Tensor& b) {
  if (a.shape() != b.shape()) {
    fail(op, ": ", a_name, " ", shape_str(a.shape()), " and ", b_name, " ", shape_str(b.shape()),
         " must have the same shape");
  }
}

// sum(w * l) / sum(w), 0 when sum(w) == 0. The where keeps the division finite so that the
// gradient of the masked case is 0 as well.
Tensor weighted_mean(const Tensor& per_element, const Tensor& w) {
  const Dtype dt = per_element.dtype();
  Tensor denom = sum(w);
  Tensor positive = greater(denom, scalar(0, dt));
  Tensor safe = where(positive, denom, scalar(1, dt));
  return where(positive, sum(per_element * w) / safe, scalar(0, dt));
}

Tensor weights_or_ones(const char* op, const Tensor& like, const Tensor& weights, Dtype dt) {
  if (!weights.defined()) return ones(like.shape(), dt);
  check_same_shape(op, "weights", weights, "targets", like);
  return astype(weights, dt);
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target_labels, const Tensor& live_targets,
                     double label_smoothing) {
  check_float("cross_entropy", "logits", logits);
  if (!is_integer(target_labels.dtype())) {
    fail("cross_entropy: target_labels must be integer, got ", dtype_name(target_labels.dtype()),
         " ", shape_str(target_labels.shape()));
  }
  const Shape& ls = logits.shape();
  const Shape& ts = target_labels.shape();
  if (ls.empty() || Shape(ls.begin(), ls.end() - 1) != ts) {
    fail("cross_entropy: logits ", shape_str(ls), " must be target_labels ", shape_str(ts),
         " plus a class axis");
  }
  if (live_targets.defined() && live_targets.shape() != ts) {
    fail("cross_entropy: live_targets ", shape_str(live_targets.shape()),
         " must match target_labels ", shape_str(ts));
  }
  if (label_smoothing < 0 || label_smoothing > 1) {
    fail("cross_entropy: label_smoothing must be in [0, 1], got ", label_smoothing);
  }
  const Dtype dt = compute_dtype(logits);
  Tensor per =
      astype(cross_entropy_loss(logits, target_labels, {.label_smoothing = label_smoothing}), dt);
  Tensor w = astype(greater_equal(target_labels, scalar(0, target_labels.dtype())), dt);
  if (live_targets.defined()) w = w * astype(live_targets, dt);
  return weighted_mean(per, w);
}

Tensor mean_squared_error(const Tensor& preds, const Tensor& targets, const Tensor& weights) {
  check_float("mean_squared_error", "preds", preds);
  check_same_shape("mean_squared_error", "preds", preds, "targets", targets);
  const Dtype dt = compute_dtype(preds);
  Tensor w = weights_or_ones("mean_squared_error", targets, weights, dt);
  return weighted_mean(square(astype(preds, dt) - astype(targets, dt)), w);
}

Tensor binary_cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& weights) {
  check_float("binary_cross_entropy", "logits", logits);
  check_same_shape("binary_cross_entropy", "logits", logits, "targets", targets);
  const Dtype dt = compute_dtype(logits);
  Tensor x = astype(logits, dt);
  Tensor y = astype(targets, dt);
  Tensor per = maximum(x, scalar(0, dt)) - x * y + log1p(exp(-abs(x)));
  Tensor w = weights_or_ones("binary_cross_entropy", targets, weights, dt);
  return weighted_mean(per, w);
}

}  // namespace axlearn::layers
