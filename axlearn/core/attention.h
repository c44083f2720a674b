// Dot-product attention: the fused op `attention` (primitives `Attention` forward and
// `AttentionGrad` backward, tiled with an online softmax so no (T, S) matrix is ever held) and
// `attention_reference`, the same function written with ops. Kernels: backends/cpu/attention.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "axlearn/core/primitive.h"

namespace axlearn {

// Which keys a query sees, and how logits are formed. Query t and key s sit at positions t and s
// (top-left aligned when T != S, as jax.nn.dot_product_attention and torch's is_causal).
struct AttentionOptions {
  // Multiplies q·k; default 1/sqrt(H).
  std::optional<double> scale;
  // Key s is visible to query t only if s <= t.
  bool causal = false;
  // AXLearn's sliding_window_causal_mask: key s is visible only if 0 <= t - s <= sliding_window.
  // Implies causal.
  std::optional<int64_t> sliding_window;
  // Integer (B, T) and (B, S), both or neither: key s is visible to query t only if their segment
  // ids are equal (packed sequences).
  Tensor q_segment_ids, kv_segment_ids;
  // Bool (or integer, nonzero = keep) (B, S): keys to hide (padding) are false.
  Tensor kv_mask;
  // logits = logit_cap * tanh(logits / logit_cap), after scaling and before masking.
  std::optional<double> logit_cap;
};

// softmax(scale * q k^T [capped], masked) v for q (B, T, N, H), k and v (B, S, K, H) with K
// dividing N (grouped-query attention: query head n reads kv head n / (N / K)). q, k and v share
// one float dtype; the result is (B, T, N, H) of that dtype, accumulated in f32 (f64 for f64).
// A query with no visible key gets an output of 0 and passes no gradient.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& opts = {});

// The same function composed from ops (einsum, where, softmax), holding (B, N, T, S) logits: the
// reference the fused op is tested against.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& opts = {});

// The primitives' attributes: the options without the tensors.
struct AttentionAttrs {
  double scale = 1;
  bool causal = false;
  int64_t window = -1;  // < 0: none
  double cap = 0;       // <= 0: none
  bool has_segments = false;
  bool has_mask = false;
  bool operator==(const AttentionAttrs&) const = default;
};

// Inputs (q, k, v, [q_segment_ids, kv_segment_ids], [kv_mask]); output (B, T, N, H) of q's dtype.
// Its VJP is AttentionGrad.
class Attention : public Primitive {
 public:
  explicit Attention(AttentionAttrs attrs) : attrs_(attrs) {}
  const char* name() const override { return "attention"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const AttentionAttrs& attrs() const { return attrs_; }

 private:
  AttentionAttrs attrs_;
};

// The flash-attention backward in one kernel. Inputs: Attention's, then the forward output and
// its cotangent dout (both (B, T, N, H)). The row log-sum-exps are recomputed, not saved. A
// primitive has one output, so dq, dk, dv come packed in one (B, K, G*T*H + 2*S*H) tensor of q's
// compute dtype (G = N / K): per batch row and kv head, the gradients of its G query heads, then
// of its key and value rows — batch and kv heads lead, so the packed tensor is split over
// devices exactly as q, k and v are. Its own VJP (second order) differentiates the VJP of
// attention_reference.
class AttentionGrad : public Primitive {
 public:
  explicit AttentionGrad(AttentionAttrs attrs) : attrs_(attrs) {}
  const char* name() const override { return "attention_grad"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;

 private:
  AttentionAttrs attrs_;
};

}  // namespace axlearn
