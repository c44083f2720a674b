// Counter-based random numbers, bit-identical to jax.random with its default PRNG (threefry2x32,
// jax_threefry_partitionable=True): keys, split / fold_in, raw bits, and the samplers built on
// them. Element i of any result depends only on the key and i, never on device count or sharding.
#pragma once

#include <array>
#include <cstdint>

#include "axlearn/core/primitive.h"
#include "axlearn/core/tensor.h"

namespace axlearn {

// Threefry-2x32 (20 rounds, Salmon et al. 2011) of one counter pair under `key`.
std::array<uint32_t, 2> threefry2x32(std::array<uint32_t, 2> key, std::array<uint32_t, 2> counter);

// Threefry-2x32 of the 64-bit counters offset, offset + 1, ... laid out row-major over `shape`
// (counter c is the pair (c >> 32, c & 0xffffffff)), as jax's partitionable scheme does.
// Input: key, uint32 (2,). Output uint32: kXor gives shape with y0 ^ y1 per counter (jax's 32-bit
// random_bits); kPair gives shape + (2,) with (y0, y1) (split, fold_in, 64-bit bits).
class RandomBits : public Primitive {
 public:
  enum class Output : uint8_t { kXor, kPair };
  explicit RandomBits(Shape shape, Output output = Output::kXor, uint64_t offset = 0)
      : shape_(std::move(shape)), output_(output), offset_(offset) {}
  const char* name() const override { return "random_bits"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  // Keys carry no gradient.
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;
  const Shape& shape() const { return shape_; }
  Output output() const { return output_; }
  uint64_t offset() const { return offset_; }

 private:
  Shape shape_;
  Output output_;
  uint64_t offset_;
};

// a * b + c rounded once (16-bit floats: an f32 fma rounded to the dtype). XLA's CPU backend
// contracts jax.random.uniform's f32 / f64 scale-and-shift into an fma, so matching its bits
// needs one. Inputs: three tensors of one float dtype and one shape.
class MulAdd : public Primitive {
 public:
  const char* name() const override { return "mul_add"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
};

// The jax.random API. A key is a uint32 tensor of shape (2,), what jax.random.key_data returns.
// Everything is lazy: results are graph nodes like any other op.
namespace random {

// jax.random.key(seed) with jax_enable_x64: (seed >> 32, seed & 0xffffffff). Seeds below 2**32
// give the same key as jax's default 32-bit mode (which drops the high bits of larger seeds).
Tensor key(uint64_t seed);

// num new keys, shape (num, 2): jax.random.split(key, num).
Tensor split(const Tensor& key, int num = 2);

// A new key mixing in `data`: jax.random.fold_in(key, data).
Tensor fold_in(const Tensor& key, uint32_t data);

// Uniform random bits, jax.random.bits(key, shape, uint{bit_width}): bit_width 32 gives uint32,
// 8 gives uint8 (the low byte of the 32-bit draw), 64 gives int64 holding the uint64 bit pattern
// (there is no uint64 dtype). 16 is not supported (no uint16 dtype).
Tensor random_bits(const Tensor& key, const Shape& shape, int bit_width = 32);

// Values in [minval, maxval) of a float dtype: jax.random.uniform. Bit-exact for every float dtype
// (16-bit dtypes draw 8 / 16 random bits as jax does).
Tensor uniform(const Tensor& key, const Shape& shape, Dtype dtype = float32, double minval = 0,
               double maxval = 1);

// Standard normal values: jax.random.normal, sqrt(2) * erfinv(uniform(nextafter(-1, 0), 1)).
Tensor normal(const Tensor& key, const Shape& shape, Dtype dtype = float32);

// Standard normal values conditioned on lower < x < upper: jax.random.truncated_normal.
Tensor truncated_normal(const Tensor& key, double lower, double upper, const Shape& shape,
                        Dtype dtype = float32);

// True with probability p (bool): jax.random.bernoulli(key, p, shape) with p a Python float in
// jax's default 32-bit mode, i.e. uniform(float32) < float32(p).
Tensor bernoulli(const Tensor& key, double p, const Shape& shape);

// A random permutation of [0, n), int32: jax.random.permutation(key, n) (rounds of stable sorts
// by fresh 32-bit keys).
Tensor permutation(const Tensor& key, int64_t n);

}  // namespace random
}  // namespace axlearn
