// Learner: micro-batch accumulation, update rules, drop_norm, bf16 training with f32 master
// parameters, EMA, summaries; and the optimizer state's partition specs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "axlearn/optim/learner.h"

namespace axlearn::optim {
namespace {

Tensor random_f32(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return array(v, shape);
}

NestedTensor regression_params() {
  return NestedTensor{{"w", random_f32({3, 2}, 1)}, {"b", random_f32({2}, 2)}};
}
NestedTensor regression_batch() {
  return NestedTensor{{"x", random_f32({8, 3}, 3)}, {"y", random_f32({8, 2}, 4)}};
}

// Mean squared error over the batch; aux carries the loss's sum of predictions.
ForwardOutput regression(const NestedTensor& p, const NestedTensor& in) {
  const Tensor pred = matmul(in.at("x").tensor(), p.at("w").tensor()) + p.at("b").tensor();
  const Tensor err = pred - astype(in.at("y").tensor(), pred.dtype());
  return {mean(err * err), NestedTensor{{"mean_pred", mean(pred)}}, NestedTensor()};
}

ConfigPtr<TransformationConfig> sgd_config(double lr, double momentum = 0.0) {
  auto cfg = SgdOptimizer::default_config();
  cfg->learning_rate = constant_schedule(lr);
  cfg->decouple_weight_decay = true;
  cfg->momentum = momentum;
  return cfg;
}

std::unique_ptr<Learner> make_learner(const ConfigPtr<TransformationConfig>& optimizer,
                                      const std::function<void(Learner::Config&)>& edit = {}) {
  auto cfg = Learner::default_config();
  cfg->name = "learner";
  cfg->optimizer = optimizer;
  if (edit) edit(*cfg);
  return cfg->instantiate<Learner>(nullptr);
}

const Summary* find_summary(const ForwardBackwardOutput& out, const std::string& name) {
  for (const auto& [path, s] : out.summaries) {
    if (path == name) return &s;
  }
  return nullptr;
}

double summary_value(const ForwardBackwardOutput& out, const std::string& name) {
  const Summary* s = find_summary(out, name);
  if (!s) ADD_FAILURE() << "no summary " << name;
  return s ? astype(s->value(), float64).item<double>() : NAN;
}

TEST(LearnerTest, FourMicrobatchesEqualOneStepOnTheWholeBatch) {
  auto adam = AdamOptimizer::default_config();
  adam->learning_rate = constant_schedule(0.1);
  adam->b1 = 0.9;
  adam->b2 = 0.99;
  adam->eps = 1e-8;
  auto whole = make_learner(adam);
  auto micro = make_learner(adam, [](Learner::Config& c) { c.num_microbatches = 4; });
  NestedTensor p1 = regression_params(), p4 = p1;
  NestedTensor s1 = whole->init(p1), s4 = micro->init(p4);
  for (int step = 0; step < 3; ++step) {
    ForwardBackwardOutput a = whole->forward_and_backward(regression, p1, s1, regression_batch());
    ForwardBackwardOutput b = micro->forward_and_backward(regression, p4, s4, regression_batch());
    EXPECT_NEAR(a.loss.item<float>(), b.loss.item<float>(), 1e-6);
    EXPECT_NEAR(a.aux.at("mean_pred").tensor().item<float>(),
                b.aux.at("mean_pred").tensor().item<float>(), 1e-6);
    p1 = a.params, s1 = a.learner_state, p4 = b.params, s4 = b.learner_state;
    for (const char* k : {"w", "b"}) {
      const auto x = p1.at(k).tensor().to_vector<float>();
      const auto y = p4.at(k).tensor().to_vector<float>();
      for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], 1e-5) << k << i;
    }
  }
  // The micro-batches must really have run: a batch that does not split is refused.
  NestedTensor odd{{"x", random_f32({6, 3}, 5)}, {"y", random_f32({6, 2}, 6)}};
  EXPECT_THROW(micro->forward_and_backward(regression, p4, s4, odd), Error);
}

