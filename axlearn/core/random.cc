// jax.random's threefry API as compositions of RandomBits and ordinary ops. Each sampler follows
// jax's formula step by step (jax/_src/random/core.py) so the bits agree; host-side scalars are
// rounded in the sampler's dtype exactly as XLA folds the same constants.
#include "axlearn/core/random.h"

#include <cmath>
#include <limits>

#include "axlearn/core/ops.h"

namespace axlearn {

// ------------------------------------------------------------------ primitives

OutputSpec RandomBits::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 1) fail("random_bits: expected 1 input (the key), got ", in.size());
  const Tensor& key = in[0];
  if (key.dtype() != uint32 || key.shape() != Shape{2}) {
    fail("random_bits: the key must be uint32 of shape (2,), got ", dtype_name(key.dtype()), " ",
         shape_str(key.shape()));
  }
  for (int64_t d : shape_) {
    if (d < 0) fail("random_bits: negative dimension in shape ", shape_str(shape_));
  }
  Shape out = shape_;
  if (output_ == Output::kPair) out.push_back(2);
  return {out, uint32};
}

std::vector<Tensor> RandomBits::vjp(const std::vector<Tensor>&, const Tensor&,
                                    const Tensor&) const {
  return {Tensor()};
}

bool RandomBits::equals(const Primitive& o) const {
  auto* p = dynamic_cast<const RandomBits*>(&o);
  return p && p->shape_ == shape_ && p->output_ == output_ && p->offset_ == offset_;
}

size_t RandomBits::hash() const {
  size_t h = 0x9e3779b97f4a7c15ull ^ (size_t(output_) << 1) ^ std::hash<uint64_t>()(offset_);
  for (int64_t d : shape_) h = h * 1000003u ^ std::hash<int64_t>()(d);
  return h;
}

void RandomBits::print(std::ostream& os) const {
  os << name() << "[shape=" << shape_str(shape_) << (output_ == Output::kPair ? ", pair" : "")
     << ", offset=" << offset_ << "]";
}

OutputSpec MulAdd::infer(const std::vector<Tensor>& in) const {
  if (in.size() != 3) fail("mul_add: expected 3 inputs, got ", in.size());
  for (const Tensor& t : in) {
    if (t.shape() != in[0].shape() || t.dtype() != in[0].dtype()) {
      fail("mul_add: inputs must share shape and dtype, got ", shape_str(in[0].shape()), " ",
           dtype_name(in[0].dtype()), ", ", shape_str(in[1].shape()), " ",
           dtype_name(in[1].dtype()), " and ", shape_str(in[2].shape()), " ",
           dtype_name(in[2].dtype()));
    }
  }
  if (!is_floating(in[0].dtype())) {
    fail("mul_add: expects floating-point inputs, got ", dtype_name(in[0].dtype()));
  }
  return {in[0].shape(), in[0].dtype()};
}

std::vector<Tensor> MulAdd::vjp(const std::vector<Tensor>& in, const Tensor&,
                                const Tensor& ct) const {
  return {multiply(ct, in[1]), multiply(ct, in[0]), ct};
}

