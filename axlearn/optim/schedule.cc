#include "axlearn/optim/schedule.h"

#include <cmath>
#include <numbers>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn::optim {
namespace {

Tensor as_f32(const Tensor& step) { return astype(step, float32); }

Schedule polynomial_fn(int64_t begin_step, double begin_value, int64_t end_step,
                       double end_value, double power_value) {
  if (begin_step >= end_step) {
    fail("polynomial: begin_step ", begin_step, " must be < end_step ", end_step);
  }
  return [=](const Tensor& step) {
    // (step - begin_step) is exact in int32 before the division, as in jax.
    Tensor frac = as_f32(step - scalar(double(begin_step), int32)) / double(end_step - begin_step);
    frac = minimum(scalar(1.0), maximum(scalar(0.0), frac));
    Tensor ramp = power_value == 1.0 ? frac : power(frac, scalar(power_value));
    return ramp * (end_value - begin_value) + begin_value;
  };
}

Schedule stepwise_fn(std::vector<Schedule> subs, std::vector<int64_t> starts) {
  if (subs.size() != starts.size() + 1) {
    fail("stepwise: ", subs.size(), " sub-schedules need ", subs.size() - 1,
         " start steps, given ", starts.size());
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    if (starts[i] < 0 || (i > 0 && starts[i] < starts[i - 1])) {
      fail("stepwise: start_step must be non-negative and non-decreasing, given start_step[", i,
           "] = ", starts[i]);
    }
  }
  starts.insert(starts.begin(), 0);
  return [subs = std::move(subs), starts = std::move(starts)](const Tensor& step) {
    Tensor out = scalar(0.0);
    for (size_t i = 0; i < subs.size(); ++i) {
      const Tensor begin = scalar(double(starts[i]), int32);
      Tensor active = less_equal(begin, step);
      if (i + 1 < subs.size()) {
        active = logical_and(active, less(step, scalar(double(starts[i + 1]), int32)));
      }
      const Tensor value = subs[i](maximum(scalar(0.0, int32), step - begin));
      out = out + value * astype(active, float32);
    }
    return out;
  };
}

Schedule cosine_decay_fn(double init_value, int64_t decay_steps, double alpha, double exponent) {
  if (decay_steps <= 0) fail("cosine_decay_schedule: decay_steps must be > 0, given ", decay_steps);
  return [=](const Tensor& step) {
    const Tensor count = minimum(as_f32(step), scalar(double(decay_steps)));
    Tensor cosine = (cos(count * std::numbers::pi / double(decay_steps)) + 1.0) * 0.5;
    if (exponent != 1.0) cosine = power(cosine, scalar(exponent));
    return (cosine * (1.0 - alpha) + alpha) * init_value;
  };
}

}  // namespace

Schedule constant_fn(double value) {
  // An f64 scalar: consumers cast it where used, so `1 - decay` is exact as with AXLearn's
  // Python floats.
  return [value](const Tensor&) { return scalar(value, float64); };
}

Schedule as_schedule_fn(const ConfigPtr<ScheduleConfig>& cfg, double default_value) {
  if (!cfg) return constant_fn(default_value);
  return cfg->instantiate();
}

ConfigPtr<ScheduleConfig> constant_schedule(double value) {
  auto cfg = ConstantSchedule::default_config();
  cfg->value = value;
  return cfg;
}

Schedule ConstantSchedule::call() const { return constant_fn(value); }

Schedule Polynomial::call() const {
  return polynomial_fn(begin_step, begin_value, end_step, end_value, power);
}

Schedule Exponential::call() const {
  if (begin_value <= 0 || end_value <= 0) {
    fail("exponential: begin_value (", double(begin_value), ") and end_value (", double(end_value),
         ") must both be positive");
  }
  Schedule log_fn =
      polynomial_fn(begin_step, std::log(double(begin_value)), end_step, std::log(double(end_value)), 1.0);
  return [log_fn](const Tensor& step) { return exp(log_fn(step)); };
}

