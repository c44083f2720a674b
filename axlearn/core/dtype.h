// Element types: the closed set of dtypes, the 16-bit float storage types with
// round-to-nearest-even conversion, and jax.numpy's type-promotion lattice.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>

namespace axlearn {

enum class Dtype : uint8_t { kBool, kU8, kU32, kI32, kI64, kF16, kBF16, kF32, kF64 };

inline constexpr Dtype bool_ = Dtype::kBool;
inline constexpr Dtype uint8 = Dtype::kU8;
inline constexpr Dtype uint32 = Dtype::kU32;
inline constexpr Dtype int32 = Dtype::kI32;
inline constexpr Dtype int64 = Dtype::kI64;
inline constexpr Dtype float16 = Dtype::kF16;
inline constexpr Dtype bfloat16 = Dtype::kBF16;
inline constexpr Dtype float32 = Dtype::kF32;
inline constexpr Dtype float64 = Dtype::kF64;

inline constexpr int kNumDtypes = 9;

size_t size_of(Dtype dtype);
// Short names as jax.numpy prints them: "float32", "bfloat16", "int32", "bool".
const char* dtype_name(Dtype dtype);
// Parses dtype_name()'s output (and the aliases f32, bf16, f16, f64, i32, i64, u8, u32).
Dtype dtype_from_name(const std::string& name);
inline std::ostream& operator<<(std::ostream& os, Dtype d) { return os << dtype_name(d); }

inline bool is_floating(Dtype d) {
  return d == Dtype::kF16 || d == Dtype::kBF16 || d == Dtype::kF32 || d == Dtype::kF64;
}
inline bool is_integer(Dtype d) {
  return d == Dtype::kU8 || d == Dtype::kU32 || d == Dtype::kI32 || d == Dtype::kI64;
}
inline bool is_unsigned(Dtype d) { return d == Dtype::kU8 || d == Dtype::kU32; }

// jax.numpy.promote_types (with 64-bit types enabled): the least upper bound in the lattice
// bool < u8 < {u32, i32...}, integers < f16/bf16 < f32 < f64, f16 + bf16 -> f32.
Dtype promote_types(Dtype a, Dtype b);

// The dtype a computation is carried out in: 16-bit floats compute in f32, the rest in themselves.
inline Dtype compute_dtype(Dtype d) {
  return (d == Dtype::kF16 || d == Dtype::kBF16) ? Dtype::kF32 : d;
}

// ---- 16-bit floats: storage only; arithmetic converts to float ----

inline uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }
inline float f32_from_bits(uint32_t u) { return std::bit_cast<float>(u); }

// Rounds to f32 toward zero and sets the last mantissa bit when inexact ("round to odd"), so a
// second rounding to a narrower float gives the correctly rounded result.
float f64_to_f32_round_to_odd(double v);

struct bfloat16_t {
  uint16_t bits = 0;
  bfloat16_t() = default;
  explicit bfloat16_t(float f) : bits(from_float(f)) {}
  operator float() const { return f32_from_bits(uint32_t(bits) << 16); }
  static uint16_t from_float(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                         // nearest even
    return uint16_t(u >> 16);
  }
};

struct float16_t {
  uint16_t bits = 0;
  float16_t() = default;
  explicit float16_t(float f) : bits(from_float(f)) {}
  operator float() const { return to_float(bits); }
  static uint16_t from_float(float f);
  static float to_float(uint16_t h);
};

// Maps a Dtype to its C++ storage type.
template <Dtype D>
struct DtypeTraits;
template <>
struct DtypeTraits<Dtype::kBool> {
  using type = bool;
};
template <>
struct DtypeTraits<Dtype::kU8> {
  using type = uint8_t;
};
template <>
struct DtypeTraits<Dtype::kU32> {
  using type = uint32_t;
};
template <>
struct DtypeTraits<Dtype::kI32> {
  using type = int32_t;
};
template <>
struct DtypeTraits<Dtype::kI64> {
  using type = int64_t;
};
template <>
struct DtypeTraits<Dtype::kF16> {
  using type = float16_t;
};
template <>
struct DtypeTraits<Dtype::kBF16> {
  using type = bfloat16_t;
};
template <>
struct DtypeTraits<Dtype::kF32> {
  using type = float;
};
template <>
struct DtypeTraits<Dtype::kF64> {
  using type = double;
};

template <typename T>
constexpr Dtype dtype_of();
template <>
constexpr Dtype dtype_of<bool>() {
  return Dtype::kBool;
}
template <>
constexpr Dtype dtype_of<uint8_t>() {
  return Dtype::kU8;
}
template <>
constexpr Dtype dtype_of<uint32_t>() {
  return Dtype::kU32;
}
template <>
constexpr Dtype dtype_of<int32_t>() {
  return Dtype::kI32;
}
template <>
constexpr Dtype dtype_of<int64_t>() {
  return Dtype::kI64;
}
template <>
constexpr Dtype dtype_of<float16_t>() {
  return Dtype::kF16;
}
template <>
constexpr Dtype dtype_of<bfloat16_t>() {
  return Dtype::kBF16;
}
template <>
constexpr Dtype dtype_of<float>() {
  return Dtype::kF32;
}
template <>
constexpr Dtype dtype_of<double>() {
  return Dtype::kF64;
}

// Calls fn(T{}) with T the storage type of `d`: dispatch_dtype(d, [&](auto t) { using T = ...; }).
template <typename Fn>
decltype(auto) dispatch_dtype(Dtype d, Fn&& fn) {
  switch (d) {
    case Dtype::kBool:
      return fn(bool{});
    case Dtype::kU8:
      return fn(uint8_t{});
    case Dtype::kU32:
      return fn(uint32_t{});
    case Dtype::kI32:
      return fn(int32_t{});
    case Dtype::kI64:
      return fn(int64_t{});
    case Dtype::kF16:
      return fn(float16_t{});
    case Dtype::kBF16:
      return fn(bfloat16_t{});
    case Dtype::kF32:
      return fn(float{});
    case Dtype::kF64:
      return fn(double{});
  }
  return fn(float{});
}

// Casts between storage types with numpy semantics (float -> int truncates toward zero,
// float -> bool is x != 0, 16-bit floats round to nearest even).
template <typename To, typename From>
inline To cast_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, bfloat16_t> || std::is_same_v<From, float16_t>) {
    return cast_value<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bfloat16_t> || std::is_same_v<To, float16_t>) {
    if constexpr (std::is_same_v<From, double>) {
      // f64 -> f32 -> 16-bit would round twice; rounding to odd first keeps it exact.
      return To(f64_to_f32_round_to_odd(v));
    } else {
      return To(static_cast<float>(v));
    }
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace axlearn
