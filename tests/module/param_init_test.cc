// Initializers: draws bit-identical to jax.nn.initializers / AXLearn for the same key, sample
// statistics over 1M+ draws against the variance-scaling formulas, fans, and DefaultInitializer's
// rules.
#include "axlearn/module/param_init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"

namespace axlearn {
namespace {

using nlohmann::json;

const json& vectors() {
  static const json j = [] {
    std::ifstream f(std::string(AXLEARN_SOURCE_DIR) + "/tests/module/testdata/module_vectors.json");
    return json::parse(f);
  }();
  return j;
}

std::unique_ptr<Initializer> weight_init(double scale, std::optional<std::string> fan,
                                         const std::string& distribution) {
  auto cfg = WeightInitializer::default_config();
  cfg->scale = scale;
  cfg->fan = std::move(fan);
  cfg->distribution = distribution;
  return cfg->instantiate<Initializer>();
}

const FanAxes kMatrixAxes{{-2}, {-1}, {}};

TEST(ParamInitTest, WeightInitializerMatchesJax) {
  for (const json& c : vectors()["weight_initializer"]) {
    std::optional<std::string> fan;
    if (!c["fan"].is_null()) fan = c["fan"].get<std::string>();
    auto init = weight_init(c["scale"], fan, c["distribution"]);
    const Dtype dtype = dtype_from_name(c["dtype"]);
    const Tensor key = array(c["key"].get<std::vector<uint32_t>>(), {2});
    const Tensor x = init->initialize("w", key, c["shape"].get<Shape>(), dtype, kMatrixAxes);
    ASSERT_EQ(x.dtype(), dtype);
    const auto got = x.to_vector<double>();
    const auto want = c["values"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i], want[i]) << c["distribution"] << " fan=" << c["fan"] << " " << c["dtype"]
                                 << " [" << i << "]";
    }
  }
}

struct Moments {
  double mean, std;
};

Moments moments(const Tensor& x) {
  const auto v = x.to_vector<double>();
  double sum = 0, sq = 0;
  for (double e : v) sum += e;
  const double m = sum / double(v.size());
  for (double e : v) sq += (e - m) * (e - m);
  return {m, std::sqrt(sq / double(v.size()))};
}

// Over 1024 x 1024 draws: the sample std is within 1% of sqrt(scale / fan), the mean within 1%
// of the std of zero (the standard error is 0.1% of the std).
TEST(ParamInitTest, VarianceScalingStatisticsMatchTheFormula) {
  const Shape shape{512, 2048};  // fan_in 512, fan_out 2048, fan_avg 1280
  const double fans[] = {512, 2048, 1280};
  const char* fan_names[] = {"fan_in", "fan_out", "fan_avg"};
  uint64_t seed = 11;
  for (const char* dist : {"normal", "uniform", "truncated_normal"}) {
    for (int f = 0; f < 3; ++f) {
      const double scale = 2.0;
      auto init = weight_init(scale, std::string(fan_names[f]), dist);
      const Tensor x = init->initialize("w", random::key(seed++), shape, float32, kMatrixAxes);
      const Moments m = moments(x);
      const double want_std = std::sqrt(scale / fans[f]);
      EXPECT_NEAR(m.std, want_std, 0.01 * want_std) << dist << " " << fan_names[f];
      EXPECT_NEAR(m.mean, 0.0, 0.01 * want_std) << dist << " " << fan_names[f];
    }
  }
}

TEST(ParamInitTest, UnscaledDistributionsHaveTheirDocumentedSpread) {
  const Shape shape{1024, 1024};
  // U(-s, s): std s / sqrt(3); N(0, s^2): std s; truncated: std s.
  const std::vector<std::pair<std::string, double>> cases = {
      {"uniform", 0.3 / std::sqrt(3.0)}, {"normal", 0.3}, {"truncated_normal", 0.3}};
  uint64_t seed = 100;
  for (const auto& [dist, want_std] : cases) {
    auto init = weight_init(0.3, std::nullopt, dist);
    const Moments m = moments(init->initialize("w", random::key(seed++), shape, float32, {}));
    EXPECT_NEAR(m.std, want_std, 0.01 * want_std) << dist;
    EXPECT_NEAR(m.mean, 0.0, 0.01 * want_std) << dist;
  }
  auto gauss = GaussianInitializer::default_config().set("std", 0.05)->instantiate<Initializer>();
  const Moments g = moments(gauss->initialize("w", random::key(7), shape, float32, {}));
  EXPECT_NEAR(g.std, 0.05, 0.0005);
  EXPECT_NEAR(g.mean, 0.0, 0.0005);
}

