// Shared helpers for the core tests: seeded random inputs, naive f64 index arithmetic for
// reference loops, closeness checks, and a central finite-difference checker for VJPs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/tensor.h"
#include "axlearn/core/transforms.h"

namespace axlearn::testing {

inline constexpr uint32_t kSeed = 1234567;

// n values uniform in [lo, hi); the same seed gives the same values on every run.
inline std::vector<double> random_values(int64_t n, double lo, double hi, uint32_t seed = kSeed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

// Values uniform in [lo, hi) whose magnitude is at least `gap`: keeps inputs away from a kink at 0.
inline std::vector<double> random_away_from_zero(int64_t n, double lo, double hi, double gap,
                                                 uint32_t seed = kSeed) {
  std::vector<double> v = random_values(n, lo, hi, seed);
  for (double& x : v) {
    if (std::fabs(x) < gap) x = x < 0 ? x - gap : x + gap;
  }
  return v;
}

inline std::vector<int64_t> random_ints(int64_t n, int64_t lo, int64_t hi, uint32_t seed = kSeed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t& x : v) x = dist(gen);
  return v;
}

// A tensor of `dtype` holding `values` (rounded to the dtype by the library).
inline Tensor tensor_of(const std::vector<double>& values, const Shape& shape,
                        Dtype dtype = float64) {
  return array(values, shape, dtype);
}

inline Tensor random_tensor(const Shape& shape, Dtype dtype, double lo = -2, double hi = 2,
                            uint32_t seed = kSeed) {
  return array(random_values(num_elements(shape), lo, hi, seed), shape, dtype);
}

inline std::vector<double> values_of(const Tensor& t) { return t.to_vector<double>(); }

// jnp.promote_types over all supported pairs, from tests/core/testdata/promotion_table.json
// (written by gen_promotion_table.py with jax, x64 enabled).
inline const std::map<std::pair<Dtype, Dtype>, Dtype>& jax_promotion_table() {
  static const auto* table = [] {
    auto* t = new std::map<std::pair<Dtype, Dtype>, Dtype>();
    std::ifstream in(std::string(AXLEARN_SOURCE_DIR) + "/tests/core/testdata/promotion_table.json");
    if (!in.good()) return t;
    nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& [key, value] : j.at("promote_types").items()) {
      const size_t comma = key.find(',');
      (*t)[{dtype_from_name(key.substr(0, comma)), dtype_from_name(key.substr(comma + 1))}] =
          dtype_from_name(value.get<std::string>());
    }
    return t;
  }();
  return *table;
}

// ---- index arithmetic for reference loops ----

inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    idx[i] = shape[i] == 0 ? 0 : flat % shape[i];
    flat = shape[i] == 0 ? 0 : flat / shape[i];
  }
  return idx;
}

inline int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t i = 0; i < shape.size(); ++i) flat = flat * shape[i] + idx[i];
  return flat;
}

// Flat index into `in_shape` of the element that numpy broadcasting maps to output index `out`.
inline int64_t broadcast_source(const std::vector<int64_t>& out, const Shape& in_shape) {
  const size_t lead = out.size() - in_shape.size();
  int64_t flat = 0;
  for (size_t i = 0; i < in_shape.size(); ++i) {
    flat = flat * in_shape[i] + (in_shape[i] == 1 ? 0 : out[lead + i]);
  }
  return flat;
}

// Elementwise reference of a broadcasting binary op.
inline std::vector<double> broadcast_binary_ref(const std::vector<double>& a, const Shape& sa,
                                                const std::vector<double>& b, const Shape& sb,
                                                const Shape& out_shape,
                                                const std::function<double(double, double)>& f) {
  std::vector<double> out(size_t(num_elements(out_shape)));
  for (size_t i = 0; i < out.size(); ++i) {
    auto idx = unravel(int64_t(i), out_shape);
    out[i] = f(a[size_t(broadcast_source(idx, sa))], b[size_t(broadcast_source(idx, sb))]);
  }
  return out;
}

// ---- closeness ----

