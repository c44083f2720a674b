// Shape inference and VJP rules of the primitives. Kernels are in backends/cpu/.
#include "axlearn/core/primitives.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "axlearn/core/ops.h"

namespace axlearn {

namespace {

std::string shapes_str(const std::vector<Tensor>& in) {
  std::string s;
  for (size_t i = 0; i < in.size(); ++i) {
    s += (i ? " and " : "") + shape_str(in[i].shape()) + " " + dtype_name(in[i].dtype());
  }
  return s;
}

void expect_arity(const char* op, const std::vector<Tensor>& in, size_t n) {
  if (in.size() != n) fail(op, ": expected ", n, " inputs, got ", in.size());
}

template <typename T>
std::string vec_str(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

Tensor zeros_for(const Tensor& x) { return zeros(x.shape(), x.dtype()); }

}  // namespace

// ------------------------------------------------------------------ elementwise

const char* unary_op_name(UnaryOp op) {
  static const char* names[] = {"neg",     "abs",       "sign",   "exp",       "expm1",    "log",
                                "log1p",   "sqrt",      "rsqrt",  "tanh",      "logistic", "erf",
                                "erf_inv", "sin",       "cos",    "floor",     "ceil",     "round",
                                "not",     "is_finite", "square", "reciprocal"};
  return names[int(op)];
}

const char* binary_op_name(BinaryOp op) {
  static const char* names[] = {
      "add", "sub",   "mul", "div", "pow", "max",        "min",
      "rem", "atan2", "and", "or",  "xor", "shift_left", "shift_right_logical",
      "eq",  "ne",    "lt",  "le",  "gt",  "ge"};
  return names[int(op)];
}

OutputSpec Unary::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 1);
  Dtype d = in[0].dtype();
  switch (op_) {
    case UnaryOp::kLogicalNot:
      if (d != bool_ && !is_integer(d))
        fail(name(), ": expects a bool or integer operand, got ", shapes_str(in));
      return {in[0].shape(), d};
    case UnaryOp::kIsFinite:
      if (!is_floating(d)) fail(name(), ": expects a floating operand, got ", shapes_str(in));
      return {in[0].shape(), bool_};
    case UnaryOp::kNeg:
    case UnaryOp::kAbs:
    case UnaryOp::kSign:
    case UnaryOp::kSquare:
      if (d == bool_) fail(name(), ": not defined for bool operands, got ", shapes_str(in));
      return {in[0].shape(), d};
    default:
      if (!is_floating(d)) {
        fail(name(), ": expects a floating-point operand, got ", shapes_str(in),
             " (convert with astype first)");
      }
      return {in[0].shape(), d};
  }
}

bool Unary::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Unary*>(&o);
  return p && p->op_ == op_;
}

std::vector<Tensor> Unary::vjp(const std::vector<Tensor>& in, const Tensor& y,
                               const Tensor& ct) const {
  const Tensor& x = in[0];
  auto c = [&](double v) { return weak_scalar(v, x); };
  switch (op_) {
    case UnaryOp::kNeg:
      return {negative(ct)};
    case UnaryOp::kAbs:
      return {ct * sign(x)};
    case UnaryOp::kExp:
      return {ct * y};
    case UnaryOp::kExpm1:
      return {ct * (y + 1.0)};
    case UnaryOp::kLog:
      return {ct / x};
    case UnaryOp::kLog1p:
      return {ct / (x + 1.0)};
    case UnaryOp::kSqrt:
      return {ct / (y * 2.0)};
    case UnaryOp::kRsqrt:
      return {ct * y / x * -0.5};
    case UnaryOp::kTanh:
      return {ct * (1.0 - square(y))};
    case UnaryOp::kLogistic:
      return {ct * y * (1.0 - y)};
    case UnaryOp::kErf:
      return {ct * c(2.0 / std::sqrt(M_PI)) * exp(negative(square(x)))};
    case UnaryOp::kErfInv:
      return {ct * c(std::sqrt(M_PI) / 2.0) * exp(square(y))};
    case UnaryOp::kSin:
      return {ct * cos(x)};
    case UnaryOp::kCos:
      return {negative(ct * sin(x))};
    case UnaryOp::kSquare:
      return {ct * x * 2.0};
    case UnaryOp::kReciprocal:
      return {negative(ct * square(y))};
    default:
      return {Tensor()};  // piecewise constant or non-float
  }
}

