// User-facing operations with numpy / jax.numpy names and semantics: broadcasting, type promotion
// (Python-style scalars are weakly typed: `x * 2.0` keeps x's float dtype), negative axes.
// All are compositions of the primitives in primitives.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "axlearn/core/tensor.h"

namespace axlearn {

// ---- creation ----
Tensor array(const std::vector<float>& values, const Shape& shape, Dtype dtype = float32);
Tensor array(const std::vector<double>& values, const Shape& shape, Dtype dtype = float64);
Tensor array(const std::vector<int32_t>& values, const Shape& shape, Dtype dtype = int32);
Tensor array(const std::vector<int64_t>& values, const Shape& shape, Dtype dtype = int64);
Tensor array(const std::vector<uint32_t>& values, const Shape& shape, Dtype dtype = uint32);
Tensor array(const std::vector<bool>& values, const Shape& shape);
// Copies raw elements of `dtype` laid out row-major.
Tensor from_buffer(const void* data, const Shape& shape, Dtype dtype);
Tensor scalar(double value, Dtype dtype = float32);
Tensor full(const Shape& shape, double value, Dtype dtype = float32);
Tensor zeros(const Shape& shape, Dtype dtype = float32);
Tensor ones(const Shape& shape, Dtype dtype = float32);
Tensor zeros_like(const Tensor& x);
Tensor ones_like(const Tensor& x);
Tensor full_like(const Tensor& x, double value);
Tensor arange(int64_t start, int64_t stop, int64_t step = 1, Dtype dtype = int32);
Tensor arange(int64_t stop, Dtype dtype = int32);
Tensor iota(const Shape& shape, int dimension, Dtype dtype = int32);
Tensor eye(int64_t n, Dtype dtype = float32);

// ---- elementwise (broadcasting, promoting) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor subtract(const Tensor& a, const Tensor& b);
Tensor multiply(const Tensor& a, const Tensor& b);
Tensor divide(const Tensor& a, const Tensor& b);  // true division: ints promote to float32
Tensor floor_divide(const Tensor& a, const Tensor& b);
Tensor remainder(const Tensor& a, const Tensor& b);  // numpy sign convention (sign of b)
Tensor power(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor arctan2(const Tensor& a, const Tensor& b);
Tensor equal(const Tensor& a, const Tensor& b);
Tensor not_equal(const Tensor& a, const Tensor& b);
Tensor less(const Tensor& a, const Tensor& b);
Tensor less_equal(const Tensor& a, const Tensor& b);
Tensor greater(const Tensor& a, const Tensor& b);
Tensor greater_equal(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_xor(const Tensor& a, const Tensor& b);
Tensor bitwise_and(const Tensor& a, const Tensor& b);
Tensor bitwise_or(const Tensor& a, const Tensor& b);
Tensor bitwise_xor(const Tensor& a, const Tensor& b);
Tensor left_shift(const Tensor& a, const Tensor& b);
Tensor right_shift_logical(const Tensor& a, const Tensor& b);
// where(cond, x, y): cond is converted to bool; x and y promote.
Tensor where(const Tensor& cond, const Tensor& x, const Tensor& y);
Tensor clip(const Tensor& x, std::optional<double> lo, std::optional<double> hi);

Tensor negative(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sign(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor expm1(const Tensor& x);
Tensor log(const Tensor& x);
Tensor log1p(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);  // lax.logistic
Tensor erf(const Tensor& x);
Tensor erfinv(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor floor(const Tensor& x);
Tensor ceil(const Tensor& x);
Tensor round(const Tensor& x);  // half to even, as jnp.round
Tensor logical_not(const Tensor& x);
Tensor isfinite(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x, bool approximate = false);
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x);

// Scalar right-hand sides are weakly typed (they take the tensor's dtype when it is a float, or
// when both are integers).
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
// A scalar tensor weakly typed against `like`.
Tensor weak_scalar(double value, const Tensor& like);

// ---- dtype ----
Tensor astype(const Tensor& x, Dtype dtype);
Tensor bitcast(const Tensor& x, Dtype dtype);
Tensor stop_gradient(const Tensor& x);

// ---- shape ----
Tensor reshape(const Tensor& x, Shape shape);                   // one dimension may be -1
Tensor transpose(const Tensor& x, std::vector<int> perm = {});  // default: reverse
Tensor swapaxes(const Tensor& x, int a, int b);
Tensor moveaxis(const Tensor& x, int source, int destination);
Tensor expand_dims(const Tensor& x, int axis);
Tensor squeeze(const Tensor& x, std::vector<int> axes = {});
Tensor broadcast_to(const Tensor& x, const Shape& shape);
Tensor broadcast_in_dim(const Tensor& x, const Shape& shape, const std::vector<int>& dims);
Tensor flatten(const Tensor& x);
Tensor slice(const Tensor& x, const Shape& start, const Shape& limit, Shape strides = {});
// Slices [start, stop) with step along one axis; negative start/stop count from the end.
Tensor slice_axis(const Tensor& x, int axis, int64_t start, int64_t stop, int64_t step = 1);
Tensor dynamic_slice(const Tensor& x, const Tensor& starts, const Shape& sizes);
Tensor dynamic_update_slice(const Tensor& x, const Tensor& update, const Tensor& starts);
Tensor concatenate(const std::vector<Tensor>& xs, int axis = 0);
Tensor stack(const std::vector<Tensor>& xs, int axis = 0);
// Splits into `sections` equal parts, or at the given indices.
std::vector<Tensor> split(const Tensor& x, int sections, int axis = 0);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& indices, int axis = 0);
// Pads each axis with (low, high) elements of `value`.
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& widths,
           double value = 0);
Tensor pad_general(const Tensor& x, const Tensor& value, const Shape& low, const Shape& high,
                   const Shape& interior);
Tensor take(const Tensor& x, const Tensor& indices, int axis = 0);
Tensor take_along_axis(const Tensor& x, const Tensor& indices, int axis);
Tensor scatter_add(const Tensor& x, const Tensor& indices, const Tensor& updates, int axis = 0);
Tensor one_hot(const Tensor& labels, int64_t num_classes, Dtype dtype = float32);
Tensor tril(const Tensor& x, int k = 0);
Tensor triu(const Tensor& x, int k = 0);

// ---- reductions (axes empty = all) ----
Tensor sum(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor mean(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor var(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor max(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor min(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor prod(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor any(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor all(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor logsumexp(const Tensor& x, std::vector<int> axes = {}, bool keepdims = false);
Tensor argmax(const Tensor& x, int axis = -1, bool keepdims = false);
Tensor argmin(const Tensor& x, int axis = -1, bool keepdims = false);
// The same as argmax / argmin (first index of the extreme; NaN counts as the extreme) composed
// from reductions (max or min, then the smallest index holding it) instead of one ArgReduce
// pass: what runs when the axis is split across devices.
Tensor arg_reduce_composed(const Tensor& x, int axis, bool is_max);
Tensor cumsum(const Tensor& x, int axis = -1, bool reverse = false);
Tensor sort(const Tensor& x, int axis = -1);
Tensor argsort(const Tensor& x, int axis = -1);
// Largest k along the last axis, descending: (values, int32 indices).
struct TopK {
  Tensor values, indices;
};
TopK top_k(const Tensor& x, int k);

// ---- linear algebra ----
Tensor dot_general(const Tensor& a, const Tensor& b, const std::vector<int>& lhs_contract,
                   const std::vector<int>& rhs_contract, const std::vector<int>& lhs_batch = {},
                   const std::vector<int>& rhs_batch = {});
// numpy matmul: 1-D operands promoted, leading batch dims broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
// einsum with explicit output ("bij,bjk->bik"); "..." is supported.
Tensor einsum(const std::string& spec, const std::vector<Tensor>& operands);
Tensor einsum(const std::string& spec, const Tensor& a, const Tensor& b);
Tensor einsum(const std::string& spec, const Tensor& a);

// ---- fused ----
Tensor softmax(const Tensor& x, int axis = -1);
Tensor log_softmax(const Tensor& x, int axis = -1);

}  // namespace axlearn
