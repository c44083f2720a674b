// Optimizers composed from gradient transformations (AXLearn's optimizers.py): sgd, adam, adamw,
// adamw_decoupled, lion, adafactor — as C++ functions and as registered function configs, so a
// learner config holds e.g. chain(clip_by_global_norm(1), adamw_decoupled_optimizer(...)).
// Updates are already negated: new_param = param + update.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/optim/gradient_transformation.h"
#include "axlearn/optim/schedule.h"

namespace axlearn::optim {

// SGD with momentum (optionally Nesterov) and weight decay, coupled (added to the gradient
// before momentum, as PyTorch / TF) or decoupled (added after momentum, before the learning rate).
Transformation sgd_optimizer(Schedule learning_rate, bool decouple_weight_decay,
                             double momentum = 0.0, double weight_decay = 0.0,
                             PerParamScale weight_decay_per_param_scale = nullptr,
                             bool nesterov = false);
// Adam with an optional L2 regularizer added to the gradient.
Transformation adam_optimizer(Schedule learning_rate, double b1, double b2, double eps,
                              double l2_regularizer_weight = 0.0,
                              PerParamScale l2_regularizer_per_param_scale = nullptr,
                              std::optional<Dtype> mu_dtype = std::nullopt);
// AdamW as PyTorch / optax: -lr * (adam_update + weight_decay * param).
Transformation adamw_optimizer(Schedule learning_rate, double b1, double b2, double eps,
                               double weight_decay = 0.0,
                               PerParamScale weight_decay_per_param_scale = nullptr,
                               std::optional<Dtype> mu_dtype = std::nullopt,
                               Transformation adam_update_transformation = nullptr);
// AdamW as Algorithm 2 of arXiv:1711.05101 (AXLearn's adamw_decoupled_optimizer):
// -update_schedule(step) * (learning_rate * adam_update + weight_decay * param).
Transformation adamw_decoupled_optimizer(double learning_rate, double b1, double b2, double eps,
                                         Schedule update_schedule, double weight_decay = 0.0,
                                         PerParamScale weight_decay_per_param_scale = nullptr,
                                         std::optional<Dtype> mu_dtype = std::nullopt,
                                         Transformation adam_update_transformation = nullptr);
// Lion (arXiv:2302.06675): -lr * (sign(...) [* rms(param)] + weight_decay * param).
Transformation lion_optimizer(Schedule learning_rate, double b1, double b2,
                              std::optional<Dtype> mu_dtype = std::nullopt,
                              double weight_decay = 0.0, bool multiply_by_parameter_scale = false,
                              PerParamScale weight_decay_per_param_scale = nullptr);

struct AdafactorOptions {
  Schedule learning_rate;
  Schedule b1 = nullptr;  // null: no momentum
  Schedule b2;            // e.g. AdafactorDecayRate
  bool multiply_by_parameter_scale = false;
  std::optional<double> clipping_threshold = 1.0;
  Dtype dtype_momentum = float32;
  std::optional<double> weight_decay = std::nullopt;
  std::optional<double> weight_decay_scale_by_learning_rate_exponent = std::nullopt;
  PerParamScale weight_decay_per_param_scale = nullptr;
  double eps = 1e-30;
  bool factored = true;
  int64_t min_dim_size_to_factor = 128;
};
// Adafactor (arXiv:1804.04235): factored second moments, update clipping by block RMS,
// optional parameter-scale multiplication, momentum and weight decay.
Transformation adafactor_optimizer(const AdafactorOptions& options);

// ---- configs ----
using TransformationConfig = FunctionConfig<Transformation>;
using PerParamScaleConfig = FunctionConfig<PerParamScale>;

// Nested transformation configs are instantiated with InstantiationScope so errors name them.
Transformation instantiate_transformation(const ConfigPtr<TransformationConfig>& cfg,
                                          const std::string& field);

struct PerParamScaleByPath : PerParamScaleConfig {
  AXLEARN_FUNCTION_CONFIG(PerParamScaleByPath, "axlearn.common.optimizers.per_param_scale_by_path")
  Field<OrderedDict<double>> scale_by_path{
      this, "scale_by_path", {}, "Regex -> scale; the first regex fully matching the path wins."};
  Field<std::string> description{this, "description", "", "What the scale is used for."};
  Field<double> default_scale{this, "default_scale", 1.0, "Scale when no regex matches."};

 protected:
  PerParamScale call() const override;
};

struct Chain : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(Chain, "axlearn.common.optimizers.chain")
  Field<std::vector<ConfigPtr<TransformationConfig>>> args{this, "args", REQUIRED,
                                                           "Transformations, applied in order."};

 protected:
  Transformation call() const override;
};

struct Scale : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(Scale, "axlearn.common.optimizers.scale")
  Field<double> step_size{this, "step_size", REQUIRED, "Multiplier of the updates."};

 protected:
  Transformation call() const override;
};

