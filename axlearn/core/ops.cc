#include "axlearn/core/ops.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "axlearn/core/primitives.h"

namespace axlearn {

namespace {

template <typename P, typename... Args>
Tensor apply(std::vector<Tensor> inputs, Args&&... args) {
  return Tensor::make(std::make_shared<P>(std::forward<Args>(args)...), std::move(inputs));
}

template <typename T>
Tensor make_array(const std::vector<T>& values, const Shape& shape, Dtype dtype) {
  if (int64_t(values.size()) != num_elements(shape)) {
    fail("array: ", values.size(), " values do not fill shape ", shape_str(shape));
  }
  Array a = Array::empty(shape, dtype);
  dispatch_dtype(dtype, [&](auto t) {
    using S = decltype(t);
    S* p = a.data<S>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = cast_value<S>(values[i]);
  });
  return Tensor(std::move(a));
}

// Broadcasts both operands to a common shape (inserting broadcast_in_dim nodes only as needed).
std::pair<Tensor, Tensor> broadcast_pair(const Tensor& a, const Tensor& b, const char* op) {
  if (a.shape() == b.shape()) return {a, b};
  Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  return {broadcast_to(a, s), broadcast_to(b, s)};
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, Dtype dtype) {
  const char* name = binary_op_name(op);
  auto [x, y] = broadcast_pair(a, b, name);
  if (x.dtype() != dtype) x = astype(x, dtype);
  if (y.dtype() != dtype) y = astype(y, dtype);
  return apply<Binary>({x, y}, op);
}

Tensor promoted(BinaryOp op, const Tensor& a, const Tensor& b) {
  return binary(op, a, b, promote_types(a.dtype(), b.dtype()));
}

Tensor float_promoted(BinaryOp op, const Tensor& a, const Tensor& b) {
  Dtype d = promote_types(a.dtype(), b.dtype());
  if (!is_floating(d)) d = float32;
  return binary(op, a, b, d);
}

Tensor unary(UnaryOp op, const Tensor& x) { return apply<Unary>({x}, op); }

// Unary ops defined only on floats promote integer inputs to float32 (as jnp does).
Tensor float_unary(UnaryOp op, const Tensor& x) {
  return unary(op, is_floating(x.dtype()) ? x : astype(x, float32));
}

std::vector<int> all_axes(int ndim) {
  std::vector<int> a(ndim);
  std::iota(a.begin(), a.end(), 0);
  return a;
}

std::vector<int> reduce_axes(const Tensor& x, const std::vector<int>& axes, const char* op) {
  if (axes.empty()) return all_axes(x.ndim());
  std::vector<int> n = normalize_axes(axes, x.ndim(), op);
  std::sort(n.begin(), n.end());
  return n;
}

Tensor keep_dims(const Tensor& r, const Tensor& x, const std::vector<int>& axes, bool keepdims) {
  if (!keepdims) return r;
  Shape s = x.shape();
  for (int a : axes) s[a] = 1;
  return reshape(r, s);
}

Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int>& axes_in, bool keepdims,
              const char* name) {
  std::vector<int> axes = reduce_axes(x, axes_in, name);
  Tensor in = x;
  if (op == ReduceOp::kSum || op == ReduceOp::kProd) {
    // numpy: sums of bool/small ints accumulate in the default integer.
    if (x.dtype() == bool_ || x.dtype() == uint8) in = astype(x, int32);
  }
  if (op == ReduceOp::kAny || op == ReduceOp::kAll) {
    if (x.dtype() != bool_) in = astype(x, bool_);
  }
  Tensor r = axes.empty() ? in : apply<Reduce>({in}, op, axes);
  return keep_dims(r, x, axes, keepdims);
}

}  // namespace

// ------------------------------------------------------------------ creation