namespace random {

namespace {

void check_key(const Tensor& key, const char* op) {
  if (key.dtype() != uint32 || key.shape() != Shape{2}) {
    fail("random.", op, ": a key is a uint32 tensor of shape (2,), got ", dtype_name(key.dtype()),
         " ", shape_str(key.shape()));
  }
}

void check_shape(const Shape& shape, const char* op) {
  for (int64_t d : shape) {
    if (d < 0) fail("random.", op, ": negative dimension in shape ", shape_str(shape));
  }
}

void check_float(Dtype dtype, const char* op) {
  if (!is_floating(dtype)) fail("random.", op, ": dtype must be a float dtype, got ", dtype);
}

Tensor bits_node(const Tensor& key, const Shape& shape, RandomBits::Output output,
                 uint64_t offset = 0) {
  return Tensor::make(std::make_shared<RandomBits>(shape, output, offset), {key});
}

Tensor u32(uint32_t v) { return array(std::vector<uint32_t>{v}, {}); }

// ---- host scalars rounded like XLA's constant folding in `dtype` (16-bit floats compute in f32
// and round after each op) ----

double round_to(double v, Dtype d) {
  return dispatch_dtype(d, [&](auto t) {
    using T = decltype(t);
    return cast_value<double>(cast_value<T>(v));
  });
}

double sub_in(double a, double b, Dtype d) {
  if (d == float64) return a - b;
  return round_to(double(float(a) - float(b)), d);
}

double div_in(double a, double b, Dtype d) {
  if (d == float64) return a / b;
  return round_to(double(float(a) / float(b)), d);
}

// The next representable value of dtype `d` after v (exactly representable in d) toward `to`.
double next_after(double v, double to, Dtype d) {
  if (d == float64) return std::nextafter(v, to);
  if (d == float32) return std::nextafter(float(v), float(to));
  // 16-bit floats: step the bit pattern (sign-magnitude) one unit toward `to`.
  const bool is_bf16 = d == bfloat16;
  uint16_t bits = is_bf16 ? bfloat16_t(float(v)).bits : float16_t(float(v)).bits;
  auto value = [&](uint16_t b) {
    return is_bf16 ? double(f32_from_bits(uint32_t(b) << 16)) : double(float16_t::to_float(b));
  };
  if (v == to || std::isnan(v) || std::isnan(to)) return v;
  if (v == 0) return value(to > 0 ? 1 : 0x8001);
  const bool away_from_zero = (to > v) == (v > 0);
  return value(uint16_t(away_from_zero ? bits + 1 : bits - 1));
}

// erf of a constant, as XLA's constant folding (the HLO evaluator) computes it: the C library's
// erf in the dtype, 16-bit floats through float. jax folds erf(lower / sqrt2) because lower and
// upper are Python scalars, so the CPU kernel's erf approximation never runs on them.
double erf_in(double x, Dtype d) {
  if (d == float64) return std::erf(x);
  return round_to(double(std::erf(float(x))), d);
}

// uint32 (shape, 2) pair of threefry outputs -> the (shape) half `i`.
Tensor pair_half(const Tensor& pair, int i, const Shape& shape) {
  return reshape(slice_axis(pair, -1, i, i + 1), shape);
}

// Floats in [0, 1) of `dtype` from random bits, as jax's _uniform does: the top mantissa bits of
// a draw under the exponent of 1.0, minus 1. bf16 draws 8 bits and f16 16 bits (the low bits of
// the 32-bit draw); f32 and f64 draw 32 and 64.
Tensor unit_floats(const Tensor& key, const Shape& shape, Dtype dtype) {
  if (dtype == float32) {
    Tensor mant = right_shift_logical(random_bits(key, shape, 32), u32(32 - 23));
    return bitcast(bitwise_or(mant, u32(0x3f800000u)), float32) - 1.0;
  }
  if (dtype == float64) {
    // 52 mantissa bits of (y0 << 32 | y1) >> 12, without a uint64 dtype: (y0 << 20) | (y1 >> 12).
    Tensor pair = bits_node(key, shape, RandomBits::Output::kPair);
    Tensor hi = astype(pair_half(pair, 0, shape), int64);
    Tensor lo = astype(right_shift_logical(pair_half(pair, 1, shape), u32(12)), int64);
    Tensor mant = bitwise_or(left_shift(hi, array(std::vector<int64_t>{20}, {})), lo);
    Tensor one = array(std::vector<int64_t>{0x3ff0000000000000ll}, {});
    return bitcast(bitwise_or(mant, one), float64) - 1.0;
  }
  // 16-bit: m mantissa bits from the low rng_bits of the draw; m * 2^-nmant is exact in dtype.
  const int rng_bits = dtype == bfloat16 ? 8 : 16;
  const int nmant = dtype == bfloat16 ? 7 : 10;
  Tensor low = bitwise_and(random_bits(key, shape, 32), u32((1u << rng_bits) - 1));
  Tensor m = right_shift_logical(low, u32(uint32_t(rng_bits - nmant)));
  return astype(astype(m, float32) * std::ldexp(1.0, -nmant), dtype);
}

// jax's max(lo, floats * (hi - lo) + lo), with the multiply-add fused for f32 / f64 as XLA's CPU
// backend emits it. lo and hi are exactly representable in the dtype of `floats`.
Tensor scale_shift(const Tensor& floats, double lo, double hi) {
  const Dtype d = floats.dtype();
  if (lo == 0 && hi == 1) return floats;  // fma(f, 1, 0) = f >= 0
  const Shape& shape = floats.shape();
  Tensor lo_t = scalar(lo, d);
  Tensor scale = scalar(sub_in(hi, lo, d), d);
  Tensor r;
  if (d == float32 || d == float64) {
    r = Tensor::make(std::make_shared<MulAdd>(),
                     {floats, broadcast_to(scale, shape), broadcast_to(lo_t, shape)});
  } else {
    // 16-bit floats: XLA rounds the product to the dtype before adding (no fusion).
    r = add(multiply(floats, scale), lo_t);
  }
  return maximum(lo_t, r);
}

Tensor key_at(const Tensor& keys, int64_t i) { return reshape(slice_axis(keys, 0, i, i + 1), {2}); }

}  // namespace

Tensor key(uint64_t seed) {
  return array(std::vector<uint32_t>{uint32_t(seed >> 32), uint32_t(seed)}, {2});
}

Tensor split(const Tensor& key, int num) {
  check_key(key, "split");
  if (num < 0) fail("random.split: num must be >= 0, got ", num);
  return bits_node(key, {num}, RandomBits::Output::kPair);
}

Tensor fold_in(const Tensor& key, uint32_t data) {
  check_key(key, "fold_in");
  // jax hashes the counter pair (0, data): the pair output at counter `data` of a scalar draw.
  return bits_node(key, {}, RandomBits::Output::kPair, data);
}

Tensor random_bits(const Tensor& key, const Shape& shape, int bit_width) {
  check_key(key, "random_bits");
  check_shape(shape, "random_bits");
  switch (bit_width) {
    case 32:
      return bits_node(key, shape, RandomBits::Output::kXor);
    case 8:
      return astype(bitwise_and(bits_node(key, shape, RandomBits::Output::kXor), u32(0xff)), uint8);
    case 64: {
      Tensor pair = bits_node(key, shape, RandomBits::Output::kPair);
      Tensor hi = astype(pair_half(pair, 0, shape), int64);
      Tensor lo = astype(pair_half(pair, 1, shape), int64);
      return bitwise_or(left_shift(hi, array(std::vector<int64_t>{32}, {})), lo);
    }
    default:
      fail("random.random_bits: bit_width must be 8, 32 or 64, got ", bit_width,
           " (there is no uint16 dtype)");
  }
}

Tensor uniform(const Tensor& key, const Shape& shape, Dtype dtype, double minval, double maxval) {
  check_key(key, "uniform");
  check_shape(shape, "uniform");
  check_float(dtype, "uniform");
  return scale_shift(unit_floats(key, shape, dtype), round_to(minval, dtype),
                     round_to(maxval, dtype));
}

Tensor normal(const Tensor& key, const Shape& shape, Dtype dtype) {
  check_key(key, "normal");
  check_shape(shape, "normal");
  check_float(dtype, "normal");
  // Open interval (-1, 1) so that erfinv stays finite.
  Tensor u = scale_shift(unit_floats(key, shape, dtype), next_after(-1, 0, dtype), 1);
  return multiply(scalar(std::sqrt(2.0), dtype), erfinv(u));
}

Tensor truncated_normal(const Tensor& key, double lower, double upper, const Shape& shape,
                        Dtype dtype) {
  check_key(key, "truncated_normal");
  check_shape(shape, "truncated_normal");
  check_float(dtype, "truncated_normal");
  const double sqrt2 = round_to(std::sqrt(2.0), dtype);
  const double lo = round_to(lower, dtype), hi = round_to(upper, dtype);
  // Draw u uniformly in (erf(lo / sqrt2), erf(hi / sqrt2)) and invert the normal CDF.
  const double a = erf_in(div_in(lo, sqrt2, dtype), dtype);
  const double b = erf_in(div_in(hi, sqrt2, dtype), dtype);
  Tensor u = scale_shift(unit_floats(key, shape, dtype), a, b);
  Tensor out = multiply(scalar(sqrt2, dtype), erfinv(u));
  // Rounding (or u == a) can land on or past a bound: clip into the open interval.
  const double inf = std::numeric_limits<double>::infinity();
  out = maximum(scalar(next_after(lo, inf, dtype), dtype), out);
  return minimum(scalar(next_after(hi, -inf, dtype), dtype), out);
}

Tensor bernoulli(const Tensor& key, double p, const Shape& shape) {
  check_key(key, "bernoulli");
  check_shape(shape, "bernoulli");
  return less(uniform(key, shape, float32), scalar(p, float32));
}

Tensor permutation(const Tensor& key, int64_t n) {
  check_key(key, "permutation");
  if (n < 0) fail("random.permutation: n must be >= 0, got ", n);
  if (n > std::numeric_limits<int32_t>::max()) {
    fail("random.permutation: n = ", n, " does not fit the int32 result");
  }
  // jax's heuristic: enough rounds of 32-bit sort keys that collisions are unlikely to bias.
  const int rounds = int(std::ceil(3 * std::log(double(std::max<int64_t>(1, n))) /
                                   std::log(double(std::numeric_limits<uint32_t>::max()))));
  Tensor x = arange(n, int32);
  Tensor k = key;
  for (int r = 0; r < rounds; ++r) {
    Tensor keys = split(k);
    k = key_at(keys, 0);
    Tensor sort_keys = random_bits(key_at(keys, 1), {n});
    x = take(x, argsort(sort_keys));  // argsort is stable, as lax.sort_key_val
  }
  return x;
}

}  // namespace random
}  // namespace axlearn
