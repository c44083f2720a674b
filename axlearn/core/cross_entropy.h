// Fused softmax cross-entropy over the last axis: the user op `cross_entropy_loss` and its
// primitives (`CrossEntropy` forward, `CrossEntropyGrad` backward), each one pass per row that
// never materialises the probabilities. Kernels are in backends/cpu/cross_entropy.cc.
#pragma once

#include <vector>

#include "axlearn/core/primitive.h"

namespace axlearn {

struct CrossEntropyOptions {
  // The target is (1 - label_smoothing) * onehot(label) + label_smoothing / V.
  double label_smoothing = 0;
  // Adds z_loss_scale * logsumexp(logits)^2 to each live position's loss (PaLM's z-loss).
  double z_loss_scale = 0;
  bool operator==(const CrossEntropyOptions&) const = default;
};

// Per-position loss -sum_j target_j * log_softmax(logits)_j [+ z-loss] for logits (..., V) of any
// float dtype and integer labels (...). The result has labels' shape and logits' compute dtype
// (f32 for 16-bit logits, f64 for f64); row statistics are accumulated in that type.
// Labels < 0 mark ignored positions: their loss and gradient are exactly 0 (a mask, as for
// padding). A label >= V is a data error: evaluation throws Error naming the position.
Tensor cross_entropy_loss(const Tensor& logits, const Tensor& labels,
                          const CrossEntropyOptions& opts = {});

// Inputs (logits, labels); output as cross_entropy_loss. Its VJP is CrossEntropyGrad.
class CrossEntropy : public Primitive {
 public:
  explicit CrossEntropy(CrossEntropyOptions opts) : opts_(opts) {}
  const char* name() const override { return "cross_entropy"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const CrossEntropyOptions& options() const { return opts_; }

 private:
  CrossEntropyOptions opts_;
};

// Inputs (logits, labels, dloss) with dloss of labels' shape; output d logits of logits' shape
// and dtype: (softmax - target + 2 z_loss_scale * lse * softmax) * dloss, 0 on ignored rows.
// The kernel recomputes each row's logsumexp instead of saving it. Its own VJP (second order)
// differentiates cross_entropy_grad_composed.
class CrossEntropyGrad : public Primitive {
 public:
  explicit CrossEntropyGrad(CrossEntropyOptions opts) : opts_(opts) {}
  const char* name() const override { return "cross_entropy_grad"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;

 private:
  CrossEntropyOptions opts_;
};

// The same loss from row reductions (logsumexp and the target-weighted sum of the logits), no
// (..., V) log-probabilities: what runs when the vocabulary axis is split across devices, where
// each reduction combines across them. A label >= V gives its row the loss logsumexp(logits).
Tensor cross_entropy_loss_composed(const Tensor& logits, const Tensor& labels,
                                   const CrossEntropyOptions& opts = {});

// The same losses written with ops (log_softmax, one_hot, where): the unfused reference.
Tensor cross_entropy_loss_reference(const Tensor& logits, const Tensor& labels,
                                    const CrossEntropyOptions& opts = {});
// What CrossEntropyGrad computes, written with ops. Inputs as CrossEntropyGrad's.
Tensor cross_entropy_grad_composed(const CrossEntropyOptions& opts, const std::vector<Tensor>& in);

}  // namespace axlearn