Tensor array(const std::vector<float>& v, const Shape& s, Dtype d) { return make_array(v, s, d); }
Tensor array(const std::vector<double>& v, const Shape& s, Dtype d) { return make_array(v, s, d); }
Tensor array(const std::vector<int32_t>& v, const Shape& s, Dtype d) { return make_array(v, s, d); }
Tensor array(const std::vector<int64_t>& v, const Shape& s, Dtype d) { return make_array(v, s, d); }
Tensor array(const std::vector<uint32_t>& v, const Shape& s, Dtype d) {
  return make_array(v, s, d);
}
Tensor array(const std::vector<bool>& v, const Shape& s) {
  std::vector<uint8_t> u(v.begin(), v.end());
  return make_array(u, s, bool_);
}

Tensor from_buffer(const void* data, const Shape& shape, Dtype dtype) {
  Array a = Array::empty(shape, dtype);
  std::memcpy(a.raw(), data, a.nbytes());
  return Tensor(std::move(a));
}

Tensor full(const Shape& shape, double value, Dtype dtype) {
  for (int64_t d : shape) {
    if (d < 0) fail("full: negative dimension in shape ", shape_str(shape));
  }
  // A single stored element broadcast by strides: no memory per element.
  Array a = Array::empty({}, dtype);
  dispatch_dtype(dtype, [&](auto t) {
    using S = decltype(t);
    a.data<S>()[0] = cast_value<S>(value);
  });
  a.shape = shape;
  a.strides.assign(shape.size(), 0);
  return Tensor(std::move(a));
}
Tensor scalar(double value, Dtype dtype) { return full({}, value, dtype); }
Tensor zeros(const Shape& shape, Dtype dtype) { return full(shape, 0, dtype); }
Tensor ones(const Shape& shape, Dtype dtype) { return full(shape, 1, dtype); }
Tensor zeros_like(const Tensor& x) { return zeros(x.shape(), x.dtype()); }
Tensor ones_like(const Tensor& x) { return ones(x.shape(), x.dtype()); }
Tensor full_like(const Tensor& x, double v) { return full(x.shape(), v, x.dtype()); }

Tensor iota(const Shape& shape, int dimension, Dtype dtype) {
  return apply<Iota>({}, shape, normalize_axis(dimension, int(shape.size()), "iota"), dtype);
}

Tensor arange(int64_t start, int64_t stop, int64_t step, Dtype dtype) {
  if (step == 0) fail("arange: step must not be zero");
  int64_t n = std::max<int64_t>(0, (stop - start + step + (step > 0 ? -1 : 1)) / step);
  Tensor r = iota({n}, 0, dtype);
  if (step != 1) r = r * double(step);
  if (start != 0) r = r + double(start);
  return r;
}
Tensor arange(int64_t stop, Dtype dtype) { return arange(0, stop, 1, dtype); }

Tensor eye(int64_t n, Dtype dtype) {
  return astype(equal(iota({n, n}, 0), iota({n, n}, 1)), dtype);
}

// ------------------------------------------------------------------ elementwise

Tensor add(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kAdd, a, b); }
Tensor subtract(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kSub, a, b); }
Tensor multiply(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kMul, a, b); }
Tensor divide(const Tensor& a, const Tensor& b) { return float_promoted(BinaryOp::kDiv, a, b); }
Tensor power(const Tensor& a, const Tensor& b) {
  // Integer bases and exponents stay integral (exponentiation by squaring), as in jnp.power.
  if (is_integer(a.dtype()) && is_integer(b.dtype())) return promoted(BinaryOp::kPow, a, b);
  return float_promoted(BinaryOp::kPow, a, b);
}
Tensor maximum(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kMax, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kMin, a, b); }
Tensor arctan2(const Tensor& a, const Tensor& b) { return float_promoted(BinaryOp::kAtan2, a, b); }
Tensor equal(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kEq, a, b); }
Tensor not_equal(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kNe, a, b); }
Tensor less(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kLt, a, b); }
Tensor less_equal(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kLe, a, b); }
Tensor greater(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kGt, a, b); }
Tensor greater_equal(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kGe, a, b); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return binary(BinaryOp::kAnd, a, b, bool_); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return binary(BinaryOp::kOr, a, b, bool_); }
Tensor logical_xor(const Tensor& a, const Tensor& b) { return binary(BinaryOp::kXor, a, b, bool_); }
Tensor bitwise_and(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kAnd, a, b); }
Tensor bitwise_or(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kOr, a, b); }
Tensor bitwise_xor(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kXor, a, b); }
Tensor left_shift(const Tensor& a, const Tensor& b) { return promoted(BinaryOp::kShiftLeft, a, b); }
Tensor right_shift_logical(const Tensor& a, const Tensor& b) {
  return promoted(BinaryOp::kShiftRightLogical, a, b);
}