Schedule InverseSqrt::call() const {
  if (warmup_steps <= 0) fail("inverse_sqrt: warmup_steps must be > 0, given ", int64_t(warmup_steps));
  const double w = double(warmup_steps.get()), s = scale;
  return [w, s](const Tensor& step) { return rsqrt(maximum(as_f32(step), scalar(w))) * s; };
}

Schedule CosineDecaySchedule::call() const {
  return cosine_decay_fn(init_value, decay_steps, alpha, exponent);
}

Schedule Stepwise::call() const {
  std::vector<Schedule> subs;
  for (size_t i = 0; i < sub->size(); ++i) {
    auto scope = InstantiationScope::child("sub[" + std::to_string(i) + "]");
    subs.push_back(as_schedule_fn((*sub)[i]));
  }
  return stepwise_fn(std::move(subs), start_step);
}

Schedule CosineWithLinearWarmup::call() const {
  const double peak = peak_lr;
  const int64_t warmup = warmup_steps;
  std::vector<Schedule> subs = {polynomial_fn(0, begin_value, warmup, peak, 1.0)};
  std::vector<int64_t> starts = {warmup};
  const std::optional<int64_t>& decay_begin = decay_begin_step;
  if (decay_begin && *decay_begin > warmup) {
    subs.push_back(constant_fn(peak));
    starts.push_back(*decay_begin);
  }
  subs.push_back(cosine_decay_fn(peak, max_step - starts.back(), alpha, 1.0));
  return stepwise_fn(std::move(subs), std::move(starts));
}

Schedule ConstantWithLinearWarmup::call() const {
  return stepwise_fn({polynomial_fn(0, begin_value, warmup_steps, peak_lr, 1.0), constant_fn(peak_lr)},
                     {warmup_steps});
}

Schedule LinearScheduleWithWarmup::call() const {
  return stepwise_fn({polynomial_fn(0, begin_value, warmup_steps, peak_lr, 1.0),
                      polynomial_fn(0, peak_lr, max_step - warmup_steps, end_value, 1.0)},
                     {warmup_steps});
}

Schedule WarmupStableDecay::call() const {
  const int64_t decay_begin = max_step - decay_steps;
  if (decay_steps <= 0 || decay_begin < warmup_steps) {
    fail("warmup_stable_decay: need 0 < decay_steps <= max_step - warmup_steps, given max_step ",
         int64_t(max_step), ", warmup_steps ", int64_t(warmup_steps), ", decay_steps ",
         int64_t(decay_steps));
  }
  return stepwise_fn({polynomial_fn(0, begin_value, warmup_steps, peak_lr, 1.0), constant_fn(peak_lr),
                      polynomial_fn(0, peak_lr, decay_steps, end_value, 1.0)},
                     {warmup_steps, decay_begin});
}

Schedule AdafactorDecayRate::call() const {
  const double exponent = c;
  const int64_t offset = step_offset;
  return [=](const Tensor& step) {
    const Tensor s = maximum(step - scalar(double(offset), int32), scalar(0.0, int32));
    return 1.0 - power(as_f32(s) + 1.0, scalar(-exponent));
  };
}

Schedule DecayBiasCorrection::call() const {
  const double d = decay;
  return [d](const Tensor& step) {
    const Tensor t = as_f32(step) + 1.0;
    const Tensor base = scalar(d);
    return d * (1.0 - power(base, t - 1.0)) / (1.0 - power(base, t));
  };
}

Schedule EmaSchedule::call() const {
  if (warmup_steps <= 0) fail("ema_schedule: warmup_steps must be > 0, given ", int64_t(warmup_steps));
  const double d = decay;
  const double w = double(warmup_steps.get());
  return [=](const Tensor& step) {
    const Tensor s = as_f32(step);
    return where(less(s, scalar(w)), s / (s + 1.0), scalar(d));
  };
}

}  // namespace axlearn::optim