inline bool close(double got, double want, double rtol, double atol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

inline ::testing::AssertionResult all_close(const std::vector<double>& got,
                                            const std::vector<double>& want, double rtol,
                                            double atol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << "size " << got.size() << " but expected " << want.size();
  }
  int bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!close(got[i], want[i], rtol, atol)) {
      if (bad++ < 6) {
        os << "\n  [" << i << "] got " << std::setprecision(17) << got[i] << " want " << want[i];
      }
    }
  }
  if (bad) {
    return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements differ (rtol "
                                         << rtol << ", atol " << atol << ")" << os.str();
  }
  return ::testing::AssertionSuccess();
}

// Checks shape, dtype and values of `t` against a reference.
inline ::testing::AssertionResult tensor_close(const Tensor& t, const Shape& shape, Dtype dtype,
                                               const std::vector<double>& want, double rtol = 1e-12,
                                               double atol = 0) {
  if (t.shape() != shape) {
    return ::testing::AssertionFailure()
           << "shape " << shape_str(t.shape()) << " but expected " << shape_str(shape);
  }
  if (t.dtype() != dtype) {
    return ::testing::AssertionFailure()
           << "dtype " << dtype_name(t.dtype()) << " but expected " << dtype_name(dtype);
  }
  return all_close(values_of(t), want, rtol, atol);
}

// ---- finite differences ----

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Checks the VJP of fn at `inputs` (float64) against central differences of
// L(x) = sum(fn(x) * w) for a fixed random cotangent w. Only arguments in `wrt` (all float64) are
// differentiated; the others (indices, masks) are held fixed. Tolerance: |vjp - fd| <= tol *
// (1 + |fd|).
inline void check_vjp(const TensorFn& fn, const std::vector<Tensor>& inputs,
                      std::vector<int> wrt = {}, double tol = 1e-6, double h = 1e-5) {
  if (wrt.empty()) {
    for (size_t i = 0; i < inputs.size(); ++i) wrt.push_back(int(i));
  }
  std::vector<std::vector<double>> in_vals;
  for (const Tensor& t : inputs) in_vals.push_back(values_of(t));

  Tensor out = fn(inputs);
  ASSERT_EQ(out.dtype(), float64) << "check_vjp wants a float64 function";
  const Shape out_shape = out.shape();
  const std::vector<double> w = random_values(out.size(), -1, 1, kSeed + 7);
  Tensor w_t = array(w, out_shape, float64);

  std::vector<Tensor> primals;
  for (int k : wrt) primals.push_back(inputs[size_t(k)]);
  auto partial = [&](const std::vector<Tensor>& ps) {
    std::vector<Tensor> full = inputs;
    for (size_t i = 0; i < wrt.size(); ++i) full[size_t(wrt[i])] = ps[i];
    return std::vector<Tensor>{fn(full)};
  };
  VjpResult r = vjp(partial, primals, {w_t});
  ASSERT_EQ(r.cotangents.size(), wrt.size());

  auto loss = [&](const std::vector<std::vector<double>>& vals) {
    std::vector<Tensor> ts;
    for (size_t i = 0; i < inputs.size(); ++i) {
      ts.push_back(array(vals[i], inputs[i].shape(), inputs[i].dtype()));
    }
    std::vector<double> y = values_of(fn(ts));
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };

  for (size_t j = 0; j < wrt.size(); ++j) {
    const size_t k = size_t(wrt[j]);
    const Tensor& ct = r.cotangents[j];
    ASSERT_EQ(ct.shape(), inputs[k].shape()) << "cotangent shape of input " << k;
    ASSERT_EQ(ct.dtype(), inputs[k].dtype()) << "cotangent dtype of input " << k;
    std::vector<double> analytic = values_of(ct);
    int bad = 0;
    for (size_t e = 0; e < in_vals[k].size(); ++e) {
      auto vals = in_vals;
      vals[k][e] = in_vals[k][e] + h;
      double up = loss(vals);
      vals[k][e] = in_vals[k][e] - h;
      double down = loss(vals);
      double fd = (up - down) / (2 * h);
      if (!(std::fabs(analytic[e] - fd) <= tol * (1 + std::fabs(fd))) && bad++ < 6) {
        ADD_FAILURE() << "input " << k << " element " << e << " (x = " << in_vals[k][e] << "): vjp "
                      << std::setprecision(12) << analytic[e] << " vs finite difference " << fd;
      }
    }
  }
}

}  // namespace axlearn::testing