OutputSpec Binary::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 2);
  const Tensor &a = in[0], &b = in[1];
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) {
    fail(name(), ": operands must have equal shapes and dtypes, got ", shapes_str(in));
  }
  Dtype d = a.dtype();
  switch (op_) {
    case BinaryOp::kAnd:
    case BinaryOp::kOr:
    case BinaryOp::kXor:
      if (is_floating(d))
        fail(name(), ": bitwise/logical ops need bool or integer operands, got ", shapes_str(in));
      return {a.shape(), d};
    case BinaryOp::kShiftLeft:
    case BinaryOp::kShiftRightLogical:
      if (!is_integer(d)) fail(name(), ": shifts need integer operands, got ", shapes_str(in));
      return {a.shape(), d};
    case BinaryOp::kPow:
      if (d == bool_) fail(name(), ": not defined for bool operands, got ", shapes_str(in));
      return {a.shape(), d};
    case BinaryOp::kAtan2:
      if (!is_floating(d)) fail(name(), ": expects floating-point operands, got ", shapes_str(in));
      return {a.shape(), d};
    case BinaryOp::kEq:
    case BinaryOp::kNe:
    case BinaryOp::kLt:
    case BinaryOp::kLe:
    case BinaryOp::kGt:
    case BinaryOp::kGe:
      return {a.shape(), bool_};
    default:
      if (d == bool_ && op_ != BinaryOp::kMax && op_ != BinaryOp::kMin) {
        fail(name(), ": not defined for bool operands, got ", shapes_str(in));
      }
      return {a.shape(), d};
  }
}

bool Binary::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Binary*>(&o);
  return p && p->op_ == op_;
}

std::vector<Tensor> Binary::vjp(const std::vector<Tensor>& in, const Tensor& y,
                                const Tensor& ct) const {
  const Tensor &a = in[0], &b = in[1];
  if (!is_floating(a.dtype())) return {Tensor(), Tensor()};
  switch (op_) {
    case BinaryOp::kAdd:
      return {ct, ct};
    case BinaryOp::kSub:
      return {ct, negative(ct)};
    case BinaryOp::kMul:
      return {ct * b, ct * a};
    case BinaryOp::kDiv:
      return {ct / b, negative(ct * y / b)};
    case BinaryOp::kPow: {
      Tensor zero = equal(a, zeros_like(a));
      Tensor safe_log = log(where(zero, ones_like(a), a));
      Tensor db = ct * where(zero, zeros_like(a), safe_log * y);
      Tensor da = ct * b * power(a, b - 1.0);
      return {da, db};
    }
    case BinaryOp::kMax:
    case BinaryOp::kMin: {
      // Ties split the gradient equally, as jax does.
      Tensor wins = op_ == BinaryOp::kMax ? greater(a, b) : less(a, b);
      Tensor tie = equal(a, b);
      Tensor wa = where(wins, ones_like(a), where(tie, full_like(a, 0.5), zeros_like(a)));
      return {ct * wa, ct * (1.0 - wa)};
    }
    case BinaryOp::kRem: {
      Tensor q = a / b;
      return {ct, negative(ct) * sign(q) * floor(abs(q))};
    }
    case BinaryOp::kAtan2: {
      Tensor denom = square(a) + square(b);
      return {ct * b / denom, negative(ct * a / denom)};
    }
    default:
      return {Tensor(), Tensor()};
  }
}

OutputSpec Select::infer(const std::vector<Tensor>& in) const {
  expect_arity("select", in, 3);
  if (in[0].dtype() != bool_) fail("select: predicate must be bool, got ", shapes_str(in));
  if (in[0].shape() != in[1].shape() || in[1].shape() != in[2].shape() ||
      in[1].dtype() != in[2].dtype()) {
    fail("select: operands must have equal shapes (and branches equal dtypes), got ",
         shapes_str(in));
  }
  return {in[1].shape(), in[1].dtype()};
}

std::vector<Tensor> Select::vjp(const std::vector<Tensor>& in, const Tensor&,
                                const Tensor& ct) const {
  Tensor z = zeros_like(ct);
  return {Tensor(), where(in[0], ct, z), where(in[0], z, ct)};
}

OutputSpec Convert::infer(const std::vector<Tensor>& in) const {
  expect_arity("convert_element_type", in, 1);
  return {in[0].shape(), dtype_};
}
bool Convert::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Convert*>(&o);
  return p && p->dtype_ == dtype_;
}
void Convert::print(std::ostream& os) const { os << name() << "[" << dtype_ << "]"; }
std::vector<Tensor> Convert::vjp(const std::vector<Tensor>& in, const Tensor&,
                                 const Tensor& ct) const {
  if (!is_floating(in[0].dtype()) || !is_floating(dtype_)) return {Tensor()};
  return {astype(ct, in[0].dtype())};
}

