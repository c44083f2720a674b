#include "axlearn/core/dtype.h"

#include <cmath>

#include "axlearn/core/error.h"

namespace axlearn {

size_t size_of(Dtype d) {
  switch (d) {
    case Dtype::kBool:
    case Dtype::kU8:
      return 1;
    case Dtype::kF16:
    case Dtype::kBF16:
      return 2;
    case Dtype::kU32:
    case Dtype::kI32:
    case Dtype::kF32:
      return 4;
    case Dtype::kI64:
    case Dtype::kF64:
      return 8;
  }
  return 0;
}

const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::kBool:
      return "bool";
    case Dtype::kU8:
      return "uint8";
    case Dtype::kU32:
      return "uint32";
    case Dtype::kI32:
      return "int32";
    case Dtype::kI64:
      return "int64";
    case Dtype::kF16:
      return "float16";
    case Dtype::kBF16:
      return "bfloat16";
    case Dtype::kF32:
      return "float32";
    case Dtype::kF64:
      return "float64";
  }
  return "?";
}

Dtype dtype_from_name(const std::string& n) {
  for (int i = 0; i < kNumDtypes; ++i) {
    if (n == dtype_name(Dtype(i))) return Dtype(i);
  }
  if (n == "f32") return float32;
  if (n == "bf16") return bfloat16;
  if (n == "f16") return float16;
  if (n == "f64") return float64;
  if (n == "i32") return int32;
  if (n == "i64") return int64;
  if (n == "u8") return uint8;
  if (n == "u32") return uint32;
  fail("unknown dtype '", n,
       "' (expected one of float32, bfloat16, float16, float64, int32, int64, uint8, uint32, "
       "bool)");
}

namespace {
// Position of each dtype in jax's promotion lattice, as (kind, rank):
// kind 0 bool, 1 unsigned, 2 signed, 3 float.
int kind(Dtype d) {
  if (d == Dtype::kBool) return 0;
  if (is_unsigned(d)) return 1;
  if (is_integer(d)) return 2;
  return 3;
}
int bits(Dtype d) { return int(size_of(d) * 8); }
}  // namespace

Dtype promote_types(Dtype a, Dtype b) {
  if (a == b) return a;
  if (a == bool_) return b;
  if (b == bool_) return a;
  const int ka = kind(a), kb = kind(b);
  if (ka == 3 || kb == 3) {
    if (ka != 3) return b;  // integer with float: the float (jax: int64 + bfloat16 -> bfloat16)
    if (kb != 3) return a;
    if (bits(a) == bits(b)) return float32;  // float16 with bfloat16
    return bits(a) > bits(b) ? a : b;
  }
  if (ka == kb) return bits(a) > bits(b) ? a : b;
  // One signed, one unsigned: a signed type wider than the unsigned one, else int64.
  Dtype s = ka == 2 ? a : b, u = ka == 2 ? b : a;
  return bits(s) > bits(u) ? s : int64;
}

float f64_to_f32_round_to_odd(double v) {
  float f = static_cast<float>(v);
  if (std::isnan(v) || (std::isinf(f) && std::isinf(v)) || double(f) == v) return f;
  // Truncate toward zero, then mark inexactness in the last bit.
  if (std::fabs(double(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
  return f32_from_bits(f32_bits(f) | 1u);
}

uint16_t float16_t::from_float(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {
    // Subnormal half (or zero): value = a_float; scale to units of 2^-24 with RNE.
    if (a < 0x33000000u) return uint16_t(sign);  // below half the smallest subnormal
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    int shift = 126 - int(a >> 23);  // 113 - e + 13
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return uint16_t(sign | q);
  }
  // Normal: rebias exponent (127 -> 15) and round the 13 dropped bits to nearest even.
  uint32_t r = a - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

float float16_t::to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return f32_from_bits(sign);
    float v = std::ldexp(float(m), -24);
    return sign ? -v : v;
  }
  return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

}  // namespace axlearn
