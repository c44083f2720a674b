// The closed set of primitives (mirroring jax.lax). User code calls ops.h; these classes are what
// the graph records. Each declares shape inference and VJP here (primitives.cc) and its CPU kernel
// in backends/cpu/.
#pragma once

#include <cstdint>
#include <vector>

#include "axlearn/core/primitive.h"

namespace axlearn {

// ---- elementwise ----

enum class UnaryOp : uint8_t {
  kNeg,
  kAbs,
  kSign,
  kExp,
  kExpm1,
  kLog,
  kLog1p,
  kSqrt,
  kRsqrt,
  kTanh,
  kLogistic,
  kErf,
  kErfInv,
  kSin,
  kCos,
  kFloor,
  kCeil,
  kRound,
  kLogicalNot,
  kIsFinite,
  kSquare,
  kReciprocal,
};
const char* unary_op_name(UnaryOp op);

enum class BinaryOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMax,
  kMin,
  kRem,
  kAtan2,
  kAnd,
  kOr,
  kXor,
  kShiftLeft,
  kShiftRightLogical,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
};
const char* binary_op_name(BinaryOp op);
inline bool is_comparison(BinaryOp op) { return op >= BinaryOp::kEq; }

class Unary : public Primitive {
 public:
  explicit Unary(UnaryOp op) : op_(op) {}
  const char* name() const override { return unary_op_name(op_); }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool is_elementwise() const override { return true; }
  bool equals(const Primitive& o) const override;
  size_t hash() const override { return 0x100 + size_t(op_); }
  UnaryOp op() const { return op_; }

 private:
  UnaryOp op_;
};

// Both inputs have the same shape and dtype (ops.h broadcasts and promotes first).
class Binary : public Primitive {
 public:
  explicit Binary(BinaryOp op) : op_(op) {}
  const char* name() const override { return binary_op_name(op_); }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool is_elementwise() const override { return true; }
  bool equals(const Primitive& o) const override;
  size_t hash() const override { return 0x200 + size_t(op_); }
  BinaryOp op() const { return op_; }

 private:
  BinaryOp op_;
};

// select(pred, on_true, on_false): all three the same shape, pred bool.
class Select : public Primitive {
 public:
  const char* name() const override { return "select"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool is_elementwise() const override { return true; }
};

class Convert : public Primitive {
 public:
  explicit Convert(Dtype dtype) : dtype_(dtype) {}
  const char* name() const override { return "convert_element_type"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool is_elementwise() const override { return true; }
  bool equals(const Primitive& o) const override;
  size_t hash() const override { return 0x300 + size_t(dtype_); }
  void print(std::ostream& os) const override;
  Dtype dtype() const { return dtype_; }

 private:
  Dtype dtype_;
};

// Reinterprets the bits as another dtype of the same width.
class BitcastConvert : public Primitive {
 public:
  explicit BitcastConvert(Dtype dtype) : dtype_(dtype) {}
  const char* name() const override { return "bitcast_convert_type"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override { return 0x400 + size_t(dtype_); }
  Dtype dtype() const { return dtype_; }

 private:
  Dtype dtype_;
};

// Identity whose VJP is zero.
class StopGradient : public Primitive {
 public:
  const char* name() const override { return "stop_gradient"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
};

// ---- shape and data movement ----

// lax.broadcast_in_dim: operand dim i maps to output dim dims[i] (size equal or 1).
class BroadcastInDim : public Primitive {
 public:
  BroadcastInDim(Shape shape, std::vector<int> dims)
      : shape_(std::move(shape)), dims_(std::move(dims)) {}
  const char* name() const override { return "broadcast_in_dim"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;
  const Shape& shape() const { return shape_; }
  const std::vector<int>& dims() const { return dims_; }

 private:
  Shape shape_;
  std::vector<int> dims_;
};

class Reshape : public Primitive {
 public:
  explicit Reshape(Shape shape) : shape_(std::move(shape)) {}
  const char* name() const override { return "reshape"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;

 private:
  Shape shape_;
};

class Transpose : public Primitive {
 public:
  explicit Transpose(std::vector<int> perm) : perm_(std::move(perm)) {}
  const char* name() const override { return "transpose"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;
  const std::vector<int>& perm() const { return perm_; }

 private:
  std::vector<int> perm_;
};

// lax.slice with static start/limit/stride per axis (strides >= 1).
class Slice : public Primitive {
 public:
  Slice(Shape start, Shape limit, Shape strides)
      : start_(std::move(start)), limit_(std::move(limit)), strides_(std::move(strides)) {}
  const char* name() const override { return "slice"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;
  const Shape& start() const { return start_; }
  const Shape& limit() const { return limit_; }
  const Shape& strides() const { return strides_; }

 private:
  Shape start_, limit_, strides_;
};

// lax.dynamic_slice: inputs (operand, starts: int[ndim]); starts are clamped so the window fits.
class DynamicSlice : public Primitive {
 public:
  explicit DynamicSlice(Shape sizes) : sizes_(std::move(sizes)) {}
  const char* name() const override { return "dynamic_slice"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

 private:
  Shape sizes_;
};

// lax.dynamic_update_slice: inputs (operand, update, starts: int[ndim]), starts clamped.
class DynamicUpdateSlice : public Primitive {
 public:
  const char* name() const override { return "dynamic_update_slice"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
};

class Concatenate : public Primitive {
 public:
  explicit Concatenate(int axis) : axis_(axis) {}
  const char* name() const override { return "concatenate"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
};

// lax.pad: inputs (operand, padding_value scalar); low/high may be negative, interior >= 0.
class Pad : public Primitive {
 public:
  Pad(Shape low, Shape high, Shape interior)
      : low_(std::move(low)), high_(std::move(high)), interior_(std::move(interior)) {}
  const char* name() const override { return "pad"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  const Shape& low() const { return low_; }
  const Shape& high() const { return high_; }
  const Shape& interior() const { return interior_; }

 private:
  Shape low_, high_, interior_;
};

// take along one axis: inputs (operand, indices int); output shape
// operand.shape[:axis] + indices.shape + operand.shape[axis+1:]. Negative indices count from the
// end; out-of-range indices are clamped (as XLA's gather does).
class Gather : public Primitive {
 public:
  explicit Gather(int axis) : axis_(axis) {}
  const char* name() const override { return "gather"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
};

// The transpose of Gather: inputs (operand, indices, updates); adds each update slice into
// operand at its (normalised, clamped) index along `axis`. Repeated indices accumulate.
class ScatterAdd : public Primitive {
 public:
  explicit ScatterAdd(int axis) : axis_(axis) {}
  const char* name() const override { return "scatter_add"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;

  int axis() const { return axis_; }
 private:
  int axis_;
};

// ---- reductions ----

enum class ReduceOp : uint8_t { kSum, kMax, kMin, kProd, kAny, kAll };

class Reduce : public Primitive {
 public:
  Reduce(ReduceOp op, std::vector<int> axes) : op_(op), axes_(std::move(axes)) {}
  const char* name() const override;
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;
  ReduceOp op() const { return op_; }
  const std::vector<int>& axes() const { return axes_; }