OutputSpec BitcastConvert::infer(const std::vector<Tensor>& in) const {
  expect_arity("bitcast_convert_type", in, 1);
  if (size_of(in[0].dtype()) != size_of(dtype_) || in[0].dtype() == bool_ || dtype_ == bool_) {
    fail("bitcast_convert_type: cannot reinterpret ", shapes_str(in), " as ", dtype_,
         " (element sizes must match)");
  }
  return {in[0].shape(), dtype_};
}
bool BitcastConvert::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const BitcastConvert*>(&o);
  return p && p->dtype_ == dtype_;
}

OutputSpec StopGradient::infer(const std::vector<Tensor>& in) const {
  expect_arity("stop_gradient", in, 1);
  return {in[0].shape(), in[0].dtype()};
}
std::vector<Tensor> StopGradient::vjp(const std::vector<Tensor>&, const Tensor&,
                                      const Tensor&) const {
  return {Tensor()};
}

// ------------------------------------------------------------------ shapes

OutputSpec BroadcastInDim::infer(const std::vector<Tensor>& in) const {
  expect_arity("broadcast_in_dim", in, 1);
  const Shape& xs = in[0].shape();
  if (dims_.size() != xs.size()) {
    fail("broadcast_in_dim: operand of shape ", shape_str(xs), " needs ", xs.size(),
         " broadcast dimensions, got ", vec_str(dims_));
  }
  for (size_t i = 0; i < dims_.size(); ++i) {
    int d = dims_[i];
    if (d < 0 || d >= int(shape_.size()) || (i > 0 && d <= dims_[i - 1])) {
      fail("broadcast_in_dim: cannot broadcast ", shape_str(xs), " to ", shape_str(shape_),
           " with dimensions ", vec_str(dims_), " (they must be increasing and < ", shape_.size(),
           ")");
    }
    if (xs[i] != 1 && xs[i] != shape_[d]) {
      fail("broadcast_in_dim: cannot broadcast shape ", shape_str(xs), " to ", shape_str(shape_));
    }
  }
  return {shape_, in[0].dtype()};
}
bool BroadcastInDim::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const BroadcastInDim*>(&o);
  return p && p->shape_ == shape_ && p->dims_ == dims_;
}
void BroadcastInDim::print(std::ostream& os) const {
  os << name() << "[shape=" << shape_str(shape_) << ", dims=" << vec_str(dims_) << "]";
}
std::vector<Tensor> BroadcastInDim::vjp(const std::vector<Tensor>& in, const Tensor&,
                                        const Tensor& ct) const {
  const Shape& xs = in[0].shape();
  std::vector<int> axes;
  std::vector<bool> kept(shape_.size(), false);
  for (size_t i = 0; i < dims_.size(); ++i) kept[dims_[i]] = true;
  for (size_t d = 0; d < shape_.size(); ++d) {
    if (!kept[d]) axes.push_back(int(d));
  }
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (xs[i] == 1 && shape_[dims_[i]] != 1) axes.push_back(dims_[i]);
  }
  std::sort(axes.begin(), axes.end());
  Tensor r = axes.empty() ? ct : sum(ct, axes);
  return {reshape(r, xs)};
}

OutputSpec Reshape::infer(const std::vector<Tensor>& in) const {
  expect_arity("reshape", in, 1);
  if (num_elements(shape_) != in[0].size()) {
    fail("reshape: cannot reshape ", shape_str(in[0].shape()), " (", in[0].size(), " elements) to ",
         shape_str(shape_), " (", num_elements(shape_), " elements)");
  }
  return {shape_, in[0].dtype()};
}
bool Reshape::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Reshape*>(&o);
  return p && p->shape_ == shape_;
}
void Reshape::print(std::ostream& os) const { os << name() << "[" << shape_str(shape_) << "]"; }
std::vector<Tensor> Reshape::vjp(const std::vector<Tensor>& in, const Tensor&,
                                 const Tensor& ct) const {
  return {reshape(ct, in[0].shape())};
}

OutputSpec Transpose::infer(const std::vector<Tensor>& in) const {
  expect_arity("transpose", in, 1);
  const Shape& xs = in[0].shape();
  std::vector<int> sorted = perm_;
  std::sort(sorted.begin(), sorted.end());
  bool ok = perm_.size() == xs.size();
  for (size_t i = 0; ok && i < sorted.size(); ++i) ok = sorted[i] == int(i);
  if (!ok)
    fail("transpose: ", vec_str(perm_), " is not a permutation of the axes of ", shape_str(xs));
  Shape out(xs.size());
  for (size_t i = 0; i < perm_.size(); ++i) out[i] = xs[perm_[i]];
  return {out, in[0].dtype()};
}
bool Transpose::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Transpose*>(&o);
  return p && p->perm_ == perm_;
}
void Transpose::print(std::ostream& os) const { os << name() << "[" << vec_str(perm_) << "]"; }
std::vector<Tensor> Transpose::vjp(const std::vector<Tensor>&, const Tensor&,
                                   const Tensor& ct) const {
  std::vector<int> inv(perm_.size());
  for (size_t i = 0; i < perm_.size(); ++i) inv[perm_[i]] = int(i);
  return {transpose(ct, inv)};
}

