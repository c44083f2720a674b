// Vectorisable single-precision exp, log and tanh (Cephes-style range reduction and
// polynomials). Inline so that loops over them vectorise; a few ulp of error at most.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "axlearn/core/dtype.h"

namespace axlearn::cpu {

// Range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial for e^r (Cephes
// coefficients) and a two-step scale by 2^n so results down to the subnormal range are exact.
inline float exp_impl(float x) {
  float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * z + r + 1.0f;
  int32_t ni = int32_t(n);
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float s1 = f32_from_bits(uint32_t(n1 + 127) << 23);
  float s2 = f32_from_bits(uint32_t(n2 + 127) << 23);
  y = y * s1 * s2;
  return x != x ? x : y;
}

inline float log_impl(float x) {
  uint32_t u = f32_bits(x);
  // Subnormals: scale into the normal range first.
  bool sub = x < 1.17549435e-38f;
  float xs = sub ? x * 8388608.0f : x;
  u = f32_bits(xs);
  int32_t e = int32_t((u >> 23) & 0xff) - 126 - (sub ? 23 : 0);
  float m = f32_from_bits((u & 0x807fffffu) | 0x3f000000u);  // [0.5, 1)
  bool small = m < 0.707106781186547524f;
  float ef = float(small ? e - 1 : e);
  float t = small ? m + m - 1.0f : m - 1.0f;
  float z = t * t;
  float p = 7.0376836292e-2f;
  p = p * t - 1.1514610310e-1f;
  p = p * t + 1.1676998740e-1f;
  p = p * t - 1.2420140846e-1f;
  p = p * t + 1.4249322787e-1f;
  p = p * t - 1.6668057665e-1f;
  p = p * t + 2.0000714765e-1f;
  p = p * t - 2.4999993993e-1f;
  p = p * t + 3.3333331174e-1f;
  float y = p * t * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = t + y;
  r = r + ef * 0.693359375f;
  if (x == 0.0f) r = -std::numeric_limits<float>::infinity();
  if (x < 0.0f || x != x) r = std::numeric_limits<float>::quiet_NaN();
  if (x == std::numeric_limits<float>::infinity()) r = x;
  return r;
}

inline float tanh_impl(float x) {
  float a = std::fabs(x);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  float e = exp_impl(2.0f * (a < 10.0f ? a : 10.0f));
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = std::copysign(big, x);
  return a < 0.625f ? small : big;
}

}  // namespace axlearn::cpu