TEST(ParamInitTest, ComputeFansFollowsJax) {
  // A 3x3 convolution (H, W, in, out): receptive field 9.
  Fans f = compute_fans({3, 3, 4, 8}, kMatrixAxes);
  EXPECT_DOUBLE_EQ(f.fan_in, 36);
  EXPECT_DOUBLE_EQ(f.fan_out, 72);
  EXPECT_DOUBLE_EQ(f.fan_avg, 54);
  // A batch (expert) axis is ignored; several axes multiply.
  f = compute_fans({8, 16, 2, 5}, FanAxes{{1}, {2, 3}, {0}});
  EXPECT_DOUBLE_EQ(f.fan_in, 16);
  EXPECT_DOUBLE_EQ(f.fan_out, 10);
  EXPECT_THROW(compute_fans({3, 4}, FanAxes{{2}, {1}, {}}), Error);
}

TEST(ParamInitTest, DefaultInitializerRulesByName) {
  auto cfg = DefaultInitializer::default_config();
  cfg->init_by_param_name.mut().emplace_back(
      ".*special_weight$", ConstantInitializer::default_config().set("value", 3.0));
  auto init = cfg->instantiate<DefaultInitializer>();
  const Tensor key = random::key(0);
  EXPECT_EQ(init->initialize("bias", key, {3}, float32, {}).to_vector<float>(),
            (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(init->initialize("scale", key, {2}, float32, {}).to_vector<float>(),
            (std::vector<float>{1, 1}));
  // The user's rule comes before the default weight rule.
  EXPECT_EQ(
      init->initialize("special_weight", key, {1, 2}, float32, kMatrixAxes).to_vector<float>(),
      (std::vector<float>{3, 3}));
  // The default weight rule: fan_avg uniform, bounded by sqrt(3 / fan_avg).
  const auto w = init->initialize("weight", key, {20, 30}, float32, kMatrixAxes).to_vector<float>();
  const double bound = std::sqrt(3.0 / 25.0);
  for (float v : w) EXPECT_LE(std::fabs(v), bound);
  EXPECT_EQ(init->debug_string("weight", {20, 30}, kMatrixAxes),
            "uniform(-sqrt(3.0 / fan_avg), sqrt(3.0 / fan_avg)), shape=(20, 30), "
            "axes=FanAxes(in_axis=(-2,), out_axis=(-1,), batch_axis=())");
  EXPECT_EQ(init->debug_string("bias", {3}, {}), "constant(0.0)");
  try {
    init->initialize("embedding", key, {2, 2}, float32, {});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "DefaultInitializer: no rule matches parameter name 'embedding' (rules: "
              "'.*special_weight$', '.*bias$', '.*scale$', '.*weight$')");
  }
  // The fan-scaled rule needs fan axes.
  EXPECT_THROW(init->initialize("weight", key, {2, 2}, float32, std::nullopt), Error);
}

TEST(ParamInitTest, WeightInitializerRejectsUnknownSettings) {
  auto cfg = WeightInitializer::default_config();
  cfg->distribution = "laplace";
  EXPECT_THROW(cfg->instantiate<Initializer>(), Error);
  cfg->distribution = "normal";
  cfg->fan = std::string("fan_max");
  EXPECT_THROW(cfg->instantiate<Initializer>(), Error);
}

TEST(ParamInitTest, PerGroupInitializerDrawsEachGroupWithItsOwnKey) {
  auto cfg = PerGroupInitializer::default_config();
  cfg->num_groups = 2;
  auto init = cfg->instantiate<Initializer>();
  const Tensor key = random::key(5);
  const Tensor x = init->initialize("weight", key, {3, 4}, float32, kMatrixAxes);
  // Reference: split the key in two and draw each (3, 2) half with the default initializer.
  auto plain = DefaultInitializer::default_config()->instantiate<Initializer>();
  const Tensor keys = random::split(key, 2);
  for (int g = 0; g < 2; ++g) {
    const Tensor k = reshape(slice_axis(keys, 0, g, g + 1), {2});
    const auto want =
        plain->initialize("weight", k, {3, 2}, float32, kMatrixAxes).to_vector<float>();
    const auto got = slice_axis(x, 1, 2 * g, 2 * g + 2).to_vector<float>();
    EXPECT_EQ(got, want);
  }
  EXPECT_THROW(init->initialize("weight", key, {3, 5}, float32, kMatrixAxes), Error);
}

}  // namespace
}  // namespace axlearn