OutputSpec Slice::infer(const std::vector<Tensor>& in) const {
  expect_arity("slice", in, 1);
  const Shape& xs = in[0].shape();
  if (start_.size() != xs.size() || limit_.size() != xs.size() || strides_.size() != xs.size()) {
    fail("slice: start ", vec_str(start_), ", limit ", vec_str(limit_), " and strides ",
         vec_str(strides_), " must each have one entry per axis of ", shape_str(xs));
  }
  Shape out(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (start_[i] < 0 || limit_[i] > xs[i] || start_[i] > limit_[i] || strides_[i] < 1) {
      fail("slice: start ", vec_str(start_), ", limit ", vec_str(limit_), ", strides ",
           vec_str(strides_), " out of range for shape ", shape_str(xs));
    }
    out[i] = (limit_[i] - start_[i] + strides_[i] - 1) / strides_[i];
  }
  return {out, in[0].dtype()};
}
bool Slice::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Slice*>(&o);
  return p && p->start_ == start_ && p->limit_ == limit_ && p->strides_ == strides_;
}
void Slice::print(std::ostream& os) const {
  os << name() << "[" << vec_str(start_) << ":" << vec_str(limit_) << ":" << vec_str(strides_)
     << "]";
}
std::vector<Tensor> Slice::vjp(const std::vector<Tensor>& in, const Tensor&,
                               const Tensor& ct) const {
  const Shape& xs = in[0].shape();
  Shape low(xs.size()), high(xs.size()), interior(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    int64_t n = ct.shape()[i];
    low[i] = start_[i];
    interior[i] = strides_[i] - 1;
    int64_t covered = n == 0 ? start_[i] : start_[i] + (n - 1) * strides_[i] + 1;
    high[i] = xs[i] - covered;
    if (n == 0) interior[i] = 0;
  }
  return {pad_general(ct, zeros({}, ct.dtype()), low, high, interior)};
}

namespace {
void check_starts(const char* op, const Tensor& x, const Tensor& starts) {
  if (!is_integer(starts.dtype()) || starts.ndim() != 1 || starts.shape()[0] != x.ndim()) {
    fail(op, ": start indices must be an integer vector with one entry per axis of ",
         shape_str(x.shape()), ", got ", shape_str(starts.shape()), " ", starts.dtype());
  }
}
}  // namespace

OutputSpec DynamicSlice::infer(const std::vector<Tensor>& in) const {
  expect_arity("dynamic_slice", in, 2);
  check_starts("dynamic_slice", in[0], in[1]);
  if (sizes_.size() != in[0].shape().size()) {
    fail("dynamic_slice: sizes ", vec_str(sizes_), " do not match the rank of ",
         shape_str(in[0].shape()));
  }
  for (size_t i = 0; i < sizes_.size(); ++i) {
    if (sizes_[i] < 0 || sizes_[i] > in[0].shape()[i]) {
      fail("dynamic_slice: slice sizes ", vec_str(sizes_), " exceed operand shape ",
           shape_str(in[0].shape()));
    }
  }
  return {sizes_, in[0].dtype()};
}
bool DynamicSlice::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const DynamicSlice*>(&o);
  return p && p->sizes_ == sizes_;
}
std::vector<Tensor> DynamicSlice::vjp(const std::vector<Tensor>& in, const Tensor&,
                                      const Tensor& ct) const {
  return {dynamic_update_slice(zeros_for(in[0]), ct, in[1]), Tensor()};
}

OutputSpec DynamicUpdateSlice::infer(const std::vector<Tensor>& in) const {
  expect_arity("dynamic_update_slice", in, 3);
  check_starts("dynamic_update_slice", in[0], in[2]);
  const Shape &xs = in[0].shape(), &us = in[1].shape();
  bool ok = xs.size() == us.size() && in[0].dtype() == in[1].dtype();
  for (size_t i = 0; ok && i < xs.size(); ++i) ok = us[i] <= xs[i];
  if (!ok)
    fail("dynamic_update_slice: update ", shapes_str({in[1]}), " does not fit operand ",
         shapes_str({in[0]}));
  return {xs, in[0].dtype()};
}
std::vector<Tensor> DynamicUpdateSlice::vjp(const std::vector<Tensor>& in, const Tensor&,
                                            const Tensor& ct) const {
  return {dynamic_update_slice(ct, zeros_for(in[1]), in[2]),
          dynamic_slice(ct, in[2], in[1].shape()), Tensor()};
}

