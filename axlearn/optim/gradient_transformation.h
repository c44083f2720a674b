// Optax-style gradient transformations over NestedTensor trees (AXLearn's optimizer_base.py and
// the building blocks of optimizers.py). A transformation has `init` (its state for these
// parameters), `update` (gradients -> updates, new state) and `partition` (the state's
// ParameterSpecs — shape, dtype, mesh axes — derived from the parameters', so the state can be
// sharded like them). States are NestedTensor dicts; counts are int32 scalars.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/nested.h"
#include "axlearn/module/base_layer.h"
#include "axlearn/optim/schedule.h"

namespace axlearn::optim {

// The parameters as an optimizer sees them: values, and the per-parameter settings of their
// ParameterSpecs (AXLearn's OptParam).
struct OptParams {
  NestedTensor value;
  // ParameterSpec.weight_decay_scale by "/"-joined path; absent means None.
  std::map<std::string, double> weight_decay_scale;
};
// `specs`, when given, must hold a spec for every parameter path.
OptParams make_opt_params(const NestedTensor& values, const NestedParameterSpec* specs = nullptr);

struct UpdateResult {
  NestedTensor updates;
  NestedTensor state;
};

class GradientTransformation {
 public:
  virtual ~GradientTransformation() = default;
  virtual NestedTensor init(const OptParams& params) const = 0;
  virtual UpdateResult update(const NestedTensor& updates, const NestedTensor& state,
                              const OptParams& params) const = 0;
  // Specs of init()'s state, leaf for leaf: {shape, dtype, mesh_axes}.
  virtual NestedParameterSpec partition(const NestedParameterSpec& param_specs) const = 0;
};
using Transformation = std::shared_ptr<const GradientTransformation>;

using InitFn = std::function<NestedTensor(const OptParams&)>;
using UpdateFn =
    std::function<UpdateResult(const NestedTensor&, const NestedTensor&, const OptParams&)>;
using PartitionFn = std::function<NestedParameterSpec(const NestedParameterSpec&)>;
Transformation make_transformation(InitFn init, UpdateFn update, PartitionFn partition);

// Scale of each parameter by its path (per_param_scale in AXLearn).
using PerParamScale = std::function<double(const std::string& path)>;
// The first regex (std::regex ECMAScript) fully matching the path gives the scale, else default.
PerParamScale per_param_scale_by_path(std::vector<std::pair<std::string, double>> scale_by_path,
                                      double default_scale = 1.0);

// Adds `value` as a scalar summary to the current invocation context, if there is one.
void maybe_add_summary(const std::string& name, const Tensor& value);

// ---- combinators ----
Transformation chain(std::vector<Transformation> transformations);
Transformation identity();

// ---- stateless scalings ----
Transformation scale(double step_size);
// Multiplies updates by schedule(count); summaries "{name/}schedule_step" and "schedule_scale".
Transformation scale_by_schedule(Schedule schedule, std::optional<std::string> name = std::nullopt);
// -learning_rate(step) (or +, without flip_sign), adding the "learning_rate" summary.
Schedule scale_from_learning_rate(Schedule learning_rate, bool flip_sign = true);

// Scales all updates by min(1, max_norm / (norm + eps)) and, with drop_norm, by 0 when
// norm >= drop_norm (the optimizer still runs on the zeros). Summaries "gradient_norm" and
// "gradient_scale".
Transformation clip_by_global_norm(std::optional<double> max_norm,
                                   std::optional<double> drop_norm = std::nullopt,
                                   double eps = 1e-8);
// Skips the step when the raw norm >= drop_norm (or is not finite): zero updates and the
// inner state unchanged; counts skipped steps in state "nonvalid_count" and its summary.
// Otherwise clips like clip_by_global_norm and applies `inner`.
Transformation skip_and_clip_by_global_norm(Transformation inner, std::optional<double> drop_norm,
                                            std::optional<double> max_norm = std::nullopt,
                                            double eps = 1e-8);
// updates / max(1, rms(update) / threshold), per parameter.
Transformation clip_by_block_rms(std::optional<double> threshold);
// updates * max(rms(param), min_scale), per parameter.
Transformation scale_by_param_block_rms(double min_scale = 1e-3);

// updates + weight_decay * lr(count)**learning_rate_exponent * scale * param, where scale is
// ParameterSpec.weight_decay_scale when set, else per_param_scale(path), else 1.
Transformation add_decayed_weights(double weight_decay,
                                   std::optional<double> learning_rate_exponent = std::nullopt,
                                   Schedule learning_rate = nullptr,
                                   PerParamScale per_param_scale = nullptr);
// updates + regularizer_weight * scale * param (L2 regularization as a gradient term).
Transformation l2_regularizer(double regularizer_weight, PerParamScale per_param_scale = nullptr);

// ---- stateful ----
// Momentum: trace = g + decay * trace; updates = trace, or g + decay * trace with nesterov.
Transformation trace(double decay, bool nesterov = false,
                     std::optional<Dtype> accumulator_dtype = std::nullopt);
// Adam's moments with bias correction: m_hat / (sqrt(v_hat + eps_root) + eps).
Transformation scale_by_adam(double b1, double b2, double eps, double eps_root = 0.0,
                             std::optional<Dtype> mu_dtype = std::nullopt);
// Lion: sign((1 - b1) g + b1 mu); mu = (1 - b2) g + b2 mu.
Transformation scale_by_lion(double b1, double b2, std::optional<Dtype> mu_dtype = std::nullopt);
// EMA of the updates: ema = (1 - d) g + d ema, updates = ema (/ (1 - d**count) with debias).
Transformation ema(Schedule decay, bool debias = true,
                   std::optional<Dtype> accumulator_dtype = Dtype(float32));
// Adafactor's second-moment rescaling: for parameters with two dims >= min_dim_size_to_factor,
// row and column means of g**2 + epsilon (over the two largest dims); else the full moment.
Transformation scale_by_factored_rms(bool factored, Schedule decay_rate, int64_t step_offset = 0,
                                     int64_t min_dim_size_to_factor = 128, double epsilon = 1e-30);
// EMA of the parameters (Polyak averaging) in state "ema"; updates pass through.
Transformation param_ema(Schedule decay);

// Specs helpers shared by transformations.
ParameterSpec scalar_state_spec(Dtype dtype = int32);
NestedParameterSpec copy_partition(const NestedParameterSpec& param_specs,
                                   std::optional<Dtype> dtype = std::nullopt);

}  // namespace axlearn::optim
