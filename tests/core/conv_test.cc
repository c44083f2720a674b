// conv_general_dilated, conv and rev: forward values against a naive f64 loop written from
// lax's definition, both CPU kernels (oneDNN for f32/bf16, the reference loop for f64/f16), VJPs
// against finite differences (first and second order), committed JAX vectors, and errors.
#include "axlearn/core/conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/core/test_util.h"

namespace axlearn {
namespace {

using testing::all_close;
using testing::check_vjp;
using testing::random_values;
using testing::ravel;
using testing::unravel;
using testing::values_of;

struct ConvCase {
  std::string name;
  Shape lhs, rhs;  // in the layouts `specs` name
  std::vector<int64_t> strides;
  ConvPadding padding;
  std::vector<int64_t> lhs_dilation, rhs_dilation;
  std::vector<std::string> specs;  // lhs, rhs, out layout strings
  int64_t fgc = 1, bgc = 1;
};

ConvDimensionNumbers dn_of(const ConvCase& c) {
  return conv_dimension_numbers(c.specs[0], c.specs[1], c.specs[2]);
}

Tensor run_case(const ConvCase& c, const Tensor& x, const Tensor& w) {
  return conv_general_dilated(x, w, c.strides, c.padding, c.lhs_dilation, c.rhs_dilation, dn_of(c),
                              c.fgc, c.bgc);
}

// Straight from the definition: out[n, o, q] = sum_{i, k} lhs_padded_dilated[n', g I + i,
// q * stride + k * rhs_dilation] * rhs[o, i, k], with g the feature group of o and n' the batch
// row of o's batch group.
std::vector<double> naive_conv(const ConvCase& c, const std::vector<double>& x,
                               const std::vector<double>& w, const Shape& out_shape) {
  const ConvDimensionNumbers dn = dn_of(c);
  const int ns = int(c.lhs.size()) - 2;
  const int64_t n_out = out_shape[dn.out_spec[0]], o_n = c.rhs[dn.rhs_spec[0]];
  const int64_t in_feat = c.rhs[dn.rhs_spec[1]];
  Shape k_shape;
  for (int d = 0; d < ns; ++d) k_shape.push_back(c.rhs[dn.rhs_spec[2 + d]]);
  const int64_t taps = num_elements(k_shape);
  std::vector<double> out(size_t(num_elements(out_shape)), 0.0);
  for (size_t flat = 0; flat < out.size(); ++flat) {
    const auto oi = unravel(int64_t(flat), out_shape);
    const int64_t n = oi[dn.out_spec[0]], o = oi[dn.out_spec[1]];
    const int64_t fgroup = o / (o_n / c.fgc), bgroup = o / (o_n / c.bgc);
    double acc = 0;
    for (int64_t i = 0; i < in_feat; ++i) {
      for (int64_t t = 0; t < taps; ++t) {
        const auto k = unravel(t, k_shape);
        std::vector<int64_t> li(c.lhs.size()), ri(c.rhs.size());
        li[dn.lhs_spec[0]] = bgroup * n_out + n;
        li[dn.lhs_spec[1]] = fgroup * in_feat + i;
        ri[dn.rhs_spec[0]] = o;
        ri[dn.rhs_spec[1]] = i;
        bool inside = true;
        for (int d = 0; d < ns && inside; ++d) {
          const int64_t size = c.lhs[dn.lhs_spec[2 + d]];
          const int64_t pos =
              oi[dn.out_spec[2 + d]] * c.strides[d] + k[d] * c.rhs_dilation[d] - c.padding[d].first;
          inside = pos >= 0 && pos % c.lhs_dilation[d] == 0 && pos / c.lhs_dilation[d] < size;
          li[dn.lhs_spec[2 + d]] = inside ? pos / c.lhs_dilation[d] : 0;
          ri[dn.rhs_spec[2 + d]] = k[d];
        }
        if (inside) acc += x[size_t(ravel(li, c.lhs))] * w[size_t(ravel(ri, c.rhs))];
      }
    }
    out[flat] = acc;
  }
  return out;
}

std::vector<ConvCase> forward_cases() {
  return {
      {"1d_plain", {2, 3, 7}, {4, 3, 3}, {1}, {{0, 0}}, {1}, {1}, {"NCW", "OIW", "NCW"}},
      {"1d_stride_asym_pad", {2, 3, 8}, {2, 3, 3}, {2}, {{1, 2}}, {1}, {1}, {"NCW", "OIW", "NCW"}},
      {"1d_rhs_dilation", {1, 2, 9}, {3, 2, 3}, {1}, {{2, 0}}, {1}, {3}, {"NCW", "OIW", "NCW"}},
      {"1d_lhs_dilation", {1, 2, 5}, {3, 2, 3}, {1}, {{1, 1}}, {2}, {1}, {"NCW", "OIW", "NCW"}},
      {"1d_groups", {2, 6, 6}, {6, 2, 2}, {1}, {{1, 0}}, {1}, {1}, {"NCW", "OIW", "NCW"}, 3},
      {"2d_strided_dilated",
       {2, 3, 7, 6},
       {4, 3, 3, 2},
       {2, 1},
       {{1, 0}, {2, 1}},
       {1, 1},
       {2, 1},
       {"NCHW", "OIHW", "NCHW"}},
      {"2d_depthwise_multiplier",
       {1, 4, 5, 5},
       {8, 1, 3, 3},
       {1, 2},
       {{1, 1}, {1, 1}},
       {1, 1},
       {1, 1},
       {"NCHW", "OIHW", "NCHW"},
       4},
      {"2d_lhs_dilated_strided",
       {1, 2, 4, 3},
       {3, 2, 2, 3},
       {1, 2},
       {{1, 1}, {0, 2}},
       {2, 3},
       {1, 1},
       {"NCHW", "OIHW", "NCHW"}},
      {"2d_negative_padding",
       {1, 2, 6, 6},
       {2, 2, 2, 2},
       {1, 1},
       {{-1, 1}, {0, -2}},
       {1, 1},
       {1, 1},
       {"NCHW", "OIHW", "NCHW"}},
      {"2d_nhwc_grouped",
       {2, 6, 5, 4},
       {3, 3, 2, 6},
       {2, 2},
       {{1, 1}, {0, 1}},
       {1, 1},
       {1, 2},
       {"NHWC", "HWIO", "NHWC"},
       2},
      {"2d_nhwc_depthwise",
       {1, 5, 5, 3},
       {3, 3, 1, 3},
       {1, 1},
       {{1, 1}, {1, 1}},
       {1, 1},
       {1, 1},
       {"NHWC", "HWIO", "NHWC"},
       3},
      {"2d_batch_groups",
       {4, 3, 4, 4},
       {4, 3, 2, 2},
       {1, 1},
       {{0, 1}, {1, 0}},
       {1, 1},
       {1, 1},
       {"NCHW", "OIHW", "NCHW"},
       1,
       2},
      {"3d_strided",
       {1, 2, 4, 5, 4},
       {3, 2, 2, 3, 2},
       {2, 1, 2},
       {{1, 0}, {1, 1}, {0, 1}},
       {1, 1, 1},
       {1, 2, 1},
       {"NCDHW", "OIDHW", "NCDHW"}},
      {"3d_ndhwc_depthwise",
       {1, 3, 4, 4, 2},
       {2, 2, 2, 1, 2},
       {1, 2, 1},
       {{0, 1}, {1, 0}, {1, 1}},
       {1, 1, 1},
       {1, 1, 1},
       {"NDHWC", "DHWIO", "NDHWC"},
       2},
      {"0d_is_a_matmul", {3, 4}, {5, 4}, {}, {}, {}, {}, {"NC", "OI", "NC"}},
  };
}

void expect_forward(const ConvCase& c, Dtype dtype, double rtol, double atol, const char* kernel) {
  SCOPED_TRACE(c.name + " " + dtype_name(dtype));
  // Rounding the inputs to `dtype` first makes the f64 reference exact for the given operands.
  Tensor x = array(random_values(num_elements(c.lhs), -1, 1, 11), c.lhs, dtype);
  Tensor w = array(random_values(num_elements(c.rhs), -1, 1, 12), c.rhs, dtype);
  Tensor y = run_case(c, x, w);
  y.eval();
  EXPECT_STREQ(last_conv_kernel(), kernel);
  EXPECT_EQ(y.dtype(), dtype);
  std::vector<double> want = naive_conv(c, values_of(x), values_of(w), y.shape());
  EXPECT_TRUE(all_close(values_of(y), want, rtol, atol));
}

TEST(ConvTest, ReferenceKernelMatchesNaiveLoopInF64) {
  for (const ConvCase& c : forward_cases()) expect_forward(c, float64, 1e-12, 1e-13, "reference");
}

TEST(ConvTest, OnednnMatchesNaiveLoopInF32) {
  for (const ConvCase& c : forward_cases()) expect_forward(c, float32, 1e-5, 1e-5, "onednn");
}

TEST(ConvTest, Bf16AccumulatesInF32AndRoundsOnce) {
  // Sums of up to ~50 products of magnitude <= 1: the only large error is the final bf16 rounding.
  for (const ConvCase& c : forward_cases()) expect_forward(c, bfloat16, 8e-3, 2e-3, "onednn");
}

TEST(ConvTest, F16UsesReferenceLoop) {
  for (const ConvCase& c : forward_cases()) expect_forward(c, float16, 2e-3, 2e-3, "reference");
}

TEST(ConvTest, OutputShapeFollowsLaxRules) {
  // (7 + 1 + 0 - 5) / 2 + 1 = 2 with a window of 3 dilated by 2; lhs dilation 2 of 4 gives 7.
  Tensor y = conv_general_dilated(zeros({1, 1, 4}), zeros({1, 1, 3}), {2}, {{1, 0}}, {2}, {2});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2}));
  // A window larger than the padded input gives an empty output, as in lax.
  Tensor e = conv_general_dilated(ones({1, 2, 3}), ones({4, 2, 5}), {1}, {{0, 1}});
  EXPECT_EQ(e.shape(), (Shape{1, 4, 0}));
  EXPECT_TRUE(e.to_vector<double>().empty());
}