OutputSpec Concatenate::infer(const std::vector<Tensor>& in) const {
  if (in.empty()) fail("concatenate: needs at least one operand");
  Shape out = in[0].shape();
  if (axis_ < 0 || axis_ >= int(out.size()))
    fail("concatenate: axis ", axis_, " out of range for ", shapes_str(in));
  for (size_t k = 1; k < in.size(); ++k) {
    const Shape& s = in[k].shape();
    bool ok = s.size() == out.size() && in[k].dtype() == in[0].dtype();
    for (size_t i = 0; ok && i < s.size(); ++i) ok = int(i) == axis_ || s[i] == out[i];
    if (!ok)
      fail("concatenate: operands must match except along axis ", axis_, ", got ", shapes_str(in));
    out[axis_] += s[axis_];
  }
  return {out, in[0].dtype()};
}
bool Concatenate::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Concatenate*>(&o);
  return p && p->axis_ == axis_;
}
std::vector<Tensor> Concatenate::vjp(const std::vector<Tensor>& in, const Tensor&,
                                     const Tensor& ct) const {
  std::vector<Tensor> out;
  int64_t off = 0;
  for (const Tensor& x : in) {
    int64_t n = x.shape()[axis_];
    out.push_back(slice_axis(ct, axis_, off, off + n));
    off += n;
  }
  return out;
}

OutputSpec Pad::infer(const std::vector<Tensor>& in) const {
  expect_arity("pad", in, 2);
  const Shape& xs = in[0].shape();
  if (in[1].ndim() != 0 || in[1].dtype() != in[0].dtype()) {
    fail("pad: padding value must be a scalar of the operand's dtype, got ", shapes_str(in));
  }
  if (low_.size() != xs.size() || high_.size() != xs.size() || interior_.size() != xs.size()) {
    fail("pad: padding config must have one entry per axis of ", shape_str(xs));
  }
  Shape out(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (interior_[i] < 0) fail("pad: interior padding must be >= 0, got ", vec_str(interior_));
    int64_t core = xs[i] == 0 ? 0 : xs[i] + (xs[i] - 1) * interior_[i];
    out[i] = low_[i] + core + high_[i];
    if (out[i] < 0)
      fail("pad: negative padding removes more than the ", shape_str(xs), " operand has");
  }
  return {out, in[0].dtype()};
}
bool Pad::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Pad*>(&o);
  return p && p->low_ == low_ && p->high_ == high_ && p->interior_ == interior_;
}
std::vector<Tensor> Pad::vjp(const std::vector<Tensor>&, const Tensor&, const Tensor& ct) const {
  const size_t n = low_.size();
  Shape nlow(n), nhigh(n), zero(n, 0), step(n);
  for (size_t i = 0; i < n; ++i) {
    nlow[i] = -low_[i];
    nhigh[i] = -high_[i];
    step[i] = interior_[i] + 1;
  }
  Tensor unpadded = pad_general(ct, zeros({}, ct.dtype()), nlow, nhigh, zero);
  Tensor t_operand = slice(unpadded, zero, unpadded.shape(), step);
  Tensor t_value = sum(ct) - sum(t_operand);
  return {t_operand, t_value};
}

namespace {
void check_gather(const char* op, const Tensor& x, const Tensor& idx, int axis) {
  if (!is_integer(idx.dtype())) fail(op, ": indices must be integers, got ", shapes_str({x, idx}));
  if (axis < 0 || axis >= x.ndim())
    fail(op, ": axis ", axis, " out of range for ", shape_str(x.shape()));
}
Shape gather_shape(const Shape& xs, const Shape& is, int axis) {
  Shape out(xs.begin(), xs.begin() + axis);
  out.insert(out.end(), is.begin(), is.end());
  out.insert(out.end(), xs.begin() + axis + 1, xs.end());
  return out;
}
}  // namespace

OutputSpec Gather::infer(const std::vector<Tensor>& in) const {
  expect_arity("gather", in, 2);
  check_gather("gather", in[0], in[1], axis_);
  if (in[0].shape()[axis_] == 0 && in[1].size() > 0) {
    fail("gather: cannot take from an empty axis ", axis_, " of ", shape_str(in[0].shape()));
  }
  return {gather_shape(in[0].shape(), in[1].shape(), axis_), in[0].dtype()};
}
bool Gather::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Gather*>(&o);
  return p && p->axis_ == axis_;
}
std::vector<Tensor> Gather::vjp(const std::vector<Tensor>& in, const Tensor&,
                                const Tensor& ct) const {
  return {scatter_add(zeros_for(in[0]), in[1], ct, axis_), Tensor()};
}