 private:
  ReduceOp op_;
  std::vector<int> axes_;  // sorted, normalised; reduced axes are removed from the shape
};

// argmax / argmin over one axis (first occurrence wins; NaN counts as the maximum), int32 out.
class ArgReduce : public Primitive {
 public:
  ArgReduce(bool is_max, int axis) : is_max_(is_max), axis_(axis) {}
  const char* name() const override { return is_max_ ? "argmax" : "argmin"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  bool is_max_;
  int axis_;
};

class Cumsum : public Primitive {
 public:
  Cumsum(int axis, bool reverse) : axis_(axis), reverse_(reverse) {}
  const char* name() const override { return "cumsum"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
  bool reverse_;
};

// Stable sort along `axis`, ascending. With `indices`, outputs the int32 permutation (argsort)
// instead of the sorted values. NaNs sort last.
class Sort : public Primitive {
 public:
  Sort(int axis, bool indices) : axis_(axis), indices_(indices) {}
  const char* name() const override { return indices_ ? "argsort" : "sort"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
  bool indices_;
};

// ---- linear algebra ----

struct DotDimensions {
  std::vector<int> lhs_batch, rhs_batch, lhs_contract, rhs_contract;
  bool operator==(const DotDimensions&) const = default;
};

// lax.dot_general. Output: batch dims, then lhs free dims, then rhs free dims. Inputs share a
// dtype; 16-bit floats accumulate in f32 and round once at the end.
class DotGeneral : public Primitive {
 public:
  explicit DotGeneral(DotDimensions dims) : dims_(std::move(dims)) {}
  const char* name() const override { return "dot_general"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override;
  const DotDimensions& dims() const { return dims_; }

 private:
  DotDimensions dims_;
};

// ---- constants and random bits ----

class Iota : public Primitive {
 public:
  Iota(Shape shape, int dimension, Dtype dtype)
      : shape_(std::move(shape)), dimension_(dimension), dtype_(dtype) {}
  const char* name() const override { return "iota"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  bool equals(const Primitive& o) const override;

 private:
  Shape shape_;
  int dimension_;
  Dtype dtype_;
};

// ---- fused ----

// softmax / log_softmax along one axis, computed in f32 (f64 for f64) with the max subtracted.
class Softmax : public Primitive {
 public:
  Softmax(int axis, bool log) : axis_(axis), log_(log) {}
  const char* name() const override { return log_ ? "log_softmax" : "softmax"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  int axis() const { return axis_; }

 private:
  int axis_;
  bool log_;
};

}  // namespace axlearn
