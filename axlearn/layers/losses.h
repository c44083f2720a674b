// Loss functions of AXLearn's loss.py: softmax cross-entropy over integer labels (fused kernel),
// mean squared error and binary cross-entropy with logits. Each returns a scalar, the weighted
// mean over live elements, in f32 (f64 when the predictions are f64).
#pragma once

#include "axlearn/core/tensor.h"

namespace axlearn::layers {

// Normalisation shared by all three: loss = sum(w * per_element) / sum(w), where w is the
// weight of each element (1 when no weights are given; 0 for dead elements). When sum(w) is 0
// (everything masked, or an empty input) the loss is 0, not NaN. For 0/1 masks this equals
// AXLearn's sum(w * l) / max(sum(w), 1); for fractional weights it is the exact weighted mean.

// logits (..., V) float; target_labels (...) int. Labels < 0 are dead (weight 0). live_targets:
// undefined, or (...) bool / float weights multiplied into the label mask. The per-position loss
// is -sum_j target_j log_softmax(logits)_j with target (1 - label_smoothing) onehot + ls / V.
// A label >= V throws at evaluation.
Tensor cross_entropy(const Tensor& logits, const Tensor& target_labels,
                     const Tensor& live_targets = {}, double label_smoothing = 0);

// preds, targets: same shape, float. weights: undefined or the same shape (bool or float).
Tensor mean_squared_error(const Tensor& preds, const Tensor& targets, const Tensor& weights = {});

// logits, targets: same shape; targets are probabilities in [0, 1]. Per element
// max(x, 0) - x y + log1p(exp(-|x|)) (= -y log sigmoid(x) - (1 - y) log sigmoid(-x), stable for
// large |x|). weights: undefined or the same shape.
Tensor binary_cross_entropy(const Tensor& logits, const Tensor& targets,
                            const Tensor& weights = {});

}  // namespace axlearn::layers