OutputSpec ScatterAdd::infer(const std::vector<Tensor>& in) const {
  expect_arity("scatter_add", in, 3);
  check_gather("scatter_add", in[0], in[1], axis_);
  if (in[0].shape()[axis_] == 0 && in[1].size() > 0) {
    fail("scatter_add: cannot scatter into an empty axis ", axis_, " of ",
         shape_str(in[0].shape()));
  }
  Shape expect = gather_shape(in[0].shape(), in[1].shape(), axis_);
  if (in[2].shape() != expect || in[2].dtype() != in[0].dtype()) {
    fail("scatter_add: updates must have shape ", shape_str(expect),
         " and the operand's dtype, got ", shapes_str(in));
  }
  return {in[0].shape(), in[0].dtype()};
}
bool ScatterAdd::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const ScatterAdd*>(&o);
  return p && p->axis_ == axis_;
}
std::vector<Tensor> ScatterAdd::vjp(const std::vector<Tensor>& in, const Tensor&,
                                    const Tensor& ct) const {
  return {ct, Tensor(), take(ct, in[1], axis_)};
}

// ------------------------------------------------------------------ reductions

const char* Reduce::name() const {
  static const char* names[] = {"reduce_sum",  "reduce_max", "reduce_min",
                                "reduce_prod", "reduce_or",  "reduce_and"};
  return names[int(op_)];
}

OutputSpec Reduce::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 1);
  const Shape& xs = in[0].shape();
  Shape out;
  for (int i = 0; i < int(xs.size()); ++i) {
    if (!std::binary_search(axes_.begin(), axes_.end(), i)) out.push_back(xs[i]);
  }
  for (int a : axes_) {
    if (a < 0 || a >= int(xs.size()))
      fail(name(), ": axis ", a, " out of range for ", shape_str(xs));
    if ((op_ == ReduceOp::kMax || op_ == ReduceOp::kMin) && xs[a] == 0) {
      fail(name(), ": zero-size axis ", a, " of ", shape_str(xs), " has no identity for max/min");
    }
  }
  Dtype d = in[0].dtype();
  if (op_ == ReduceOp::kAny || op_ == ReduceOp::kAll) {
    if (d != bool_) fail(name(), ": expects a bool operand, got ", shapes_str(in));
  }
  return {out, d};
}
bool Reduce::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Reduce*>(&o);
  return p && p->op_ == op_ && p->axes_ == axes_;
}
void Reduce::print(std::ostream& os) const { os << name() << "[axes=" << vec_str(axes_) << "]"; }

namespace {
// Re-inserts reduced axes as size 1 and broadcasts back to `shape`.
Tensor unreduce(const Tensor& t, const Shape& shape, const std::vector<int>& axes) {
  Shape kept = shape;
  for (int a : axes) kept[a] = 1;
  return broadcast_to(reshape(t, kept), shape);
}
}  // namespace

std::vector<Tensor> Reduce::vjp(const std::vector<Tensor>& in, const Tensor& y,
                                const Tensor& ct) const {
  const Tensor& x = in[0];
  if (!is_floating(x.dtype())) return {Tensor()};
  switch (op_) {
    case ReduceOp::kSum:
      return {unreduce(ct, x.shape(), axes_)};
    case ReduceOp::kMax:
    case ReduceOp::kMin: {
      // The gradient is shared equally among the elements that attain the extremum.
      Tensor mask = astype(equal(x, unreduce(y, x.shape(), axes_)), x.dtype());
      Tensor count = sum(mask, axes_);
      return {mask * unreduce(ct / count, x.shape(), axes_)};
    }
    case ReduceOp::kProd:
      return {unreduce(ct * y, x.shape(), axes_) / x};
    default:
      return {Tensor()};
  }
}

OutputSpec ArgReduce::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 1);
  const Shape& xs = in[0].shape();
  if (axis_ < 0 || axis_ >= int(xs.size()))
    fail(name(), ": axis ", axis_, " out of range for ", shape_str(xs));
  if (xs[axis_] == 0)
    fail(name(), ": attempt to get ", name(), " of an empty axis of ", shape_str(xs));
  Shape out = xs;
  out.erase(out.begin() + axis_);
  return {out, int32};
}
bool ArgReduce::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const ArgReduce*>(&o);
  return p && p->is_max_ == is_max_ && p->axis_ == axis_;
}

