#include "axlearn/optim/optimizers.h"

#include "axlearn/core/error.h"

namespace axlearn::optim {
namespace {

PerParamScale maybe_per_param_scale(const ConfigPtr<PerParamScaleConfig>& cfg,
                                    const std::string& field) {
  if (!cfg) return nullptr;
  auto scope = InstantiationScope::child(field);
  return cfg->instantiate();
}

Schedule schedule_field(const ConfigPtr<ScheduleConfig>& cfg, const std::string& field) {
  auto scope = InstantiationScope::child(field);
  return as_schedule_fn(cfg);
}

}  // namespace

Transformation sgd_optimizer(Schedule learning_rate, bool decouple_weight_decay, double momentum,
                             double weight_decay, PerParamScale weight_decay_per_param_scale,
                             bool nesterov) {
  Transformation decay =
      add_decayed_weights(weight_decay, std::nullopt, nullptr, weight_decay_per_param_scale);
  Transformation momentum_tx = trace(momentum, nesterov);
  Transformation lr = scale_by_schedule(scale_from_learning_rate(std::move(learning_rate)));
  if (decouple_weight_decay) return chain({momentum_tx, decay, lr});
  return chain({decay, momentum_tx, lr});
}

Transformation adam_optimizer(Schedule learning_rate, double b1, double b2, double eps,
                              double l2_regularizer_weight,
                              PerParamScale l2_regularizer_per_param_scale,
                              std::optional<Dtype> mu_dtype) {
  return chain({l2_regularizer(l2_regularizer_weight, std::move(l2_regularizer_per_param_scale)),
                scale_by_adam(b1, b2, eps, 0.0, mu_dtype),
                scale_by_schedule(scale_from_learning_rate(std::move(learning_rate)))});
}

Transformation adamw_optimizer(Schedule learning_rate, double b1, double b2, double eps,
                               double weight_decay, PerParamScale weight_decay_per_param_scale,
                               std::optional<Dtype> mu_dtype,
                               Transformation adam_update_transformation) {
  std::vector<Transformation> tx = {scale_by_adam(b1, b2, eps, 0.0, mu_dtype)};
  if (adam_update_transformation) tx.push_back(std::move(adam_update_transformation));
  tx.push_back(add_decayed_weights(weight_decay, std::nullopt, nullptr,
                                   std::move(weight_decay_per_param_scale)));
  tx.push_back(scale_by_schedule(scale_from_learning_rate(std::move(learning_rate))));
  return chain(std::move(tx));
}

Transformation adamw_decoupled_optimizer(double learning_rate, double b1, double b2, double eps,
                                         Schedule update_schedule, double weight_decay,
                                         PerParamScale weight_decay_per_param_scale,
                                         std::optional<Dtype> mu_dtype,
                                         Transformation adam_update_transformation) {
  std::vector<Transformation> tx = {scale_by_adam(b1, b2, eps, 0.0, mu_dtype)};
  if (adam_update_transformation) tx.push_back(std::move(adam_update_transformation));
  tx.push_back(
      scale_by_schedule(scale_from_learning_rate(constant_fn(learning_rate), /*flip_sign=*/false)));
  tx.push_back(add_decayed_weights(weight_decay, std::nullopt, nullptr,
                                   std::move(weight_decay_per_param_scale)));
  tx.push_back(scale_by_schedule(std::move(update_schedule)));
  tx.push_back(scale(-1.0));
  return chain(std::move(tx));
}

Transformation lion_optimizer(Schedule learning_rate, double b1, double b2,
                              std::optional<Dtype> mu_dtype, double weight_decay,
                              bool multiply_by_parameter_scale,
                              PerParamScale weight_decay_per_param_scale) {
  std::vector<Transformation> tx = {scale_by_lion(b1, b2, mu_dtype)};
  if (multiply_by_parameter_scale) tx.push_back(scale_by_param_block_rms());
  tx.push_back(add_decayed_weights(weight_decay, std::nullopt, nullptr,
                                   std::move(weight_decay_per_param_scale)));
  tx.push_back(scale_by_schedule(scale_from_learning_rate(std::move(learning_rate))));
  return chain(std::move(tx));
}

Transformation adafactor_optimizer(const AdafactorOptions& o) {
  if (!o.b2) fail("adafactor_optimizer: b2 (a schedule) is required");
  std::vector<Transformation> tx = {
      scale_by_factored_rms(o.factored, o.b2, 0, o.min_dim_size_to_factor, o.eps)};
  if (o.clipping_threshold) tx.push_back(clip_by_block_rms(o.clipping_threshold));
  if (o.learning_rate) {
    tx.push_back(scale_by_schedule(scale_from_learning_rate(o.learning_rate, false)));
  }
  if (o.multiply_by_parameter_scale) tx.push_back(scale_by_param_block_rms());
  if (o.b1) tx.push_back(ema(o.b1, /*debias=*/false, o.dtype_momentum));
  if (o.weight_decay) {
    if (!o.weight_decay_scale_by_learning_rate_exponent) {
      fail("adafactor_optimizer: weight_decay_scale_by_learning_rate_exponent must be set when "
           "weight_decay is");
    }
    tx.push_back(add_decayed_weights(*o.weight_decay, o.weight_decay_scale_by_learning_rate_exponent,
                                     o.learning_rate, o.weight_decay_per_param_scale));
  }
  tx.push_back(scale(-1.0));
  return chain(std::move(tx));
}

Transformation instantiate_transformation(const ConfigPtr<TransformationConfig>& cfg,
                                          const std::string& field) {
  if (!cfg) return nullptr;
  auto scope = InstantiationScope::child(field);
  return cfg->instantiate();
}

PerParamScale PerParamScaleByPath::call() const {
  std::vector<std::pair<std::string, double>> rules(scale_by_path->begin(), scale_by_path->end());
  return per_param_scale_by_path(std::move(rules), default_scale);
}

Transformation Chain::call() const {
  std::vector<Transformation> tx;
  for (size_t i = 0; i < args->size(); ++i) {
    Transformation t = instantiate_transformation((*args)[i], "args[" + std::to_string(i) + "]");
    if (!t) fail("chain: args[", i, "] is None");
    tx.push_back(std::move(t));
  }
  return chain(std::move(tx));
}

Transformation Scale::call() const { return scale(step_size); }

Transformation ScaleBySchedule::call() const {
  return scale_by_schedule(schedule_field(step_size_fn, "step_size_fn"), name.get());
}

Transformation ClipByGlobalNorm::call() const {
  return clip_by_global_norm(max_norm.get(), drop_norm.get(), eps);
}

Transformation SkipAndClipByGlobalNorm::call() const {
  Transformation t = instantiate_transformation(inner, "inner");
  if (!t) fail("skip_and_clip_by_global_norm: inner is None");
  return skip_and_clip_by_global_norm(std::move(t), drop_norm.get(), max_norm.get(), eps);
}

Transformation AddDecayedWeights::call() const {
  Schedule lr = learning_rate.get() ? schedule_field(learning_rate, "learning_rate") : nullptr;
  return add_decayed_weights(weight_decay, learning_rate_exponent.get(), std::move(lr),
                             maybe_per_param_scale(per_param_scale, "per_param_scale"));
}

Transformation Ema::call() const {
  return ema(schedule_field(decay, "decay"), debias, accumulator_dtype.get());
}

Transformation ParamEma::call() const {
  if (!decay.get()) return identity();
  return param_ema(schedule_field(decay, "decay"));
}

Transformation SgdOptimizer::call() const {
  return sgd_optimizer(schedule_field(learning_rate, "learning_rate"), decouple_weight_decay,
                       momentum, weight_decay,
                       maybe_per_param_scale(weight_decay_per_param_scale,
                                             "weight_decay_per_param_scale"),
                       nesterov);
}

Transformation AdamOptimizer::call() const {
  return adam_optimizer(schedule_field(learning_rate, "learning_rate"), b1, b2, eps,
                        l2_regularizer_weight,
                        maybe_per_param_scale(l2_regularizer_per_param_scale,
                                              "l2_regularizer_per_param_scale"),
                        mu_dtype.get());
}

Transformation AdamWOptimizer::call() const {
  return adamw_optimizer(
      schedule_field(learning_rate, "learning_rate"), b1, b2, eps, weight_decay,
      maybe_per_param_scale(weight_decay_per_param_scale, "weight_decay_per_param_scale"),
      mu_dtype.get(), instantiate_transformation(adam_update_transformation, "adam_update_transformation"));
}

Transformation AdamWDecoupledOptimizer::call() const {
  return adamw_decoupled_optimizer(
      learning_rate, b1, b2, eps, schedule_field(update_schedule, "update_schedule"), weight_decay,
      maybe_per_param_scale(weight_decay_per_param_scale, "weight_decay_per_param_scale"),
      mu_dtype.get(), instantiate_transformation(adam_update_transformation, "adam_update_transformation"));
}

Transformation LionOptimizer::call() const {
  return lion_optimizer(
      schedule_field(learning_rate, "learning_rate"), b1, b2, mu_dtype.get(), weight_decay,
      multiply_by_parameter_scale,
      maybe_per_param_scale(weight_decay_per_param_scale, "weight_decay_per_param_scale"));
}

Transformation AdafactorOptimizer::call() const {
  AdafactorOptions o;
  o.learning_rate = schedule_field(learning_rate, "learning_rate");
  o.b1 = b1.get() ? schedule_field(b1, "b1") : nullptr;
  o.b2 = schedule_field(b2, "b2");
  o.multiply_by_parameter_scale = multiply_by_parameter_scale;
  o.clipping_threshold = clipping_threshold.get();
  o.dtype_momentum = dtype_momentum;
  o.weight_decay = weight_decay.get();
  o.weight_decay_scale_by_learning_rate_exponent =
      weight_decay_scale_by_learning_rate_exponent.get();
  o.weight_decay_per_param_scale =
      maybe_per_param_scale(weight_decay_per_param_scale, "weight_decay_per_param_scale");
  o.eps = eps;
  o.factored = factored;
  o.min_dim_size_to_factor = min_dim_size_to_factor;
  return adafactor_optimizer(o);
}

}  // namespace axlearn::optim