Tensor remainder(const Tensor& a, const Tensor& b) {
  // numpy's remainder takes the sign of the divisor: r = fmod(a, b), fixed up when signs differ.
  Dtype d = promote_types(a.dtype(), b.dtype());
  auto [x, y] = broadcast_pair(astype(a, d), astype(b, d), "remainder");
  Tensor r = apply<Binary>({x, y}, BinaryOp::kRem);
  if (is_unsigned(d)) return r;
  Tensor z = zeros_like(r);
  Tensor fix = logical_and(not_equal(r, z), not_equal(less(r, z), less(y, z)));
  return where(fix, r + y, r);
}

Tensor floor_divide(const Tensor& a, const Tensor& b) {
  Dtype d = promote_types(a.dtype(), b.dtype());
  auto [x, y] = broadcast_pair(astype(a, d), astype(b, d), "floor_divide");
  if (is_floating(d)) {
    // numpy: (a - remainder(a, b)) / b, rounded.
    return floor(divide(x, y));
  }
  Tensor q = apply<Binary>({x, y}, BinaryOp::kDiv);  // truncating integer division
  if (is_unsigned(d)) return q;
  Tensor r = apply<Binary>({x, y}, BinaryOp::kRem);
  Tensor z = zeros_like(r);
  Tensor fix = logical_and(not_equal(r, z), not_equal(less(r, z), less(y, z)));
  return where(fix, q - 1.0, q);
}

Tensor where(const Tensor& cond, const Tensor& x, const Tensor& y) {
  Dtype d = promote_types(x.dtype(), y.dtype());
  Tensor c = cond.dtype() == bool_ ? cond : astype(cond, bool_);
  Shape s = broadcast_shapes(broadcast_shapes(c.shape(), x.shape(), "where"), y.shape(), "where");
  return apply<Select>(
      {broadcast_to(c, s), broadcast_to(astype(x, d), s), broadcast_to(astype(y, d), s)});
}

Tensor clip(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  Tensor r = x;
  if (lo) r = maximum(r, weak_scalar(*lo, r));
  if (hi) r = minimum(r, weak_scalar(*hi, r));
  return r;
}

Tensor negative(const Tensor& x) { return unary(UnaryOp::kNeg, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::kAbs, x); }
Tensor sign(const Tensor& x) { return unary(UnaryOp::kSign, x); }
Tensor exp(const Tensor& x) { return float_unary(UnaryOp::kExp, x); }
Tensor expm1(const Tensor& x) { return float_unary(UnaryOp::kExpm1, x); }
Tensor log(const Tensor& x) { return float_unary(UnaryOp::kLog, x); }
Tensor log1p(const Tensor& x) { return float_unary(UnaryOp::kLog1p, x); }
Tensor sqrt(const Tensor& x) { return float_unary(UnaryOp::kSqrt, x); }
Tensor rsqrt(const Tensor& x) { return float_unary(UnaryOp::kRsqrt, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::kSquare, x); }
Tensor reciprocal(const Tensor& x) { return float_unary(UnaryOp::kReciprocal, x); }
Tensor tanh(const Tensor& x) { return float_unary(UnaryOp::kTanh, x); }
Tensor sigmoid(const Tensor& x) { return float_unary(UnaryOp::kLogistic, x); }
Tensor erf(const Tensor& x) { return float_unary(UnaryOp::kErf, x); }
Tensor erfinv(const Tensor& x) { return float_unary(UnaryOp::kErfInv, x); }
Tensor sin(const Tensor& x) { return float_unary(UnaryOp::kSin, x); }
Tensor cos(const Tensor& x) { return float_unary(UnaryOp::kCos, x); }
Tensor floor(const Tensor& x) { return is_floating(x.dtype()) ? unary(UnaryOp::kFloor, x) : x; }
Tensor ceil(const Tensor& x) { return is_floating(x.dtype()) ? unary(UnaryOp::kCeil, x) : x; }
Tensor round(const Tensor& x) { return is_floating(x.dtype()) ? unary(UnaryOp::kRound, x) : x; }
Tensor logical_not(const Tensor& x) {
  return unary(UnaryOp::kLogicalNot, x.dtype() == bool_ ? x : astype(x, bool_));
}
Tensor isfinite(const Tensor& x) {
  if (!is_floating(x.dtype())) return full(x.shape(), 1, bool_);
  return unary(UnaryOp::kIsFinite, x);
}
namespace {
// Composite activations of 16-bit floats compute in f32 and round once, as XLA's fusions do.
template <typename Fn>
Tensor in_f32(const Tensor& x, Fn&& fn) {
  if (x.dtype() == bfloat16 || x.dtype() == float16)
    return astype(fn(astype(x, float32)), x.dtype());
  return fn(x);
}
}  // namespace

