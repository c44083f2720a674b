// CPU kernels of the random primitives: Threefry-2x32 over a range of 64-bit counters (a
// straight-line loop body the compiler vectorises; OpenMP across cores for large draws) and the
// fused multiply-add the samplers use.
#include <algorithm>
#include <cmath>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/random.h"

namespace axlearn {

namespace {

inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

// Threefry-2x32, 20 rounds: five groups of four mix rounds, each group followed by a key
// injection (key words k0, k1 and k2 = k0 ^ k1 ^ 0x1BD11BDA, rotating, plus the group number).
inline void threefry_rounds(uint32_t k0, uint32_t k1, uint32_t& x0, uint32_t& x1) {
  const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};
  static constexpr int kRot[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};
  x0 += ks[0];
  x1 += ks[1];
#define AXLEARN_MIX(r) \
  x0 += x1;            \
  x1 = rotl(x1, r) ^ x0;
#define AXLEARN_GROUP(g)        \
  AXLEARN_MIX(kRot[(g) % 2][0]) \
  AXLEARN_MIX(kRot[(g) % 2][1]) \
  AXLEARN_MIX(kRot[(g) % 2][2]) \
  AXLEARN_MIX(kRot[(g) % 2][3]) \
  x0 += ks[((g) + 1) % 3];      \
  x1 += ks[((g) + 2) % 3] + uint32_t((g) + 1);
  AXLEARN_GROUP(0)
  AXLEARN_GROUP(1)
  AXLEARN_GROUP(2)
  AXLEARN_GROUP(3)
  AXLEARN_GROUP(4)
#undef AXLEARN_GROUP
#undef AXLEARN_MIX
}

// Above this many counters the draw is split across OpenMP threads.
constexpr int64_t kParallelCounters = int64_t(1) << 15;

}  // namespace

std::array<uint32_t, 2> threefry2x32(std::array<uint32_t, 2> key, std::array<uint32_t, 2> counter) {
  uint32_t x0 = counter[0], x1 = counter[1];
  threefry_rounds(key[0], key[1], x0, x1);
  return {x0, x1};
}

void RandomBits::eval_cpu(const std::vector<Array>& in, Array& out) const {
  const Array key = contiguous(in[0]);
  const uint32_t k0 = key.data<uint32_t>()[0], k1 = key.data<uint32_t>()[1];
  out = Array::empty(out.shape, uint32);
  uint32_t* y = out.data<uint32_t>();
  const int64_t n = num_elements(shape_);
  const uint64_t offset = offset_;
  // Counter c is the pair (c >> 32, c & 0xffffffff); two loops so each vectorises.
  if (output_ == Output::kPair) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelCounters)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t c = offset + uint64_t(i);
      uint32_t x0 = uint32_t(c >> 32), x1 = uint32_t(c);
      threefry_rounds(k0, k1, x0, x1);
      y[2 * i] = x0;
      y[2 * i + 1] = x1;
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelCounters)
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t c = offset + uint64_t(i);
      uint32_t x0 = uint32_t(c >> 32), x1 = uint32_t(c);
      threefry_rounds(k0, k1, x0, x1);
      y[i] = x0 ^ x1;
    }
  }
}

void MulAdd::eval_cpu(const std::vector<Array>& in, Array& out) const {
  out = Array::empty(out.shape, out.dtype);
  const int64_t n = out.size();
  auto run = [&](auto zero) {
    using C = decltype(zero);
    cpu::parallel_chunks(n, 1 << 14, [&](int64_t begin, int64_t end) {
      alignas(64) C a[cpu::kChunk], b[cpu::kChunk], c[cpu::kChunk];
      for (int64_t s = begin; s < end; s += cpu::kChunk) {
        const int64_t len = std::min(cpu::kChunk, end - s);
        cpu::load_chunk<C>(in[0], s, len, a);
        cpu::load_chunk<C>(in[1], s, len, b);
        cpu::load_chunk<C>(in[2], s, len, c);
        for (int64_t i = 0; i < len; ++i) a[i] = std::fma(a[i], b[i], c[i]);
        cpu::store_chunk<C>(a, out.dtype, out.raw(), s, len);
      }
    });
  };
  if (out.dtype == float64) {
    run(double{});
  } else {
    run(float{});
  }
}

}  // namespace axlearn