struct ScaleBySchedule : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(ScaleBySchedule, "axlearn.common.optimizers.scale_by_schedule")
  Field<ConfigPtr<ScheduleConfig>> step_size_fn{this, "step_size_fn", REQUIRED,
                                                "Schedule of the multiplier."};
  Field<std::optional<std::string>> name{this, "name", std::nullopt, "Summary name prefix."};

 protected:
  Transformation call() const override;
};

struct ClipByGlobalNorm : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(ClipByGlobalNorm, "axlearn.common.optimizers.clip_by_global_norm")
  Field<std::optional<double>> max_norm{this, "max_norm", std::nullopt,
                                        "Global norm bound; None: no clipping."};
  Field<std::optional<double>> drop_norm{this, "drop_norm", std::nullopt,
                                         "Zero the gradients when the norm >= drop_norm."};
  Field<double> eps{this, "eps", 1e-8, "Added to the norm before dividing."};

 protected:
  Transformation call() const override;
};

struct SkipAndClipByGlobalNorm : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(SkipAndClipByGlobalNorm,
                          "axlearn.common.optimizers.skip_and_clip_by_global_norm")
  Field<ConfigPtr<TransformationConfig>> inner{this, "inner", REQUIRED, "The wrapped optimizer."};
  Field<std::optional<double>> drop_norm{this, "drop_norm", std::nullopt,
                                         "Skip the step when the norm >= drop_norm."};
  Field<std::optional<double>> max_norm{this, "max_norm", std::nullopt, "Global norm bound."};
  Field<double> eps{this, "eps", 1e-8, "Added to the norm before dividing."};

 protected:
  Transformation call() const override;
};

struct AddDecayedWeights : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(AddDecayedWeights, "axlearn.common.optimizers.add_decayed_weights")
  Field<double> weight_decay{this, "weight_decay", REQUIRED, "Base decay rate."};
  Field<std::optional<double>> learning_rate_exponent{
      this, "learning_rate_exponent", std::nullopt, "Scale by lr**exponent; None: no scaling."};
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", nullptr,
                                                 "Needed with learning_rate_exponent."};
  Field<ConfigPtr<PerParamScaleConfig>> per_param_scale{this, "per_param_scale", nullptr,
                                                        "Per-parameter scales; None: 1."};

 protected:
  Transformation call() const override;
};

struct Ema : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(Ema, "axlearn.common.optimizers.ema")
  Field<ConfigPtr<ScheduleConfig>> decay{this, "decay", REQUIRED, "Decay schedule."};
  Field<bool> debias{this, "debias", true, "Divide by 1 - decay**count."};
  Field<std::optional<Dtype>> accumulator_dtype{this, "accumulator_dtype", Dtype(float32),
                                                "Dtype of the average; None: the update's."};

 protected:
  Transformation call() const override;
};

struct ParamEma : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(ParamEma, "axlearn.common.optimizers.param_ema")
  Field<ConfigPtr<ScheduleConfig>> decay{this, "decay", nullptr, "Decay; None disables the EMA."};

 protected:
  Transformation call() const override;
};

struct SgdOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(SgdOptimizer, "axlearn.common.optimizers.sgd_optimizer")
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", REQUIRED, "Schedule."};
  Field<bool> decouple_weight_decay{this, "decouple_weight_decay", REQUIRED,
                                    "Add the decay after the momentum rather than before."};
  Field<double> momentum{this, "momentum", 0.0, "Momentum decay."};
  Field<bool> nesterov{this, "nesterov", false, "Nesterov momentum."};
  Field<double> weight_decay{this, "weight_decay", 0.0, "Weight decay rate."};
  Field<ConfigPtr<PerParamScaleConfig>> weight_decay_per_param_scale{
      this, "weight_decay_per_param_scale", nullptr, "Per-parameter decay scales."};

 protected:
  Transformation call() const override;
};

struct AdamOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(AdamOptimizer, "axlearn.common.optimizers.adam_optimizer")
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", REQUIRED, "Schedule."};
  Field<double> b1{this, "b1", REQUIRED, "First-moment decay."};
  Field<double> b2{this, "b2", REQUIRED, "Second-moment decay."};
  Field<double> eps{this, "eps", REQUIRED, "Added to sqrt(v_hat)."};
  Field<double> l2_regularizer_weight{this, "l2_regularizer_weight", 0.0, "L2 weight."};
  Field<ConfigPtr<PerParamScaleConfig>> l2_regularizer_per_param_scale{
      this, "l2_regularizer_per_param_scale", nullptr, "Per-parameter L2 scales."};
  Field<std::optional<Dtype>> mu_dtype{this, "mu_dtype", std::nullopt, "First-moment dtype."};

 protected:
  Transformation call() const override;
};