Tensor relu(const Tensor& x) { return maximum(x, zeros({}, x.dtype())); }
Tensor gelu(const Tensor& x_in, bool approximate) {
  if (x_in.dtype() == bfloat16 || x_in.dtype() == float16) {
    return in_f32(x_in, [&](const Tensor& x) { return gelu(x, approximate); });
  }
  const Tensor& x = x_in;
  if (approximate) {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    Tensor inner = (x + x * x * x * 0.044715) * std::sqrt(2.0 / M_PI);
    return x * 0.5 * (tanh(inner) + 1.0);
  }
  return x * 0.5 * (erf(x * M_SQRT1_2) + 1.0);
}
Tensor silu(const Tensor& x) {
  return in_f32(x, [](const Tensor& v) { return v * sigmoid(v); });
}
Tensor softplus(const Tensor& x) {
  // log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for large |x|.
  return in_f32(x, [](const Tensor& v) { return relu(v) + log1p(exp(negative(abs(v)))); });
}

Tensor weak_scalar(double value, const Tensor& like) {
  Dtype d = like.dtype();
  bool integral_value = std::floor(value) == value && std::isfinite(value);
  if (!is_floating(d) && !(integral_value && d != bool_)) d = float32;
  return scalar(value, d);
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return subtract(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return multiply(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return divide(a, b); }
Tensor operator-(const Tensor& a) { return negative(a); }
Tensor operator+(const Tensor& a, double b) { return add(a, weak_scalar(b, a)); }
Tensor operator-(const Tensor& a, double b) { return subtract(a, weak_scalar(b, a)); }
Tensor operator*(const Tensor& a, double b) { return multiply(a, weak_scalar(b, a)); }
Tensor operator/(const Tensor& a, double b) { return divide(a, weak_scalar(b, a)); }
Tensor operator+(double a, const Tensor& b) { return add(weak_scalar(a, b), b); }
Tensor operator-(double a, const Tensor& b) { return subtract(weak_scalar(a, b), b); }
Tensor operator*(double a, const Tensor& b) { return multiply(weak_scalar(a, b), b); }
Tensor operator/(double a, const Tensor& b) { return divide(weak_scalar(a, b), b); }

// ------------------------------------------------------------------ dtype

Tensor astype(const Tensor& x, Dtype dtype) {
  if (x.dtype() == dtype) return x;
  return apply<Convert>({x}, dtype);
}
Tensor bitcast(const Tensor& x, Dtype dtype) {
  if (x.dtype() == dtype) return x;
  return apply<BitcastConvert>({x}, dtype);
}
Tensor stop_gradient(const Tensor& x) { return apply<StopGradient>({x}); }

// ------------------------------------------------------------------ shape

Tensor reshape(const Tensor& x, Shape shape) {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) {
        fail("reshape: cannot reshape ", shape_str(x.shape()), " to ", shape_str(shape),
             ": only one dimension may be -1");
      }
      infer = int(i);
    } else if (shape[i] < 0) {
      fail("reshape: cannot reshape ", shape_str(x.shape()), " to invalid shape ",
           shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.size() % known != 0) {
      fail("reshape: cannot reshape ", shape_str(x.shape()), " to ", shape_str(shape));
    }
    shape[infer] = x.size() / known;
  }
  if (shape == x.shape()) return x;
  return apply<Reshape>({x}, shape);
}