TEST(ConvTest, StridedOperandViewsGiveTheSameResult) {
  // A transposed (non-contiguous) lhs and a broadcast rhs go through both kernels correctly.
  const ConvCase c{"view",           {2, 3, 5, 4}, {4, 3, 2, 2}, {1, 1},
                   {{0, 1}, {1, 0}}, {1, 1},       {1, 1},       {"NCHW", "OIHW", "NCHW"}};
  for (Dtype dt : {float64, float32}) {
    Tensor base = array(random_values(2 * 3 * 5 * 4, -1, 1, 5), {2, 4, 5, 3}, dt);
    Tensor x = transpose(base, {0, 3, 2, 1});  // (2, 3, 5, 4)
    Tensor w = broadcast_to(array(random_values(3 * 2 * 2, -1, 1, 6), {1, 3, 2, 2}, dt), c.rhs);
    eval(x, w);
    Tensor y = run_case(c, x, w);
    EXPECT_TRUE(
        all_close(values_of(y), naive_conv(c, values_of(x), values_of(w), y.shape()), 1e-5, 1e-5))
        << dtype_name(dt);
  }
}

// ---- convenience conv (channels last) ----

TEST(ConvTest, ChannelsLastConvSamePaddingMatchesExplicitPads) {
  // SAME with stride 2 on 7: output 4, total padding (4 - 1) * 2 + 3 - 7 = 2 -> (1, 1); with
  // dilation 2 on 6 at stride 1: window 5, padding 4 -> (2, 2).
  Tensor x = array(random_values(2 * 7 * 6 * 4, -1, 1, 3), {2, 7, 6, 4}, float64);
  Tensor w = array(random_values(3 * 3 * 2 * 6, -1, 1, 4), {3, 3, 2, 6}, float64);
  Tensor y = conv(x, w, {2, 1}, "SAME", {1, 2}, 2);
  EXPECT_EQ(y.shape(), (Shape{2, 4, 6, 6}));
  const ConvCase c{"same",
                   {2, 7, 6, 4},
                   {3, 3, 2, 6},
                   {2, 1},
                   {{1, 1}, {2, 2}},
                   {1, 1},
                   {1, 2},
                   {"NHWC", "HWIO", "NHWC"},
                   2};
  EXPECT_TRUE(
      all_close(values_of(y), naive_conv(c, values_of(x), values_of(w), y.shape()), 1e-12, 1e-13));
  EXPECT_EQ(padtype_to_pads({8}, {4}, {1}, "SAME"), (ConvPadding{{1, 2}}));  // odd goes high
  EXPECT_EQ(padtype_to_pads({8}, {4}, {3}, "SAME"), (ConvPadding{{1, 1}}));
  EXPECT_EQ(padtype_to_pads({8, 5}, {4, 2}, {3, 1}, "VALID"), (ConvPadding{{0, 0}, {0, 0}}));
}