struct AdamWOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(AdamWOptimizer, "axlearn.common.optimizers.adamw_optimizer")
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", REQUIRED, "Schedule."};
  Field<double> b1{this, "b1", REQUIRED, "First-moment decay."};
  Field<double> b2{this, "b2", REQUIRED, "Second-moment decay."};
  Field<double> eps{this, "eps", REQUIRED, "Added to sqrt(v_hat)."};
  Field<double> weight_decay{this, "weight_decay", 0.0, "Weight decay (times the lr)."};
  Field<ConfigPtr<PerParamScaleConfig>> weight_decay_per_param_scale{
      this, "weight_decay_per_param_scale", nullptr, "Per-parameter decay scales."};
  Field<std::optional<Dtype>> mu_dtype{this, "mu_dtype", std::nullopt, "First-moment dtype."};
  Field<ConfigPtr<TransformationConfig>> adam_update_transformation{
      this, "adam_update_transformation", nullptr, "Applied to the Adam update before decay."};

 protected:
  Transformation call() const override;
};

struct AdamWDecoupledOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(AdamWDecoupledOptimizer,
                          "axlearn.common.optimizers.adamw_decoupled_optimizer")
  Field<double> learning_rate{this, "learning_rate", REQUIRED, "Peak learning rate (alpha)."};
  Field<double> b1{this, "b1", REQUIRED, "First-moment decay."};
  Field<double> b2{this, "b2", REQUIRED, "Second-moment decay."};
  Field<double> eps{this, "eps", REQUIRED, "Added to sqrt(v_hat)."};
  Field<ConfigPtr<ScheduleConfig>> update_schedule{
      this, "update_schedule", REQUIRED, "Scales both the update and the decay (eta)."};
  Field<double> weight_decay{this, "weight_decay", 0.0, "Decay rate (lambda), not times lr."};
  Field<ConfigPtr<PerParamScaleConfig>> weight_decay_per_param_scale{
      this, "weight_decay_per_param_scale", nullptr, "Per-parameter decay scales."};
  Field<std::optional<Dtype>> mu_dtype{this, "mu_dtype", std::nullopt, "First-moment dtype."};
  Field<ConfigPtr<TransformationConfig>> adam_update_transformation{
      this, "adam_update_transformation", nullptr, "Applied to the Adam update before decay."};

 protected:
  Transformation call() const override;
};

struct LionOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(LionOptimizer, "axlearn.common.optimizers.lion_optimizer")
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", REQUIRED, "Schedule."};
  Field<double> b1{this, "b1", REQUIRED, "Interpolation for the update's sign."};
  Field<double> b2{this, "b2", REQUIRED, "Momentum decay."};
  Field<std::optional<Dtype>> mu_dtype{this, "mu_dtype", std::nullopt, "Momentum dtype."};
  Field<double> weight_decay{this, "weight_decay", 0.0, "Weight decay (times the lr)."};
  Field<bool> multiply_by_parameter_scale{this, "multiply_by_parameter_scale", false,
                                          "Scale updates by the parameter's RMS."};
  Field<ConfigPtr<PerParamScaleConfig>> weight_decay_per_param_scale{
      this, "weight_decay_per_param_scale", nullptr, "Per-parameter decay scales."};

 protected:
  Transformation call() const override;
};

struct AdafactorOptimizer : TransformationConfig {
  AXLEARN_FUNCTION_CONFIG(AdafactorOptimizer, "axlearn.common.optimizers.adafactor_optimizer")
  Field<ConfigPtr<ScheduleConfig>> learning_rate{this, "learning_rate", REQUIRED, "Schedule."};
  Field<ConfigPtr<ScheduleConfig>> b1{this, "b1", nullptr, "Momentum schedule; None: none."};
  Field<ConfigPtr<ScheduleConfig>> b2{this, "b2", REQUIRED, "Second-moment decay schedule."};
  Field<bool> multiply_by_parameter_scale{this, "multiply_by_parameter_scale", REQUIRED,
                                          "Scale updates by the parameter's RMS."};
  Field<std::optional<double>> clipping_threshold{this, "clipping_threshold", REQUIRED,
                                                  "Block-RMS clipping threshold; None: none."};
  Field<Dtype> dtype_momentum{this, "dtype_momentum", Dtype(float32), "Momentum dtype."};
  Field<std::optional<double>> weight_decay{this, "weight_decay", std::nullopt, "Decay rate."};
  Field<std::optional<double>> weight_decay_scale_by_learning_rate_exponent{
      this, "weight_decay_scale_by_learning_rate_exponent", std::nullopt,
      "Scale the decay by lr**exponent; required with weight_decay."};
  Field<ConfigPtr<PerParamScaleConfig>> weight_decay_per_param_scale{
      this, "weight_decay_per_param_scale", nullptr, "Per-parameter decay scales."};
  Field<double> eps{this, "eps", 1e-30, "Added to g**2."};
  Field<bool> factored{this, "factored", true, "Factor the second moments of matrices."};
  Field<int64_t> min_dim_size_to_factor{this, "min_dim_size_to_factor", 128,
                                        "Factor only when two dims are at least this large."};

 protected:
  Transformation call() const override;
};

}  // namespace axlearn::optim