Tensor transpose(const Tensor& x, std::vector<int> perm) {
  if (perm.empty()) {
    for (int i = x.ndim() - 1; i >= 0; --i) perm.push_back(i);
  } else {
    std::vector<bool> seen(x.ndim(), false);
    bool ok = int(perm.size()) == x.ndim();
    for (int& p : perm) {
      if (!ok) break;
      ok = p >= -x.ndim() && p < x.ndim();
      if (ok) {
        p = p < 0 ? p + x.ndim() : p;
        ok = !seen[p];
        seen[p] = true;
      }
    }
    if (!ok) {
      std::string ps;
      for (size_t i = 0; i < perm.size(); ++i) ps += (i ? ", " : "") + std::to_string(perm[i]);
      fail("transpose: [", ps, "] is not a permutation of the axes of ", shape_str(x.shape()));
    }
  }
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == int(i);
  if (identity) return x;
  return apply<Transpose>({x}, perm);
}

Tensor swapaxes(const Tensor& x, int a, int b) {
  std::vector<int> perm = all_axes(x.ndim());
  std::swap(perm[normalize_axis(a, x.ndim(), "swapaxes")],
            perm[normalize_axis(b, x.ndim(), "swapaxes")]);
  return transpose(x, perm);
}

Tensor moveaxis(const Tensor& x, int source, int destination) {
  int s = normalize_axis(source, x.ndim(), "moveaxis");
  int d = normalize_axis(destination, x.ndim(), "moveaxis");
  std::vector<int> perm;
  for (int i = 0; i < x.ndim(); ++i) {
    if (i != s) perm.push_back(i);
  }
  perm.insert(perm.begin() + d, s);
  return transpose(x, perm);
}

Tensor expand_dims(const Tensor& x, int axis) {
  int a = normalize_axis(axis, x.ndim() + 1, "expand_dims");
  Shape s = x.shape();
  s.insert(s.begin() + a, 1);
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, std::vector<int> axes) {
  Shape s;
  if (axes.empty()) {
    for (int64_t d : x.shape()) {
      if (d != 1) s.push_back(d);
    }
  } else {
    axes = normalize_axes(axes, x.ndim(), "squeeze");
    for (int i = 0; i < x.ndim(); ++i) {
      bool drop = std::find(axes.begin(), axes.end(), i) != axes.end();
      if (drop && x.shape()[i] != 1) {
        fail("squeeze: cannot squeeze axis ", i, " of size ", x.shape()[i], " in ",
             shape_str(x.shape()));
      }
      if (!drop) s.push_back(x.shape()[i]);
    }
  }
  return reshape(x, s);
}

Tensor broadcast_in_dim(const Tensor& x, const Shape& shape, const std::vector<int>& dims) {
  return apply<BroadcastInDim>({x}, shape, dims);
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const Shape& xs = x.shape();
  if (xs.size() > shape.size()) {
    fail("broadcast_to: cannot broadcast ", shape_str(xs), " to ", shape_str(shape));
  }
  size_t off = shape.size() - xs.size();
  std::vector<int> dims;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] != 1 && xs[i] != shape[off + i]) {
      fail("broadcast_to: cannot broadcast ", shape_str(xs), " to ", shape_str(shape));
    }
    dims.push_back(int(off + i));
  }
  return broadcast_in_dim(x, shape, dims);
}

Tensor flatten(const Tensor& x) { return reshape(x, {x.size()}); }

Tensor slice(const Tensor& x, const Shape& start, const Shape& limit, Shape strides) {
  if (strides.empty()) strides.assign(x.ndim(), 1);
  if (start == Shape(x.ndim(), 0) && limit == x.shape() && strides == Shape(x.ndim(), 1)) return x;
  return apply<Slice>({x}, start, limit, strides);
}