OutputSpec Cumsum::infer(const std::vector<Tensor>& in) const {
  expect_arity("cumsum", in, 1);
  if (axis_ < 0 || axis_ >= in[0].ndim())
    fail("cumsum: axis ", axis_, " out of range for ", shape_str(in[0].shape()));
  if (in[0].dtype() == bool_) fail("cumsum: not defined for bool operands; convert first");
  return {in[0].shape(), in[0].dtype()};
}
bool Cumsum::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Cumsum*>(&o);
  return p && p->axis_ == axis_ && p->reverse_ == reverse_;
}
std::vector<Tensor> Cumsum::vjp(const std::vector<Tensor>& in, const Tensor&,
                                const Tensor& ct) const {
  if (!is_floating(in[0].dtype())) return {Tensor()};
  return {cumsum(ct, axis_, !reverse_)};
}

OutputSpec Sort::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 1);
  if (axis_ < 0 || axis_ >= in[0].ndim())
    fail(name(), ": axis ", axis_, " out of range for ", shape_str(in[0].shape()));
  return {in[0].shape(), indices_ ? int32 : in[0].dtype()};
}
bool Sort::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Sort*>(&o);
  return p && p->axis_ == axis_ && p->indices_ == indices_;
}
std::vector<Tensor> Sort::vjp(const std::vector<Tensor>& in, const Tensor&,
                              const Tensor& ct) const {
  if (indices_ || !is_floating(in[0].dtype())) return {Tensor()};
  // y[i] = x[perm[i]], so x_bar[perm[i]] = y_bar[i], i.e. x_bar = y_bar[inverse(perm)].
  Tensor perm = argsort(in[0], axis_);
  return {take_along_axis(ct, argsort(perm, axis_), axis_)};
}

// ------------------------------------------------------------------ dot_general

OutputSpec DotGeneral::infer(const std::vector<Tensor>& in) const {
  expect_arity("dot_general", in, 2);
  const Shape &as = in[0].shape(), &bs = in[1].shape();
  auto bad = [&](const std::string& why) {
    fail("dot_general: ", why, "; lhs ", shape_str(as), ", rhs ", shape_str(bs), ", contracting ",
         vec_str(dims_.lhs_contract), " with ", vec_str(dims_.rhs_contract), ", batch ",
         vec_str(dims_.lhs_batch), " with ", vec_str(dims_.rhs_batch));
  };
  if (in[0].dtype() != in[1].dtype())
    bad(std::string("dtypes differ: ") + dtype_name(in[0].dtype()) + " and " +
        dtype_name(in[1].dtype()));
  if (in[0].dtype() == bool_) bad("bool operands are not supported");
  if (dims_.lhs_batch.size() != dims_.rhs_batch.size() ||
      dims_.lhs_contract.size() != dims_.rhs_contract.size()) {
    bad("lhs and rhs dimension lists differ in length");
  }
  std::vector<bool> ua(as.size()), ub(bs.size());
  auto use = [&](std::vector<bool>& u, int d, const Shape& s) {
    if (d < 0 || d >= int(s.size()) || u[d]) bad("dimension out of range or repeated");
    u[d] = true;
  };
  Shape out;
  for (size_t i = 0; i < dims_.lhs_batch.size(); ++i) {
    use(ua, dims_.lhs_batch[i], as);
    use(ub, dims_.rhs_batch[i], bs);
    if (as[dims_.lhs_batch[i]] != bs[dims_.rhs_batch[i]]) bad("batch dimension sizes differ");
    out.push_back(as[dims_.lhs_batch[i]]);
  }
  for (size_t i = 0; i < dims_.lhs_contract.size(); ++i) {
    use(ua, dims_.lhs_contract[i], as);
    use(ub, dims_.rhs_contract[i], bs);
    if (as[dims_.lhs_contract[i]] != bs[dims_.rhs_contract[i]])
      bad("contracting dimension sizes differ");
  }
  for (size_t d = 0; d < as.size(); ++d) {
    if (!ua[d]) out.push_back(as[d]);
  }
  for (size_t d = 0; d < bs.size(); ++d) {
    if (!ub[d]) out.push_back(bs[d]);
  }
  return {out, in[0].dtype()};
}
bool DotGeneral::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const DotGeneral*>(&o);
  return p && p->dims_ == dims_;
}
void DotGeneral::print(std::ostream& os) const {
  os << name() << "[contract=" << vec_str(dims_.lhs_contract) << "x" << vec_str(dims_.rhs_contract)
     << ", batch=" << vec_str(dims_.lhs_batch) << "x" << vec_str(dims_.rhs_batch) << "]";
}