TEST(LearnerTest, NoUpdateRuleLeavesFrozenParametersBitIdentical) {
  auto adamw = AdamWOptimizer::default_config();
  adamw->learning_rate = constant_schedule(0.1);
  adamw->b1 = 0.9;
  adamw->b2 = 0.99;
  adamw->eps = 1e-8;
  adamw->weight_decay = 0.5;
  auto learner = make_learner(adamw, [](Learner::Config& c) {
    c.update_rules = OrderedDict<UpdateType>{{"b", UpdateType::kNoUpdate}};
  });
  EXPECT_EQ(learner->update_type("b"), UpdateType::kNoUpdate);
  EXPECT_EQ(learner->update_type("w"), UpdateType::kAllUpdates);
  const NestedTensor p0 = regression_params();
  NestedTensor p = p0, s = learner->init(p);
  for (int step = 0; step < 3; ++step) {
    auto out = learner->forward_and_backward(regression, p, s, regression_batch());
    p = out.params, s = out.learner_state;
  }
  const auto b0 = p0.at("b").tensor().to_vector<float>(), b = p.at("b").tensor().to_vector<float>();
  EXPECT_EQ(std::memcmp(b0.data(), b.data(), b0.size() * sizeof(float)), 0);
  EXPECT_NE(p0.at("w").tensor().to_vector<float>(), p.at("w").tensor().to_vector<float>());
}

TEST(LearnerTest, StateUpdatesApplyOnlyWhereTheRuleAllowsThem) {
  auto learner = make_learner(sgd_config(0.1), [](Learner::Config& c) {
    c.update_rules = OrderedDict<UpdateType>{{"stats", UpdateType::kStateUpdates},
                                             {"frozen_stats", UpdateType::kOptimizers}};
  });
  NestedTensor p = regression_params();
  p["stats"] = full({2}, 1.0);
  p["frozen_stats"] = full({2}, 1.0);
  auto fn = [](const NestedTensor& params, const NestedTensor& in) {
    ForwardOutput out = regression(params, in);
    out.loss = out.loss + sum(params.at("stats").tensor() * params.at("frozen_stats").tensor());
    out.state_updates = NestedTensor{{"stats", full({2}, 7.0)}, {"frozen_stats", full({2}, 7.0)}};
    return out;
  };
  auto out = learner->forward_and_backward(fn, p, learner->init(p), regression_batch());
  // "stats": the state update, no gradient step; "frozen_stats": the gradient step (1 - 0.1 * 1).
  EXPECT_EQ(out.params.at("stats").tensor().to_vector<float>(), std::vector<float>(2, 7.0f));
  EXPECT_EQ(out.params.at("frozen_stats").tensor().to_vector<float>(),
            std::vector<float>(2, 1.0f - 0.1f));
}

TEST(LearnerTest, SkipAndClipDropsTheStepAndCountsIt) {
  auto skip = SkipAndClipByGlobalNorm::default_config();
  skip->inner = sgd_config(0.1, 0.9);
  skip->drop_norm = 1e-3;  // every gradient of this problem is larger
  auto learner = make_learner(skip);
  const NestedTensor p0 = regression_params();
  NestedTensor p = p0, s = learner->init(p);
  for (int step = 1; step <= 2; ++step) {
    auto out = learner->forward_and_backward(regression, p, s, regression_batch());
    p = out.params, s = out.learner_state;
    EXPECT_EQ(summary_value(out, "nonvalid_count"), step);
    EXPECT_EQ(summary_value(out, "update_norm"), 0.0);
  }
  EXPECT_EQ(p.at("w").tensor().to_vector<float>(), p0.at("w").tensor().to_vector<float>());
  // The inner momentum never saw the dropped gradients.
  EXPECT_EQ(s.at_path("optimizer/inner_state/0/trace/w").tensor().to_vector<float>(),
            std::vector<float>(6, 0.0f));
}