Tensor slice_axis(const Tensor& x, int axis, int64_t start, int64_t stop, int64_t step) {
  int a = normalize_axis(axis, x.ndim(), "slice_axis");
  int64_t n = x.shape()[a];
  if (step < 1) fail("slice_axis: step must be >= 1, got ", step);
  auto norm = [n](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + n : i, 0, n); };
  start = norm(start);
  stop = std::max(norm(stop), start);
  Shape s0(x.ndim(), 0), lim = x.shape(), st(x.ndim(), 1);
  s0[a] = start;
  lim[a] = stop;
  st[a] = step;
  return slice(x, s0, lim, st);
}

Tensor dynamic_slice(const Tensor& x, const Tensor& starts, const Shape& sizes) {
  return apply<DynamicSlice>({x, starts}, sizes);
}

Tensor dynamic_update_slice(const Tensor& x, const Tensor& update, const Tensor& starts) {
  return apply<DynamicUpdateSlice>({x, astype(update, x.dtype()), starts});
}

Tensor concatenate(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("concatenate: needs at least one operand");
  if (xs[0].ndim() == 0) fail("concatenate: zero-rank operands cannot be concatenated");
  Dtype d = xs[0].dtype();
  for (const Tensor& x : xs) d = promote_types(d, x.dtype());
  std::vector<Tensor> in;
  for (const Tensor& x : xs) {
    if (x.ndim() != xs[0].ndim()) {
      fail("concatenate: all operands need the same rank, got ", shape_str(xs[0].shape()), " and ",
           shape_str(x.shape()));
    }
    in.push_back(astype(x, d));
  }
  if (in.size() == 1) return in[0];
  return apply<Concatenate>(in, normalize_axis(axis, xs[0].ndim(), "concatenate"));
}

Tensor stack(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("stack: needs at least one operand");
  int a = normalize_axis(axis, xs[0].ndim() + 1, "stack");
  std::vector<Tensor> e;
  for (const Tensor& x : xs) {
    if (x.shape() != xs[0].shape()) {
      fail("stack: all operands need the same shape, got ", shape_str(xs[0].shape()), " and ",
           shape_str(x.shape()));
    }
    e.push_back(expand_dims(x, a));
  }
  return concatenate(e, a);
}

std::vector<Tensor> split(const Tensor& x, int sections, int axis) {
  int a = normalize_axis(axis, x.ndim(), "split");
  if (sections <= 0 || x.shape()[a] % sections != 0) {
    fail("split: axis ", a, " of size ", x.shape()[a], " in ", shape_str(x.shape()),
         " does not divide into ", sections, " equal sections");
  }
  std::vector<int64_t> idx;
  int64_t step = x.shape()[a] / sections;
  for (int i = 1; i < sections; ++i) idx.push_back(i * step);
  return split(x, idx, a);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& indices, int axis) {
  int a = normalize_axis(axis, x.ndim(), "split");
  std::vector<Tensor> out;
  int64_t prev = 0;
  for (int64_t i : indices) {
    out.push_back(slice_axis(x, a, prev, std::max(i, prev)));
    prev = std::max(i, prev);
  }
  out.push_back(slice_axis(x, a, prev, x.shape()[a]));
  return out;
}

Tensor pad_general(const Tensor& x, const Tensor& value, const Shape& low, const Shape& high,
                   const Shape& interior) {
  return apply<Pad>({x, astype(value, x.dtype())}, low, high, interior);
}

Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& widths, double value) {
  if (int(widths.size()) != x.ndim()) {
    fail("pad: ", widths.size(), " (low, high) pairs for a tensor of shape ", shape_str(x.shape()));
  }
  Shape low, high, interior(x.ndim(), 0);
  for (auto [l, h] : widths) {
    if (l < 0 || h < 0) fail("pad: widths must be >= 0 (use slice to crop)");
    low.push_back(l);
    high.push_back(h);
  }
  return pad_general(x, scalar(value, x.dtype()), low, high, interior);
}

Tensor take(const Tensor& x, const Tensor& indices, int axis) {
  return apply<Gather>({x, indices}, normalize_axis(axis, x.ndim(), "take"));
}

