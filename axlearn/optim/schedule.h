// Schedules (AXLearn's schedule.py): functions of the step count (an int32 scalar tensor) giving
// an f32 scalar tensor — learning rates, update scales, decay rates. Each is a registered
// function config, so `learning_rate.fn=cosine_with_linear_warmup` swaps one for another.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/core/tensor.h"

namespace axlearn::optim {

// step: int32 scalar (the optimizer's update count) -> f32 scalar.
using Schedule = std::function<Tensor(const Tensor& step)>;
using ScheduleConfig = FunctionConfig<Schedule>;

// The schedule of `cfg`, or the constant `default_value` when cfg is None.
Schedule as_schedule_fn(const ConfigPtr<ScheduleConfig>& cfg, double default_value = 1.0);
Schedule constant_fn(double value);

struct ConstantSchedule : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(ConstantSchedule, "optax.constant_schedule")
  Field<double> value{this, "value", REQUIRED, "The value at every step."};

 protected:
  Schedule call() const override;
};

// begin_value + clip((step - begin_step) / (end_step - begin_step), 0, 1)**power
//   * (end_value - begin_value).
struct Polynomial : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(Polynomial, "axlearn.common.schedule.polynomial")
  Field<int64_t> begin_step{this, "begin_step", 0, "First step of the ramp."};
  Field<double> begin_value{this, "begin_value", 0.0, "Value at begin_step and before."};
  Field<int64_t> end_step{this, "end_step", 1, "Last step of the ramp (> begin_step)."};
  Field<double> end_value{this, "end_value", 0.0, "Value at end_step and after."};
  Field<double> power{this, "power", 1.0, "Exponent of the ramp; 1 is linear."};

 protected:
  Schedule call() const override;
};

// exp of the linear ramp from log(begin_value) to log(end_value); both must be positive.
struct Exponential : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(Exponential, "axlearn.common.schedule.exponential")
  Field<int64_t> begin_step{this, "begin_step", 0, "First step of the decay."};
  Field<double> begin_value{this, "begin_value", REQUIRED, "Value at begin_step (> 0)."};
  Field<int64_t> end_step{this, "end_step", 1, "Last step of the decay (> begin_step)."};
  Field<double> end_value{this, "end_value", REQUIRED, "Value at end_step (> 0)."};

 protected:
  Schedule call() const override;
};

// scale * max(step, warmup_steps)**-0.5 (T5's inverse square root with a constant warmup).
struct InverseSqrt : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(InverseSqrt, "axlearn.common.schedule.inverse_sqrt")
  Field<int64_t> warmup_steps{this, "warmup_steps", 1, "Steps held at warmup_steps**-0.5 (> 0)."};
  Field<double> scale{this, "scale", 1.0, "Multiplier of the schedule."};

 protected:
  Schedule call() const override;
};

// init_value * ((1 - alpha) * (0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)))
//   ** exponent + alpha), as optax.cosine_decay_schedule.
struct CosineDecaySchedule : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(CosineDecaySchedule, "optax.cosine_decay_schedule")
  Field<double> init_value{this, "init_value", REQUIRED, "Value at step 0."};
  Field<int64_t> decay_steps{this, "decay_steps", REQUIRED, "Length of the decay (> 0)."};
  Field<double> alpha{this, "alpha", 0.0, "Final value as a fraction of init_value."};
  Field<double> exponent{this, "exponent", 1.0, "Exponent of the cosine factor."};

 protected:
  Schedule call() const override;
};

// sub[0] from step 0, sub[i] from start_step[i-1]; each sub-schedule sees the step relative to
// its own start.
struct Stepwise : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(Stepwise, "axlearn.common.schedule.stepwise")
  Field<std::vector<ConfigPtr<ScheduleConfig>>> sub{this, "sub", REQUIRED,
                                                    "N sub-schedules."};
  Field<std::vector<int64_t>> start_step{this, "start_step", REQUIRED,
                                         "N-1 non-decreasing start steps of sub[1:]."};

 protected:
  Schedule call() const override;
};

