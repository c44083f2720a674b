// Convolution: the conv_general_dilated primitive (lax.conv_general_dilated: strides, padding,
// lhs/rhs dilation, feature and batch groups, any layout through dimension numbers), the rev
// primitive its VJP needs, and the user-facing ops `conv_general_dilated`, `conv` and `rev`.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/primitive.h"

namespace axlearn {

// Which operand axis plays which role, as lax.ConvDimensionNumbers:
//   lhs_spec = (batch, feature, spatial...), rhs_spec = (out feature, in feature, spatial...),
//   out_spec = (batch, feature, spatial...).
// Spatial axes correspond by position in the three lists. Empty lists mean canonical().
struct ConvDimensionNumbers {
  std::vector<int> lhs_spec, rhs_spec, out_spec;
  bool operator==(const ConvDimensionNumbers&) const = default;
  // NCH / NCHW / NCDHW operands with OIH / OIHW / OIDHW kernels: every spec is 0, 1, 2, ...
  static ConvDimensionNumbers canonical(int ndim);
};

// lax.conv_dimension_numbers from layout strings such as ("NHWC", "HWIO", "NHWC"): N and C name
// batch and feature, O and I the kernel's out and in features, other letters the spatial axes,
// which are paired across the three strings by letter in the order the rhs string lists them.
ConvDimensionNumbers conv_dimension_numbers(const std::string& lhs, const std::string& rhs,
                                            const std::string& out);

using ConvPadding = std::vector<std::pair<int64_t, int64_t>>;

// Every attribute is explicit here (one entry per spatial axis); the user ops fill defaults.
struct ConvParams {
  std::vector<int64_t> window_strides;
  ConvPadding padding;  // (low, high) per spatial axis; may be negative (crops)
  std::vector<int64_t> lhs_dilation, rhs_dilation;
  ConvDimensionNumbers dn;
  int64_t feature_group_count = 1;
  int64_t batch_group_count = 1;
  bool operator==(const ConvParams&) const = default;
};

// lax.conv_general_dilated_p: inputs (lhs, rhs) of one floating dtype, output in that dtype
// (16-bit floats accumulate in f32, f64 in f64). The VJP is two more conv_general_dilated ops (and
// a rev), so gradients of any order work.
class ConvGeneralDilated : public Primitive {
 public:
  explicit ConvGeneralDilated(ConvParams params) : params_(std::move(params)) {}
  const char* name() const override { return "conv_general_dilated"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const ConvParams& params() const { return params_; }

 private:
  ConvParams params_;
};

// lax.rev: reverses the order of elements along `dims` (sorted, unique). Its own transpose.
class Rev : public Primitive {
 public:
  explicit Rev(std::vector<int> dims) : dims_(std::move(dims)) {}
  const char* name() const override { return "rev"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;

 private:
  std::vector<int> dims_;
};

// lax.conv_general_dilated. Empty dilations mean 1 on every spatial axis; default dimension
// numbers are canonical (NCHW / OIHW / NCHW generalised to 1-3 spatial axes). Output spatial size
// per axis: floor((dilated_in + lo + hi - dilated_window) / stride) + 1, and 0 when the window is
// larger than the padded input.
Tensor conv_general_dilated(const Tensor& lhs, const Tensor& rhs,
                            const std::vector<int64_t>& window_strides, const ConvPadding& padding,
                            const std::vector<int64_t>& lhs_dilation = {},
                            const std::vector<int64_t>& rhs_dilation = {},
                            const ConvDimensionNumbers& dn = {}, int64_t feature_group_count = 1,
                            int64_t batch_group_count = 1);

// lax.padtype_to_pads: explicit (low, high) padding for "SAME" (output size ceil(in / stride),
// the odd element of padding goes high) or "VALID" (no padding). `window` is the dilated window.
ConvPadding padtype_to_pads(const std::vector<int64_t>& in_spatial,
                            const std::vector<int64_t>& window, const std::vector<int64_t>& strides,
                            const std::string& padding);

// Channels-last convolution as AXLearn's Conv1D/Conv2D/Conv3D call it: x is (N, W, C), (N, H, W, C)
// or (N, D, H, W, C); w is (W, I, O), (H, W, I, O) or (D, H, W, I, O) with I = C / groups; output
// channels-last. Empty strides / dilation mean 1. `padding` is "SAME", "VALID" or explicit pairs.
Tensor conv(const Tensor& x, const Tensor& w, const std::vector<int64_t>& strides,
            const std::string& padding, const std::vector<int64_t>& dilation = {},
            int64_t feature_group_count = 1);
Tensor conv(const Tensor& x, const Tensor& w, const std::vector<int64_t>& strides,
            const ConvPadding& padding, const std::vector<int64_t>& dilation = {},
            int64_t feature_group_count = 1);

// lax.rev: x with the element order reversed along `dims` (negative axes count from the end).
Tensor rev(const Tensor& x, const std::vector<int>& dims);

// Which CPU kernel ran the latest conv_general_dilated on this thread: "onednn" or "reference".
// Lets tests prove both paths are exercised.
const char* last_conv_kernel();

}  // namespace axlearn