Tensor take_along_axis(const Tensor& x, const Tensor& indices, int axis) {
  int a = normalize_axis(axis, x.ndim(), "take_along_axis");
  if (indices.ndim() != x.ndim()) {
    fail("take_along_axis: indices of shape ", shape_str(indices.shape()),
         " must have the rank of the operand ", shape_str(x.shape()));
  }
  if (!is_integer(indices.dtype())) fail("take_along_axis: indices must be integers");
  // Broadcast all but the axis, then gather from the flattened operand with flat indices.
  Shape bs = x.shape(), is = indices.shape();
  bs[a] = 1;
  is[a] = 1;
  Shape common = broadcast_shapes(bs, is, "take_along_axis");
  Shape xs = common, ids = common;
  xs[a] = x.shape()[a];
  ids[a] = indices.shape()[a];
  Tensor xb = broadcast_to(x, xs);
  Tensor ib = astype(broadcast_to(indices, ids), int64);
  int64_t n = xs[a];
  // Normalise negatives and clamp before combining into flat indices.
  ib = where(less(ib, zeros({}, int64)), ib + double(n), ib);
  ib = clip(ib, 0.0, double(std::max<int64_t>(n - 1, 0)));
  Strides st = row_major_strides(xs);
  Tensor flat = ib * double(st[a]);
  for (int d = 0; d < int(xs.size()); ++d) {
    if (d == a || xs[d] == 1) continue;
    flat = flat + iota(ids, d, int64) * double(st[d]);
  }
  return take(reshape(xb, {-1}), flat, 0);
}

Tensor scatter_add(const Tensor& x, const Tensor& indices, const Tensor& updates, int axis) {
  return apply<ScatterAdd>({x, indices, astype(updates, x.dtype())},
                           normalize_axis(axis, x.ndim(), "scatter_add"));
}

Tensor one_hot(const Tensor& labels, int64_t num_classes, Dtype dtype) {
  if (!is_integer(labels.dtype())) fail("one_hot: labels must be integers, got ", labels.dtype());
  if (num_classes < 0) {
    fail("one_hot: num_classes must be >= 0, got ", num_classes, " for labels of shape ",
         shape_str(labels.shape()));
  }
  Shape s = labels.shape();
  s.push_back(num_classes);
  Tensor cls = iota(s, int(s.size()) - 1, labels.dtype());
  return astype(equal(broadcast_to(expand_dims(labels, -1), s), cls), dtype);
}

namespace {
Tensor tri_mask(const Tensor& x, int k, bool lower) {
  if (x.ndim() < 2)
    fail(lower ? "tril" : "triu", ": needs at least 2 dimensions, got ", shape_str(x.shape()));
  int64_t n = x.shape(-2), m = x.shape(-1);
  Tensor row = iota({n, m}, 0, int64), col = iota({n, m}, 1, int64);
  Tensor keep = lower ? less_equal(col, row + double(k)) : greater_equal(col, row + double(k));
  return where(keep, x, zeros({}, x.dtype()));
}
}  // namespace
Tensor tril(const Tensor& x, int k) { return tri_mask(x, k, true); }
Tensor triu(const Tensor& x, int k) { return tri_mask(x, k, false); }

// ------------------------------------------------------------------ reductions

Tensor sum(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kSum, x, axes, keepdims, "sum");
}
Tensor prod(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kProd, x, axes, keepdims, "prod");
}
Tensor max(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kMax, x, axes, keepdims, "max");
}
Tensor min(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kMin, x, axes, keepdims, "min");
}
Tensor any(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kAny, x, axes, keepdims, "any");
}
Tensor all(const Tensor& x, std::vector<int> axes, bool keepdims) {
  return reduce(ReduceOp::kAll, x, axes, keepdims, "all");
}

Tensor mean(const Tensor& x, std::vector<int> axes, bool keepdims) {
  std::vector<int> a = reduce_axes(x, axes, "mean");
  int64_t n = 1;
  for (int i : a) n *= x.shape()[i];
  Tensor xf = is_floating(x.dtype()) ? x : astype(x, float32);
  return sum(xf, a, keepdims) / double(n);
}