TEST(LearnerTest, ClipByGlobalNormDropNormZeroesTheGradient) {
  auto clip = ClipByGlobalNorm::default_config();
  clip->max_norm = 1.0;
  clip->drop_norm = 1e-3;
  auto chain_cfg = Chain::default_config();
  chain_cfg->args = std::vector<ConfigPtr<TransformationConfig>>{clip, sgd_config(0.1)};
  auto learner = make_learner(chain_cfg);
  const NestedTensor p = regression_params();
  auto out = learner->forward_and_backward(regression, p, learner->init(p), regression_batch());
  EXPECT_EQ(summary_value(out, "gradient_scale"), 0.0);
  EXPECT_GT(summary_value(out, "gradient_norm"), 1e-3);
  EXPECT_EQ(out.params.at("w").tensor().to_vector<float>(), p.at("w").tensor().to_vector<float>());
}

TEST(LearnerTest, SummariesReportLearningRateAndNorms) {
  auto learner = make_learner(sgd_config(0.25), [](Learner::Config& c) {
    c.enable_per_variable_summaries = true;
  });
  const NestedTensor p = regression_params();
  auto out = learner->forward_and_backward(regression, p, learner->init(p), regression_batch());
  const NestedTensor grads = value_and_grad(
      [](const NestedTensor& q) { return regression(q, regression_batch()).loss; }, p).grads;
  double gsq = 0, wsq = 0;
  for (const Tensor& g : grads.leaves()) {
    for (float v : g.to_vector<float>()) gsq += double(v) * v;
  }
  for (float v : grads.at("w").tensor().to_vector<float>()) wsq += double(v) * v;
  EXPECT_NEAR(summary_value(out, "learning_rate"), 0.25, 1e-12);
  EXPECT_NEAR(summary_value(out, "gradient_norm"), std::sqrt(gsq), 1e-5);
  EXPECT_NEAR(summary_value(out, "update_norm"), 0.25 * std::sqrt(gsq), 1e-5);
  EXPECT_NEAR(summary_value(out, "grad_norm/w"), std::sqrt(wsq), 1e-5);
  EXPECT_NE(find_summary(out, "param_norm/b"), nullptr);
}

TEST(LearnerTest, Bfloat16TrainingKeepsFloat32MasterParameters) {
  auto learner = make_learner(sgd_config(0.5), [](Learner::Config& c) {
    c.train_dtype = Dtype(bfloat16);
  });
  const NestedTensor p = regression_params();
  std::vector<Dtype> seen;
  auto fn = [&](const NestedTensor& params, const NestedTensor& in) {
    seen.push_back(params.at("w").tensor().dtype());
    return regression(params, in);
  };
  auto out = learner->forward_and_backward(fn, p, learner->init(p), regression_batch());
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen[0], bfloat16);
  EXPECT_EQ(out.params.at("w").tensor().dtype(), float32);
  // Reference: the gradient of the bf16 computation, applied to the f32 master weights.
  const NestedTensor grads = value_and_grad(
      [](const NestedTensor& q) {
        return astype(regression(q.map([](const Tensor& t) { return astype(t, bfloat16); }),
                                 regression_batch())
                          .loss,
                      float32);
      },
      p).grads;
  const auto w0 = p.at("w").tensor().to_vector<float>();
  const auto g = grads.at("w").tensor().to_vector<float>();
  const auto w1 = out.params.at("w").tensor().to_vector<float>();
  bool moved_off_bf16_grid = false;
  for (size_t i = 0; i < w0.size(); ++i) {
    EXPECT_FLOAT_EQ(w1[i], w0[i] - 0.5f * g[i]);
    uint32_t bits;
    std::memcpy(&bits, &w1[i], 4);
    moved_off_bf16_grid |= (bits & 0xFFFF) != 0;
  }
  EXPECT_TRUE(moved_off_bf16_grid);  // master weights keep f32 precision
}