// Linear warmup from begin_value to peak_lr over warmup_steps, optionally constant until
// decay_begin_step, then cosine decay to alpha * peak_lr at max_step.
struct CosineWithLinearWarmup : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(CosineWithLinearWarmup,
                          "axlearn.common.schedule.cosine_with_linear_warmup")
  Field<double> peak_lr{this, "peak_lr", REQUIRED, "Value at the end of the warmup."};
  Field<int64_t> max_step{this, "max_step", REQUIRED, "Step where the decay ends."};
  Field<int64_t> warmup_steps{this, "warmup_steps", 500, "Length of the linear warmup."};
  Field<double> begin_value{this, "begin_value", 0.0, "Value at step 0."};
  Field<double> alpha{this, "alpha", 0.0, "Final value as a fraction of peak_lr."};
  Field<std::optional<int64_t>> decay_begin_step{
      this, "decay_begin_step", std::nullopt,
      "Step where the decay starts; the value stays at peak_lr before it."};

 protected:
  Schedule call() const override;
};

// Linear warmup to peak_lr over warmup_steps, then constant.
struct ConstantWithLinearWarmup : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(ConstantWithLinearWarmup,
                          "axlearn.common.schedule.constant_with_linear_warmup")
  Field<double> peak_lr{this, "peak_lr", REQUIRED, "Value after the warmup."};
  Field<int64_t> warmup_steps{this, "warmup_steps", 500, "Length of the linear warmup."};
  Field<double> begin_value{this, "begin_value", 0.0, "Value at step 0."};

 protected:
  Schedule call() const override;
};

// Linear warmup to peak_lr over warmup_steps, then linear decay to end_value at max_step.
struct LinearScheduleWithWarmup : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(LinearScheduleWithWarmup,
                          "axlearn.common.schedule.linear_schedule_with_warmup")
  Field<double> peak_lr{this, "peak_lr", REQUIRED, "Value at the end of the warmup."};
  Field<int64_t> max_step{this, "max_step", REQUIRED, "Step where the decay ends."};
  Field<int64_t> warmup_steps{this, "warmup_steps", REQUIRED, "Length of the linear warmup."};
  Field<double> begin_value{this, "begin_value", 0.0, "Value at step 0."};
  Field<double> end_value{this, "end_value", 0.0, "Value at max_step and after."};

 protected:
  Schedule call() const override;
};

// Warmup-stable-decay: linear warmup to peak_lr over warmup_steps, constant until
// max_step - decay_steps, then linear decay to end_value at max_step.
struct WarmupStableDecay : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(WarmupStableDecay, "axlearn.common.schedule.warmup_stable_decay")
  Field<double> peak_lr{this, "peak_lr", REQUIRED, "Value of the stable phase."};
  Field<int64_t> max_step{this, "max_step", REQUIRED, "Step where the decay ends."};
  Field<int64_t> warmup_steps{this, "warmup_steps", REQUIRED, "Length of the linear warmup."};
  Field<int64_t> decay_steps{this, "decay_steps", REQUIRED, "Length of the final linear decay."};
  Field<double> begin_value{this, "begin_value", 0.0, "Value at step 0."};
  Field<double> end_value{this, "end_value", 0.0, "Value at max_step and after."};

 protected:
  Schedule call() const override;
};

// Adafactor's beta2: 1 - (max(step - step_offset, 0) + 1)**-c.
struct AdafactorDecayRate : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(AdafactorDecayRate, "axlearn.common.schedule.adafactor_decay_rate")
  Field<double> c{this, "c", 0.8, "The exponent."};
  Field<int64_t> step_offset{this, "step_offset", 0, "Step where the decay restarts."};

 protected:
  Schedule call() const override;
};

// decay * (1 - decay**t) / (1 - decay**(t+1)) at step t: a constant decay with bias correction.
struct DecayBiasCorrection : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(DecayBiasCorrection, "axlearn.common.schedule.decay_bias_correction")
  Field<double> decay{this, "decay", REQUIRED, "The constant decay."};

 protected:
  Schedule call() const override;
};

// EMA decay with warmup: step / (1 + step) before warmup_steps, then decay.
struct EmaSchedule : ScheduleConfig {
  AXLEARN_FUNCTION_CONFIG(EmaSchedule, "axlearn.common.schedule.ema_schedule")
  Field<double> decay{this, "decay", 0.9999, "Decay after the warmup."};
  Field<int64_t> warmup_steps{this, "warmup_steps", 1, "Length of the warmup (> 0)."};

 protected:
  Schedule call() const override;
};

// Shorthands for configs.
ConfigPtr<ScheduleConfig> constant_schedule(double value);

}  // namespace axlearn::optim