Tensor var(const Tensor& x, std::vector<int> axes, bool keepdims) {
  std::vector<int> a = reduce_axes(x, axes, "var");
  Tensor xf = is_floating(x.dtype()) ? x : astype(x, float32);
  Tensor centered = xf - mean(xf, a, true);
  return mean(square(centered), a, keepdims);
}

Tensor logsumexp(const Tensor& x, std::vector<int> axes, bool keepdims) {
  std::vector<int> a = reduce_axes(x, axes, "logsumexp");
  Tensor xf = is_floating(x.dtype()) ? x : astype(x, float32);
  Tensor m = stop_gradient(max(xf, a, true));
  // Guard rows that are all -inf (or inf): subtracting them would give NaN.
  m = where(isfinite(m), m, zeros_like(m));
  Tensor r = log(sum(exp(xf - m), a, true)) + m;
  return keepdims ? r : squeeze(r, a);
}

Tensor arg_reduce_composed(const Tensor& x, int axis, bool is_max) {
  const int a = normalize_axis(axis, x.ndim(), is_max ? "argmax" : "argmin");
  const int64_t n = x.shape(a);
  Tensor idx = broadcast_in_dim(arange(n, int32), x.shape(), {a});
  Tensor none = full(x.shape(), double(n), int32);
  Tensor ext = stop_gradient(is_max ? max(x, {a}, true) : min(x, {a}, true));
  Tensor first = min(where(equal(x, ext), idx, none), {a}, true);
  if (is_floating(x.dtype())) {
    Tensor first_nan = min(where(logical_not(equal(x, x)), idx, none), {a}, true);
    first = where(less(first_nan, full_like(first_nan, double(n))), first_nan, first);
  }
  return squeeze(first, {a});
}

Tensor argmax(const Tensor& x, int axis, bool keepdims) {
  int a = normalize_axis(axis, x.ndim(), "argmax");
  Tensor r = apply<ArgReduce>({x}, true, a);
  return keep_dims(r, x, {a}, keepdims);
}
Tensor argmin(const Tensor& x, int axis, bool keepdims) {
  int a = normalize_axis(axis, x.ndim(), "argmin");
  Tensor r = apply<ArgReduce>({x}, false, a);
  return keep_dims(r, x, {a}, keepdims);
}

Tensor cumsum(const Tensor& x, int axis, bool reverse) {
  Tensor in = (x.dtype() == bool_ || x.dtype() == uint8) ? astype(x, int32) : x;
  return apply<Cumsum>({in}, normalize_axis(axis, x.ndim(), "cumsum"), reverse);
}
Tensor sort(const Tensor& x, int axis) {
  return apply<Sort>({x}, normalize_axis(axis, x.ndim(), "sort"), false);
}
Tensor argsort(const Tensor& x, int axis) {
  return apply<Sort>({x}, normalize_axis(axis, x.ndim(), "argsort"), true);
}

TopK top_k(const Tensor& x, int k) {
  if (x.ndim() == 0) fail("top_k: needs at least one dimension");
  int64_t n = x.shape(-1);
  if (k < 0 || k > n) fail("top_k: k=", k, " out of range for last axis of ", shape_str(x.shape()));
  // Stable ascending sort of -x gives descending order with the lowest index first among ties.
  // Integers and bools widen to int64 first, so negation neither wraps nor is undefined.
  Tensor key = is_floating(x.dtype()) ? negative(x) : negative(astype(x, int64));
  Tensor idx = slice_axis(argsort(key, -1), -1, 0, k);
  return {take_along_axis(x, idx, -1), idx};
}

// ------------------------------------------------------------------ fused

Tensor softmax(const Tensor& x, int axis) {
  Tensor xf = is_floating(x.dtype()) ? x : astype(x, float32);
  return apply<Softmax>({xf}, normalize_axis(axis, x.ndim(), "softmax"), false);
}
Tensor log_softmax(const Tensor& x, int axis) {
  Tensor xf = is_floating(x.dtype()) ? x : astype(x, float32);
  return apply<Softmax>({xf}, normalize_axis(axis, x.ndim(), "log_softmax"), true);
}

}  // namespace axlearn
