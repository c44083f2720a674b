// Fused normalisation over the last axis, as AXLearn's RMSNorm and LayerNorm layers use it: the
// user ops `rms_norm` / `layer_norm` and their primitives (`Norm` forward, `NormGrad` backward).
// Kernels are in backends/cpu/norm.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "axlearn/core/primitive.h"

namespace axlearn {

// y = x * rsqrt(mean(x^2, -1) + eps) * scale. `scale` is (D,) with D = x.shape[-1], of any float
// dtype, or an undefined Tensor for none. The statistics are computed in f32 for 16-bit x (f64 for
// f64) and y, of x's shape and dtype, is rounded once at the end.
Tensor rms_norm(const Tensor& x, const Tensor& scale, double eps = 1e-6);

// y = (x - mean) * rsqrt(var + eps) * scale + bias over the last axis, with the biased variance
// mean((x - mean)^2). `scale` and `bias` are (D,) or undefined; otherwise as rms_norm.
Tensor layer_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, double eps = 1e-6);

enum class NormKind : uint8_t { kRms, kLayer };

struct NormAttrs {
  NormKind kind = NormKind::kRms;
  bool has_scale = false;
  bool has_bias = false;
  double eps = 1e-6;
  bool operator==(const NormAttrs&) const = default;
  const char* name() const { return kind == NormKind::kRms ? "rms_norm" : "layer_norm"; }
};

// Inputs (x, [scale], [bias]) as attrs say; output: x's shape and dtype. Its VJP is NormGrad.
class Norm : public Primitive {
 public:
  explicit Norm(NormAttrs attrs) : attrs_(attrs) {}
  const char* name() const override { return attrs_.name(); }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const NormAttrs& attrs() const { return attrs_; }

 private:
  NormAttrs attrs_;
};

// The backward of Norm in one kernel that recomputes the row statistics. Inputs (x, [scale], dy)
// with dy of x's shape. A primitive has one output, so the three cotangents come packed in one
// (R + has_scale + has_bias, D) tensor of x's compute dtype, R = x.size / D: rows [0, R) are dx,
// then dscale (the sum over rows of dy * x_hat), then dbias (the sum over rows of dy).
// Its own VJP (second order) differentiates the same computation written with ops.
class NormGrad : public Primitive {
 public:
  explicit NormGrad(NormAttrs attrs) : attrs_(attrs) {}
  const char* name() const override {
    return attrs_.kind == NormKind::kRms ? "rms_norm_grad" : "layer_norm_grad";
  }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const NormAttrs& attrs() const { return attrs_; }

 private:
  NormAttrs attrs_;
};

// What NormGrad computes, written with ops (mean, rsqrt, sum, concatenate): the reference its
// kernel is tested against and the function its VJP differentiates. Inputs as NormGrad's.
Tensor norm_grad_composed(const NormAttrs& attrs, const std::vector<Tensor>& in);

}  // namespace axlearn
