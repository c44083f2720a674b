// erfinv for the CPU kernels, written to round exactly like XLA's CPU backend (the one jax uses),
// so that random::normal and random::truncated_normal match jax.random bit for bit:
// - f32: Giles' single-precision polynomial in w = -log1p(-x^2), with XLA's log1p (a Cephes
//   rational for |x| < sqrt(2) - 1, else log(1 + x) by XLA's Cephes-style f32 log) and the fused
//   multiply-adds LLVM forms when it contracts XLA's multiply/add pairs.
// - f64: Giles' double-precision polynomials (three ranges of w), the same log1p rational in f64,
//   and the C library's log for the large-argument branch.
// Checked against jax 0.10.2 on CPU: every f32 input that normal() can produce, and millions of
// f64 inputs including the tails.
#include <cmath>
#include <cstdint>
#include <limits>

#include "axlearn/backends/cpu/elementwise.h"
#include "axlearn/core/dtype.h"

namespace axlearn::cpu {

namespace {

// log(1 + x) ~= x - x^2/2 + x^3 P(x)/Q(x) (Cephes log1p), evaluated by Horner from 0 in T.
constexpr double kLog1pNumerator[7] = {
    4.5270000862445199635215E-5, 4.9854102823193375972212E-1, 6.5787325942061044846969E0,
    2.9911919328553073277375E1,  6.0949667980987787057556E1,  5.7112963590585538103336E1,
    2.0039553499201281259648E1,
};
constexpr double kLog1pDenominator[7] = {
    1.0,
    1.5062909083469192043167E1,
    8.3047565967967209469434E1,
    2.2176239823732856465394E2,
    3.0909872225312059774938E2,
    2.1642788614495947685003E2,
    6.0118660497603843919306E1,
};
// sqrt(2) - 1: below it in magnitude log1p uses the rational, above it log(1 + x).
constexpr double kLog1pRationalBound = 0.41421356237309504880;

template <typename T>
T log1p_rational(T x) {
  T num = 0, den = 0;
  for (int i = 0; i < 7; ++i) {
    num = std::fma(num, x, T(kLog1pNumerator[i]));
    den = std::fma(den, x, T(kLog1pDenominator[i]));
  }
  T x2 = x * x;
  T r = (x * x2) * (num / den);
  r = std::fma(T(-0.5), x2, r);
  return x + r;
}

// XLA's single-precision log: x = 2^e m with m in [sqrt(1/2), sqrt(2)), a degree-8 Cephes
// polynomial in m - 1 and ln 2 split in two parts. Valid for x > 0 (normal or zero handled by the
// callers; subnormals are clamped to the smallest normal as XLA does).
float xla_log_f32(float x) {
  float m = std::fmax(x, 1.17549435e-38f);
  uint32_t u = f32_bits(m);
  float e = 1.0f + float(int32_t(u >> 23) - 0x7f);
  m = f32_from_bits((u & 0x807fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  const float twice = small ? m : 0.0f;
  m = m - 1.0f;
  e = e - (small ? 1.0f : 0.0f);
  m = m + twice;

  const float m2 = m * m;
  const float m3 = m2 * m;
  float y = std::fma(m, 7.0376836292E-2f, -1.1514610310E-1f);
  float y1 = std::fma(m, -1.2420140846E-1f, 1.4249322787E-1f);
  float y2 = std::fma(m, 2.0000714765E-1f, -2.4999993993E-1f);
  y = std::fma(y, m, 1.1676998740E-1f);
  y1 = std::fma(y1, m, -1.6668057665E-1f);
  y2 = std::fma(y2, m, 3.3333331174E-1f);
  y = std::fma(y, m3, y1);
  y = std::fma(y, m3, y2);
  y = std::fma(y, m3, -2.12194440e-4f * e);
  float r = std::fma(-0.5f, m2, m);
  r = r + y;
  return std::fma(0.693359375f, e, r);
}

float xla_log1p_f32(float x) {
  if (std::fabs(x) < float(kLog1pRationalBound)) return log1p_rational(x);
  const float y = x + 1.0f;
  if (y == 0.0f) return -std::numeric_limits<float>::infinity();
  if (!(y > 0.0f)) return std::numeric_limits<float>::quiet_NaN();
  if (y == std::numeric_limits<float>::infinity()) return y;
  return xla_log_f32(y);
}

double xla_log1p_f64(double x) {
  if (std::fabs(x) < kLog1pRationalBound) return log1p_rational(x);
  return std::log(x + 1.0);
}

// Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011): coefficients highest
// order first.
constexpr float kErfInvF32Central[9] = {  // w < 5, in w - 2.5
    2.81022636e-08f, 3.43273939e-07f, -3.5233877e-06f, -4.39150654e-06f, 0.00021858087f,
    -0.00125372503f, -0.00417768164f, 0.246640727f,    1.50140941f};
constexpr float kErfInvF32Tail[9] = {  // w >= 5, in sqrt(w) - 3
    -0.000200214257f, 0.000100950558f, 0.00134934322f, -0.00367342844f, 0.00573950773f,
    -0.0076224613f,   0.00943887047f,  1.00167406f,    2.83297682f};

constexpr double kErfInvF64Central[23] = {  // w < 6.25, in w - 3.125
    -3.6444120640178196996e-21, -1.685059138182016589e-19,  1.2858480715256400167e-18,
    1.115787767802518096e-17,   -1.333171662854620906e-16,  2.0972767875968561637e-17,
    6.6376381343583238325e-15,  -4.0545662729752068639e-14, -8.1519341976054721522e-14,
    2.6335093153082322977e-12,  -1.2975133253453532498e-11, -5.4154120542946279317e-11,
    1.051212273321532285e-09,   -4.1126339803469836976e-09, -2.9070369957882005086e-08,
    4.2347877827932403518e-07,  -1.3654692000834678645e-06, -1.3882523362786468719e-05,
    0.0001867342080340571352,   -0.00074070253416626697512, -0.0060336708714301490533,
    0.24015818242558961693,     1.6536545626831027356};
constexpr double kErfInvF64Middle[19] = {  // 6.25 <= w < 16, in sqrt(w) - 3.25
    2.2137376921775787049e-09, 9.0756561938885390979e-08, -2.7517406297064545428e-07,
    1.8239629214389227755e-08, 1.5027403968909827627e-06, -4.013867526981545969e-06,
    2.9234449089955446044e-06, 1.2475304481671778723e-05, -4.7318229009055733981e-05,
    6.8284851459573175448e-05, 2.4031110387097893999e-05, -0.0003550375203628474796,
    0.00095328937973738049703, -0.0016882755560235047313, 0.0024914420961078508066,
    -0.0037512085075692412107, 0.005370914553590063617,   1.0052589676941592334,
    3.0838856104922207635};
constexpr double kErfInvF64Tail[17] = {  // w >= 16, in sqrt(w) - 5
    -2.7109920616438573243e-11, -2.5556418169965252055e-10, 1.5076572693500548083e-09,
    -3.7894654401267369937e-09, 7.6157012080783393804e-09,  -1.4960026627149240478e-08,
    2.9147953450901080826e-08,  -6.7711997758452339498e-08, 2.2900482228026654717e-07,
    -9.9298272942317002539e-07, 4.5260625972231537039e-06,  -1.9681778105531670567e-05,
    7.5995277030017761139e-05,  -0.00021503011930044477347, -0.00013871931833623122026,
    1.0103004648645343977,      4.8499064014085844221};

template <typename T, int N>
T horner(const T (&c)[N], T x) {
  T p = c[0];
  for (int i = 1; i < N; ++i) p = std::fma(p, x, c[i]);
  return p;
}

}  // namespace

float erfinv_f32(float x) {
  const float w = -xla_log1p_f32(x * -x);
  const float p =
      w < 5.0f ? horner(kErfInvF32Central, w - 2.5f) : horner(kErfInvF32Tail, std::sqrt(w) - 3.0f);
  return std::fabs(x) == 1.0f ? x * std::numeric_limits<float>::infinity() : p * x;
}

double erfinv_f64(double x) {
  const double w = -xla_log1p_f64(x * -x);
  double p;
  if (w < 6.25) {
    p = horner(kErfInvF64Central, w - 3.125);
  } else if (w < 16.0) {
    p = horner(kErfInvF64Middle, std::sqrt(w) - 3.25);
  } else {
    p = horner(kErfInvF64Tail, std::sqrt(w) - 5.0);
  }
  return std::fabs(x) == 1.0 ? x * std::numeric_limits<double>::infinity() : p * x;
}

}  // namespace axlearn::cpu