TEST(LearnerTest, EmaTracksTheUpdatedParameters) {
  auto ema_cfg = ParamEma::default_config();
  ema_cfg->decay = constant_schedule(0.75);
  auto learner = make_learner(sgd_config(0.1), [&](Learner::Config& c) { c.ema = ema_cfg; });
  NestedTensor p = regression_params(), s = learner->init(p);
  std::vector<float> expected(6, 0.0f);
  for (int step = 0; step < 2; ++step) {
    auto out = learner->forward_and_backward(regression, p, s, regression_batch());
    p = out.params, s = out.learner_state;
    const auto w = p.at("w").tensor().to_vector<float>();
    for (size_t i = 0; i < w.size(); ++i) expected[i] = 0.25f * w[i] + 0.75f * expected[i];
  }
  const auto ema = s.at_path("ema/ema/w").tensor().to_vector<float>();
  for (size_t i = 0; i < ema.size(); ++i) EXPECT_NEAR(ema[i], expected[i], 1e-6);
  EXPECT_EQ(s.at_path("ema/count").tensor().item<int32_t>(), 2);
}

TEST(LearnerTest, StatePartitionSpecsFollowTheParameters) {
  auto adamw = AdamWDecoupledOptimizer::default_config();
  adamw->learning_rate = 0.1;
  adamw->b1 = 0.9;
  adamw->b2 = 0.95;
  adamw->eps = 1e-8;
  adamw->update_schedule = constant_schedule(1.0);
  adamw->mu_dtype = Dtype(bfloat16);
  auto learner = make_learner(adamw);
  NestedParameterSpec specs;
  specs["w"] = NestedParameterSpec(ParameterSpec{
      .shape = {8, 4}, .dtype = float32, .mesh_axes = MeshAxes{std::string("data"), std::monostate{}}});
  const NestedParameterSpec state = learner->create_state_partition_specs(specs);
  const ParameterSpec& mu = state.at_path("optimizer/0/mu/w");
  EXPECT_EQ(mu.shape, (Shape{8, 4}));
  EXPECT_EQ(mu.dtype, bfloat16);
  EXPECT_EQ(mesh_axes_str(*mu.mesh_axes), mesh_axes_str(*specs.at_path("w").mesh_axes));
  EXPECT_EQ(state.at_path("optimizer/0/nu/w").dtype, float32);
  EXPECT_EQ(state.at_path("optimizer/0/count").dtype, int32);
  // The specs describe exactly what init() creates.
  const NestedTensor init = learner->init(NestedTensor{{"w", zeros({8, 4})}});
  for (const auto& [path, spec] : state.flatten_with_paths()) {
    const Tensor& t = init.at_path(path).tensor();
    EXPECT_EQ(t.shape(), spec.shape) << path;
    EXPECT_EQ(t.dtype(), *spec.dtype) << path;
  }
  EXPECT_EQ(state.flatten_with_paths().size(), init.flatten_with_paths().size());

  // Adafactor's factored moments drop one dimension (and its mesh axis) each.
  AdafactorOptions o;
  o.learning_rate = constant_fn(0.1);
  o.b2 = AdafactorDecayRate::default_config()->instantiate();
  o.min_dim_size_to_factor = 2;
  const NestedParameterSpec af = adafactor_optimizer(o)->partition(specs);
  // As optax: v_row reduces the largest dim (0 here), v_col the second largest.
  EXPECT_EQ(af.at_path("0/v_row/w").shape, (Shape{4}));
  EXPECT_EQ(af.at_path("0/v_col/w").shape, (Shape{8}));
  EXPECT_EQ(mesh_axes_str(*af.at_path("0/v_row/w").mesh_axes), "(None,)");
  EXPECT_EQ(mesh_axes_str(*af.at_path("0/v_col/w").mesh_axes), "('data',)");
}

}  // namespace
}  // namespace axlearn::optim
