// Trajectory parity: every optimizer runs 50 steps on the problem of
// tests/parity/gen_optim_vectors.py and must stay within 1e-6 relative (f32) of the committed
// optax trajectories (AXLearn semantics where they differ; see the script's docstring).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "axlearn/optim/optimizers.h"

namespace axlearn::optim {
namespace {

const nlohmann::json& vectors() {
  static const nlohmann::json j = [] {
    std::ifstream f(std::string(AXLEARN_SOURCE_DIR) + "/tests/parity/testdata/optim_vectors.json");
    if (!f) throw std::runtime_error("missing tests/parity/testdata/optim_vectors.json");
    return nlohmann::json::parse(f);
  }();
  return j;
}

Tensor vec(const char* name, const Shape& shape) {
  return array(vectors()["problem"][name].get<std::vector<float>>(), shape);
}

Tensor loss_fn(const NestedTensor& p) {
  const Tensor& w = p.at("w").tensor();
  const Tensor& b = p.at("b").tensor();
  return sum(vec("aw", {4, 3}) * square(w - vec("cw", {4, 3}))) +
         sum(vec("ab", {3}) * square(b - vec("cb", {3}))) + sum(w * w * w * w) * 0.05;
}

NestedParameterSpec problem_specs(std::optional<double> w_decay_scale = std::nullopt) {
  NestedParameterSpec specs;
  specs["w"] = NestedParameterSpec(ParameterSpec{.shape = {4, 3}, .dtype = float32,
                                                 .weight_decay_scale = w_decay_scale});
  specs["b"] = NestedParameterSpec(ParameterSpec{.shape = {3}, .dtype = float32});
  return specs;
}

// Runs tx for as many steps as the reference has and returns the worst relative error of a
// parameter tensor after any step: max |got - ref| / max |ref| over the tensor's elements (an
// element-wise ratio would judge entries passing through zero on rounding noise alone).
double max_relative_error(const std::string& name, const Transformation& tx,
                          const NestedParameterSpec& specs) {
  const auto& ref = vectors()["cases"][name];
  NestedTensor params{{"w", vec("w0", {4, 3})}, {"b", vec("b0", {3})}};
  NestedTensor state = tx->init(make_opt_params(params, &specs));
  double worst = 0;
  const size_t steps = ref["w"].size();
  for (size_t step = 0; step < steps; ++step) {
    const NestedTensor grads = value_and_grad(loss_fn, params).grads;
    UpdateResult r = tx->update(grads, state, make_opt_params(params, &specs));
    params = NestedTensor::zip_map({&params, &r.updates},
                                   [](const std::vector<Tensor>& v) { return v[0] + v[1]; });
    state = std::move(r.state);
    eval(params);
    eval(state);
    for (const char* key : {"w", "b"}) {
      const auto got = params.at(key).tensor().to_vector<float>();
      const auto want = ref[key][step].get<std::vector<double>>();
      double err = 0, scale = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        err = std::max(err, std::fabs(double(got[i]) - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
      }
      worst = std::max(worst, err / scale);
    }
  }
  return worst;
}

constexpr double kTol = 1e-6;

TEST(OptimizerParityTest, SgdMomentumMatchesOptax) {
  Transformation tx = sgd_optimizer(constant_fn(0.05), false, 0.9);
  EXPECT_LT(max_relative_error("sgd_momentum", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, SgdNesterovWithCoupledDecayMatchesOptax) {
  Transformation tx = sgd_optimizer(constant_fn(0.05), false, 0.9, 0.01, nullptr, true);
  EXPECT_LT(max_relative_error("sgd_nesterov_coupled_decay", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, SgdDecoupledDecayAddsDecayAfterMomentum) {
  Transformation tx = sgd_optimizer(constant_fn(0.05), true, 0.9, 0.01);
  EXPECT_LT(max_relative_error("sgd_decoupled_decay", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, AdamMatchesOptax) {
  Transformation tx = adam_optimizer(constant_fn(0.01), 0.9, 0.999, 1e-8);
  EXPECT_LT(max_relative_error("adam", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, AdamWithL2RegularizerMatchesOptax) {
  Transformation tx = adam_optimizer(constant_fn(0.01), 0.9, 0.999, 1e-8, 0.01);
  EXPECT_LT(max_relative_error("adam_l2", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, AdamWPerParamDecayPrefersParameterSpecOverPathRegex) {
  // "b" gets 0 from the regex; "w" matches ".*" (3.0) but its ParameterSpec says 0.5, which wins.
  auto lr = LinearScheduleWithWarmup::default_config();
  lr->peak_lr = 0.02;
  lr->max_step = 50;
  lr->warmup_steps = 10;
  Transformation tx = adamw_optimizer(lr->instantiate(), 0.9, 0.999, 1e-8, 0.1,
                                      per_param_scale_by_path({{"b", 0.0}, {".*", 3.0}}));
  EXPECT_LT(max_relative_error("adamw_per_param_decay", tx, problem_specs(0.5)), kTol);
}

ConfigPtr<TransformationConfig> fuji_learner_optimizer(std::optional<Dtype> mu_dtype,
                                                       bool with_clip) {
  auto schedule = CosineWithLinearWarmup::default_config();
  schedule->peak_lr = 1.0;
  schedule->max_step = 50;
  schedule->warmup_steps = 5;
  schedule->alpha = 0.1;
  auto adamw = AdamWDecoupledOptimizer::default_config();
  adamw->learning_rate = 0.01;
  adamw->b1 = 0.9;
  adamw->b2 = 0.95;
  adamw->eps = 1e-8;
  adamw->weight_decay = 0.1;
  adamw->update_schedule = ConfigPtr<ScheduleConfig>(schedule);
  adamw->mu_dtype = mu_dtype;
  if (!with_clip) return adamw;
  auto clip = ClipByGlobalNorm::default_config();
  clip->max_norm = 1.0;
  auto chain_cfg = Chain::default_config();
  chain_cfg->args = std::vector<ConfigPtr<TransformationConfig>>{clip, adamw};
  return chain_cfg;
}

TEST(OptimizerParityTest, FujiClippedAdamWDecoupledConfigMatchesAxlearnSemantics) {
  Transformation tx = fuji_learner_optimizer(std::nullopt, true)->instantiate();
  EXPECT_LT(max_relative_error("fuji_adamw_decoupled", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, AdamWDecoupledKeepsFirstMomentInBfloat16) {
  Transformation tx = fuji_learner_optimizer(Dtype(bfloat16), false)->instantiate();
  NestedTensor state = tx->init(make_opt_params(NestedTensor{{"w", zeros({4, 3})}}));
  EXPECT_EQ(state.at_path("0/mu/w").tensor().dtype(), bfloat16);
  EXPECT_EQ(state.at_path("0/nu/w").tensor().dtype(), float32);
  EXPECT_LT(max_relative_error("adamw_decoupled_bf16_mu", tx, problem_specs()), kTol);
}

TEST(OptimizerParityTest, LionMatchesOptax) {
  Transformation tx = lion_optimizer(constant_fn(0.01), 0.9, 0.99, std::nullopt, 0.1);
  EXPECT_LT(max_relative_error("lion", tx, problem_specs()), kTol);
}

AdafactorOptions adafactor_options() {
  AdafactorOptions o;
  o.learning_rate = constant_fn(0.05);
  o.b2 = AdafactorDecayRate::default_config()->instantiate();
  o.min_dim_size_to_factor = 2;
  return o;
}

TEST(OptimizerParityTest, AdafactorFactoredWithParameterScaleMatchesOptax) {
  AdafactorOptions o = adafactor_options();
  o.multiply_by_parameter_scale = true;
  o.clipping_threshold = 1.0;
  EXPECT_LT(max_relative_error("adafactor", adafactor_optimizer(o), problem_specs()), kTol);
}

TEST(OptimizerParityTest, AdafactorWithMomentumAndDecayMatchesOptax) {
  AdafactorOptions o = adafactor_options();
  o.clipping_threshold = 1.0;
  o.b1 = constant_fn(0.9);
  o.weight_decay = 0.01;
  o.weight_decay_scale_by_learning_rate_exponent = 0.0;
  EXPECT_LT(max_relative_error("adafactor_momentum_decay", adafactor_optimizer(o), problem_specs()),
            kTol);
}

TEST(OptimizerParityTest, AdafactorUnfactoredMatchesOptax) {
  AdafactorOptions o = adafactor_options();
  o.factored = false;
  o.clipping_threshold = std::nullopt;
  EXPECT_LT(max_relative_error("adafactor_unfactored", adafactor_optimizer(o), problem_specs()),
            kTol);
}

}  // namespace
}  // namespace axlearn::optim