TEST(ConvTest, DimensionNumbersFromStringsPairSpatialAxesByLetter) {
  ConvDimensionNumbers dn = conv_dimension_numbers("NHWC", "HWIO", "NHWC");
  EXPECT_EQ(dn.lhs_spec, (std::vector<int>{0, 3, 1, 2}));
  EXPECT_EQ(dn.rhs_spec, (std::vector<int>{3, 2, 0, 1}));
  EXPECT_EQ(dn.out_spec, (std::vector<int>{0, 3, 1, 2}));
  // Spatial order is the rhs's: W before H here.
  ConvDimensionNumbers t = conv_dimension_numbers("NCHW", "OIWH", "NWHC");
  EXPECT_EQ(t.lhs_spec, (std::vector<int>{0, 1, 3, 2}));
  EXPECT_EQ(t.rhs_spec, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(t.out_spec, (std::vector<int>{0, 3, 1, 2}));
}

// ---- committed JAX vectors ----

TEST(ConvTest, MatchesJaxValuesAndGradients) {
  std::ifstream in(std::string(AXLEARN_SOURCE_DIR) + "/tests/core/testdata/conv_vectors.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  ASSERT_GE(j["cases"].size(), 6u);
  for (const auto& jc : j["cases"]) {
    SCOPED_TRACE(jc["name"].get<std::string>());
    const Shape ls = jc["lhs_shape"], rs = jc["rhs_shape"];
    std::vector<double> xv(size_t(num_elements(ls))), wv(size_t(num_elements(rs)));
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = std::sin(0.37 * double(i) + 0.1);
    for (size_t i = 0; i < wv.size(); ++i) wv[i] = 0.5 * std::cos(0.51 * double(i) - 0.2);
    const std::vector<std::string> specs = jc["specs"];
    const std::vector<int64_t> strides = jc["strides"], ldil = jc["lhs_dilation"],
                               rdil = jc["rhs_dilation"];
    const int64_t fgc = jc["feature_group_count"], bgc = jc["batch_group_count"];
    const bool channels_last = specs[0].back() == 'C' &&
                               specs[1].substr(specs[1].size() - 2) == "IO" &&
                               specs[2] == specs[0] && bgc == 1 && jc["padding"].is_string();
    auto f = [&](const Tensor& x, const Tensor& w) {
      if (channels_last) {
        // The convenience op, with the string padding as given to JAX.
        return conv(x, w, strides, jc["padding"].get<std::string>(), rdil, fgc);
      }
      ConvPadding pad;
      for (const auto& p : jc["padding"]) pad.push_back({p[0].get<int64_t>(), p[1].get<int64_t>()});
      return conv_general_dilated(x, w, strides, pad, ldil, rdil,
                                  conv_dimension_numbers(specs[0], specs[1], specs[2]), fgc, bgc);
    };
    for (Dtype dt : {float64, float32}) {
      const double tol = dt == float64 ? 1e-10 : 2e-5;
      Tensor x = array(xv, ls, dt), w = array(wv, rs, dt);
      Tensor y = f(x, w);
      EXPECT_EQ(y.shape(), jc["out_shape"].get<Shape>());
      EXPECT_TRUE(all_close(values_of(y), jc["out"].get<std::vector<double>>(), tol, tol));
      std::vector<double> ctv(size_t(y.size()));
      for (size_t i = 0; i < ctv.size(); ++i) ctv[i] = std::cos(0.23 * double(i));
      Tensor ct = array(ctv, y.shape(), dt);
      auto loss = [&](const std::vector<Tensor>& a) { return sum(f(a[0], a[1]) * ct); };
      std::vector<Tensor> g = grad(loss)({x, w});
      EXPECT_TRUE(all_close(values_of(g[0]), jc["grad_lhs"].get<std::vector<double>>(), tol, tol));
      EXPECT_TRUE(all_close(values_of(g[1]), jc["grad_rhs"].get<std::vector<double>>(), tol, tol));
      auto grad_x_sq = [&](const std::vector<Tensor>& a) {
        Tensor gx = grad(loss, {0})(a)[0];
        return sum(gx * gx);
      };
      Tensor g2 = grad(grad_x_sq, {1})({x, w})[0];
      EXPECT_TRUE(
          all_close(values_of(g2), jc["grad2_rhs"].get<std::vector<double>>(), tol * 10, tol * 10));
    }
  }
}

// ---- VJPs against finite differences ----

std::vector<ConvCase> vjp_cases() {
  return {
      {"2d_strided_dilated_grouped",
       {2, 4, 5, 4},
       {4, 2, 2, 2},
       {2, 1},
       {{1, 0}, {0, 1}},
       {1, 1},
       {1, 2},
       {"NCHW", "OIHW", "NCHW"},
       2},
      {"2d_nhwc_depthwise_strided",
       {1, 5, 4, 2},
       {2, 2, 1, 4},
       {2, 2},
       {{0, 1}, {1, 1}},
       {1, 1},
       {1, 1},
       {"NHWC", "HWIO", "NHWC"},
       2},
      {"1d_lhs_dilated_negative_pad",
       {2, 2, 4},
       {3, 2, 3},
       {2},
       {{-1, 2}},
       {2},
       {1},
       {"NCW", "OIW", "NCW"}},
      {"1d_valid_with_leftover",
       {1, 8, 2},
       {3, 2, 2},
       {3},
       {{0, 0}},
       {1},
       {2},
       {"NWC", "WIO", "NCW"}},
      {"2d_batch_groups",
       {4, 2, 3, 3},
       {4, 2, 2, 2},
       {1, 2},
       {{1, 0}, {0, 1}},
       {1, 1},
       {1, 1},
       {"NCHW", "OIHW", "NCHW"},
       1,
       2},
      {"3d_ndhwc_grouped",
       {1, 3, 3, 2, 4},
       {2, 2, 1, 2, 4},
       {1, 2, 1},
       {{1, 0}, {0, 1}, {0, 0}},
       {1, 1, 1},
       {1, 1, 1},
       {"NDHWC", "DHWIO", "NDHWC"},
       2},
  };
}

TEST(ConvTest, VjpMatchesFiniteDifferences) {
  for (const ConvCase& c : vjp_cases()) {
    SCOPED_TRACE(c.name);
    Tensor x = array(random_values(num_elements(c.lhs), -1, 1, 21), c.lhs, float64);
    Tensor w = array(random_values(num_elements(c.rhs), -1, 1, 22), c.rhs, float64);
    check_vjp([&](const std::vector<Tensor>& a) { return run_case(c, a[0], a[1]); }, {x, w});
  }
}

TEST(ConvTest, SecondOrderVjpMatchesFiniteDifferences) {
  // fn(x, w) = d/dx sum(c * conv(x, w)^2): its VJP runs the transposed convs' own VJPs (lhs
  // dilation, reversed kernels, batch groups).
  for (const ConvCase& c : {vjp_cases()[0], vjp_cases()[3], vjp_cases()[4]}) {
    SCOPED_TRACE(c.name);
    Tensor x = array(random_values(num_elements(c.lhs), -1, 1, 31), c.lhs, float64);
    Tensor w = array(random_values(num_elements(c.rhs), -1, 1, 32), c.rhs, float64);
    const Shape out_shape = run_case(c, x, w).shape();
    Tensor weight = array(random_values(num_elements(out_shape), -1, 1, 33), out_shape, float64);
    auto fn = [&](const std::vector<Tensor>& a) {
      auto loss = [&](const std::vector<Tensor>& b) {
        Tensor y = run_case(c, b[0], b[1]);
        return sum(y * y * weight);
      };
      return grad(loss, {0})(a)[0];
    };
    check_vjp(fn, {x, w});
  }
}

TEST(ConvTest, F32GradientsThroughOnednnMatchF64) {
  for (const ConvCase& c : vjp_cases()) {
    SCOPED_TRACE(c.name);
    std::vector<double> xv = random_values(num_elements(c.lhs), -1, 1, 41);
    std::vector<double> wv = random_values(num_elements(c.rhs), -1, 1, 42);
    std::vector<std::vector<double>> grads[2];
    int k = 0;
    for (Dtype dt : {float64, float32}) {
      auto loss = [&](const std::vector<Tensor>& a) {
        Tensor y = run_case(c, a[0], a[1]);
        return sum(y * y);
      };
      std::vector<Tensor> g = grad(loss)({array(xv, c.lhs, dt), array(wv, c.rhs, dt)});
      grads[k++] = {values_of(g[0]), values_of(g[1])};
    }
    EXPECT_TRUE(all_close(grads[1][0], grads[0][0], 1e-4, 1e-4));
    EXPECT_TRUE(all_close(grads[1][1], grads[0][1], 1e-4, 1e-4));
  }
}

// ---- rev ----

TEST(RevTest, ReversesTheGivenAxes) {
  const Shape s{2, 3, 4};
  std::vector<double> v = random_values(24, -1, 1, 51);
  Tensor x = array(v, s, float64);
  for (Dtype dt : {float64, bfloat16}) {
    Tensor y = rev(astype(x, dt), {0, -1});
    ASSERT_EQ(y.shape(), s);
    std::vector<double> want(24), xs = values_of(astype(x, dt));
    for (int64_t f = 0; f < 24; ++f) {
      auto idx = unravel(f, s);
      idx[0] = 1 - idx[0];
      idx[2] = 3 - idx[2];
      want[size_t(f)] = xs[size_t(ravel(idx, s))];
    }
    EXPECT_EQ(values_of(y), want) << dtype_name(dt);
  }
  // A transposed view as input.
  Tensor t = rev(transpose(x, {2, 0, 1}), {1});
  std::vector<double> got = values_of(t);
  for (int64_t f = 0; f < 24; ++f) {
    auto idx = unravel(f, {4, 2, 3});  // (k, i, j) of the transposed, with i reversed
    EXPECT_EQ(got[size_t(f)], v[size_t(ravel({1 - idx[1], idx[2], idx[0]}, s))]);
  }
}

TEST(RevTest, VjpIsRev) {
  Tensor x = array(random_values(12, -1, 1, 52), {3, 4}, float64);
  check_vjp([](const std::vector<Tensor>& a) { return rev(a[0] * a[0], {1}); }, {x});
}

// ---- errors ----

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = error_of(f);
  ASSERT_FALSE(msg.empty()) << "no Error thrown";
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(ConvTest, ErrorsNameTheOpAndBothShapes) {
  const std::string op = "conv_general_dilated";
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5, 5}), zeros({4, 2, 3, 3}), {1, 1}, {{0, 0}, {0, 0}});
      },
      {op, "(1, 3, 5, 5)", "(4, 2, 3, 3)", "in-feature"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 6, 5, 5}), zeros({5, 3, 3, 3}), {1, 1}, {{0, 0}, {0, 0}}, {},
                             {}, {}, 2);
      },
      {op, "(1, 6, 5, 5)", "(5, 3, 3, 3)", "feature_group_count"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), {1}, {{0, 0}, {0, 0}});
      },
      {op, "(1, 3, 5, 5)", "(4, 3, 3, 3)", "one entry per spatial axis"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), {1, 0}, {{0, 0}, {0, 0}});
      },
      {op, "(1, 3, 5, 5)", "(4, 3, 3, 3)", "strides"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5, 5}), zeros({4, 3, 3, 3}), {1, 1}, {{-4, -2}, {0, 0}});
      },
      {op, "(1, 3, 5, 5)", "(4, 3, 3, 3)", "negative padding"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5, 5}), zeros({4, 3, 3}), {1, 1}, {{0, 0}, {0, 0}});
      },
      {op, "(1, 3, 5, 5)", "(4, 3, 3)", "ranks"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5}), zeros({4, 3, 3}, float64), {1}, {{0, 0}});
      },
      {op, "(1, 3, 5)", "(4, 3, 3)", "dtypes"});
  expect_error(
      [] {
        conv_general_dilated(zeros({1, 3, 5}, int32), zeros({4, 3, 3}, int32), {1}, {{0, 0}});
      },
      {op, "floating"});
  expect_error(
      [] {
        conv(zeros({1, 5, 5, 3}), zeros({3, 3, 2, 4}), {1, 1}, "SAME");
      },
      {op, "(1, 5, 5, 3)", "(3, 3, 2, 4)"});
  expect_error(
      [] {
        conv(zeros({1, 5, 5, 3}), zeros({3, 3, 4}), {1, 1}, "SAME");
      },
      {"conv", "(1, 5, 5, 3)", "(3, 3, 4)"});
  expect_error(
      [] {
        conv(zeros({1, 5, 5, 3}), zeros({3, 3, 3, 4}), {1, 1}, "FULL");
      },
      {"padtype_to_pads", "FULL"});
  expect_error([] { conv_dimension_numbers("NHWC", "HWIO", "NHW"); }, {"conv_dimension_numbers"});
  expect_error([] { conv_dimension_numbers("NHWC", "HXIO", "NHWC"); },
               {"conv_dimension_numbers", "'X'"});
  expect_error([] { rev(zeros({2, 3}), {2}); }, {"rev"});
}

TEST(ConvTest, PrimitivesCompareByAttributes) {
  ConvParams p{{1}, {{0, 0}}, {1}, {1}, ConvDimensionNumbers::canonical(3), 1, 1};
  ConvParams q = p;
  q.padding = {{0, 1}};
  ConvGeneralDilated a(p), b(p), c(q);
  EXPECT_TRUE(a.equals(b));
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_FALSE(a.equals(c));
  std::ostringstream os;
  c.print(os);
  EXPECT_NE(os.str().find("padding=[(0, 1)]"), std::string::npos) << os.str();
}

}  // namespace
}  // namespace axlearn