namespace {
std::vector<int> free_dims(int ndim, const std::vector<int>& batch,
                           const std::vector<int>& contract) {
  std::vector<int> out;
  for (int d = 0; d < ndim; ++d) {
    if (std::find(batch.begin(), batch.end(), d) == batch.end() &&
        std::find(contract.begin(), contract.end(), d) == contract.end()) {
      out.push_back(d);
    }
  }
  return out;
}

// Gradient for the operand `x` of x·y given the output cotangent. `x_first` says whether x was the
// lhs (its free dims come first in the output).
Tensor dot_transpose(const Tensor& ct, const Tensor& x, const Tensor& y,
                     const std::vector<int>& x_batch, const std::vector<int>& y_batch,
                     const std::vector<int>& x_contract, const std::vector<int>& y_contract,
                     bool x_first) {
  const int nb = int(x_batch.size());
  std::vector<int> x_free = free_dims(x.ndim(), x_batch, x_contract);
  std::vector<int> y_free = free_dims(y.ndim(), y_batch, y_contract);
  const int nx = int(x_free.size()), ny = int(y_free.size());
  // ct dims: [batch | lhs free | rhs free]. Contract ct's y-free dims with y's free dims.
  std::vector<int> ct_contract, ct_batch;
  int y_free_start = x_first ? nb + nx : nb;
  for (int i = 0; i < ny; ++i) ct_contract.push_back(y_free_start + i);
  for (int i = 0; i < nb; ++i) ct_batch.push_back(i);
  Tensor r = dot_general(ct, y, ct_contract, y_free, ct_batch, y_batch);
  // r dims: [batch | x free | y's contracting dims in increasing order] -> x's dims.
  std::vector<int> r_to_x;
  for (int i = 0; i < nb; ++i) r_to_x.push_back(x_batch[i]);
  for (int d : x_free) r_to_x.push_back(d);
  std::vector<int> y_contract_sorted = y_contract;
  std::sort(y_contract_sorted.begin(), y_contract_sorted.end());
  for (int d : y_contract_sorted) {
    size_t k = std::find(y_contract.begin(), y_contract.end(), d) - y_contract.begin();
    r_to_x.push_back(x_contract[k]);
  }
  std::vector<int> perm(r_to_x.size());
  for (size_t i = 0; i < r_to_x.size(); ++i) perm[r_to_x[i]] = int(i);
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == int(i);
  return identity ? r : transpose(r, perm);
}
}  // namespace

std::vector<Tensor> DotGeneral::vjp(const std::vector<Tensor>& in, const Tensor&,
                                    const Tensor& ct) const {
  const Tensor &a = in[0], &b = in[1];
  if (!is_floating(a.dtype())) return {Tensor(), Tensor()};
  return {dot_transpose(ct, a, b, dims_.lhs_batch, dims_.rhs_batch, dims_.lhs_contract,
                        dims_.rhs_contract, true),
          dot_transpose(ct, b, a, dims_.rhs_batch, dims_.lhs_batch, dims_.rhs_contract,
                        dims_.lhs_contract, false)};
}

// ------------------------------------------------------------------ misc

OutputSpec Iota::infer(const std::vector<Tensor>& in) const {
  expect_arity("iota", in, 0);
  if (dimension_ < 0 || dimension_ >= int(shape_.size())) {
    fail("iota: dimension ", dimension_, " out of range for shape ", shape_str(shape_));
  }
  if (dtype_ == bool_) fail("iota: dtype bool is not supported");
  return {shape_, dtype_};
}
bool Iota::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Iota*>(&o);
  return p && p->shape_ == shape_ && p->dimension_ == dimension_ && p->dtype_ == dtype_;
}

OutputSpec Softmax::infer(const std::vector<Tensor>& in) const {
  expect_arity(name(), in, 1);
  if (!is_floating(in[0].dtype()))
    fail(name(), ": expects a floating operand, got ", shapes_str(in));
  if (axis_ < 0 || axis_ >= in[0].ndim())
    fail(name(), ": axis ", axis_, " out of range for ", shape_str(in[0].shape()));
  return {in[0].shape(), in[0].dtype()};
}
bool Softmax::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const Softmax*>(&o);
  return p && p->axis_ == axis_ && p->log_ == log_;
}
std::vector<Tensor> Softmax::vjp(const std::vector<Tensor>&, const Tensor& y,
                                 const Tensor& ct) const {
  if (log_) return {ct - exp(y) * sum(ct, {axis_}, true)};
  return {y * (ct - sum(ct * y, {axis_}, true))};
}

}  // namespace axlearn
