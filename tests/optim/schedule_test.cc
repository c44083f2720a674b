// Schedules against their closed forms (computed here in double), at chosen steps.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/optim/schedule.h"

namespace axlearn::optim {
namespace {

double at(const Schedule& s, int64_t step) {
  return astype(s(scalar(double(step), int32)), float64).item<double>();
}

void expect_near_rel(double got, double want) {
  EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want)));
}

TEST(ScheduleTest, ConstantIsTheSameAtEveryStep) {
  Schedule s = constant_schedule(0.3)->instantiate();
  for (int64_t step : {0, 7, 100000}) expect_near_rel(at(s, step), 0.3);
}

TEST(ScheduleTest, PolynomialClampsOutsideItsRange) {
  auto cfg = Polynomial::default_config();
  cfg->begin_step = 10;
  cfg->begin_value = 1.0;
  cfg->end_step = 30;
  cfg->end_value = 0.2;
  cfg->power = 2.0;
  Schedule s = cfg->instantiate();
  for (int64_t step : {0, 10, 15, 29, 30, 50}) {
    const double frac = std::clamp((step - 10) / 20.0, 0.0, 1.0);
    expect_near_rel(at(s, step), 1.0 + frac * frac * (0.2 - 1.0));
  }
}

TEST(ScheduleTest, ExponentialInterpolatesInLogSpace) {
  auto cfg = Exponential::default_config();
  cfg->begin_value = 1.0;
  cfg->end_step = 100;
  cfg->end_value = 0.01;
  Schedule s = cfg->instantiate();
  for (int64_t step : {0, 25, 50, 100, 200}) {
    const double frac = std::min(step / 100.0, 1.0);
    expect_near_rel(at(s, step), std::exp(frac * std::log(0.01)));
  }
  cfg->end_value = 0.0;
  EXPECT_THROW(cfg->instantiate(), Error);
}

TEST(ScheduleTest, InverseSqrtHoldsDuringWarmup) {
  auto cfg = InverseSqrt::default_config();
  cfg->warmup_steps = 16;
  Schedule s = cfg->instantiate();
  for (int64_t step : {0, 8, 16, 64, 10000}) {
    expect_near_rel(at(s, step), 1.0 / std::sqrt(double(std::max<int64_t>(step, 16))));
  }
}

double cosine_warmup(int64_t step, double peak, int64_t warmup, int64_t max_step, double alpha) {
  if (step < warmup) return peak * double(step) / double(warmup);
  const double t = std::min<double>(step - warmup, max_step - warmup) / double(max_step - warmup);
  return peak * ((1 - alpha) * 0.5 * (1 + std::cos(std::numbers::pi * t)) + alpha);
}

TEST(ScheduleTest, CosineWithLinearWarmupMatchesClosedForm) {
  auto cfg = CosineWithLinearWarmup::default_config();
  cfg->peak_lr = 3e-4;
  cfg->max_step = 1000;
  cfg->warmup_steps = 100;
  cfg->alpha = 0.1;
  Schedule s = cfg->instantiate();
  for (int64_t step : {0, 1, 50, 99, 100, 101, 550, 999, 1000, 5000}) {
    expect_near_rel(at(s, step) / 3e-4, cosine_warmup(step, 3e-4, 100, 1000, 0.1) / 3e-4);
  }
}

TEST(ScheduleTest, CosineWithLinearWarmupHoldsPeakUntilDecayBegins) {
  auto cfg = CosineWithLinearWarmup::default_config();
  cfg->peak_lr = 1.0;
  cfg->max_step = 100;
  cfg->warmup_steps = 10;
  cfg->decay_begin_step = 40;
  Schedule s = cfg->instantiate();
  expect_near_rel(at(s, 5), 0.5);
  expect_near_rel(at(s, 25), 1.0);
  expect_near_rel(at(s, 40), 1.0);
  expect_near_rel(at(s, 70), 0.5);  // halfway through a 60-step cosine
  expect_near_rel(at(s, 100), 0.0);
}

TEST(ScheduleTest, LinearScheduleWithWarmupRisesThenFalls) {
  auto cfg = LinearScheduleWithWarmup::default_config();
  cfg->peak_lr = 2.0;
  cfg->max_step = 110;
  cfg->warmup_steps = 10;
  cfg->end_value = 0.5;
  Schedule s = cfg->instantiate();
  expect_near_rel(at(s, 0), 0.0);
  expect_near_rel(at(s, 4), 0.8);
  expect_near_rel(at(s, 10), 2.0);
  expect_near_rel(at(s, 60), 1.25);
  expect_near_rel(at(s, 110), 0.5);
  expect_near_rel(at(s, 500), 0.5);
}

TEST(ScheduleTest, WarmupStableDecayHasThreePhases) {
  auto cfg = WarmupStableDecay::default_config();
  cfg->peak_lr = 1.0;
  cfg->max_step = 100;
  cfg->warmup_steps = 10;
  cfg->decay_steps = 20;
  cfg->end_value = 0.1;
  Schedule s = cfg->instantiate();
  expect_near_rel(at(s, 5), 0.5);
  expect_near_rel(at(s, 10), 1.0);
  expect_near_rel(at(s, 79), 1.0);
  expect_near_rel(at(s, 80), 1.0);
  expect_near_rel(at(s, 90), 0.55);
  expect_near_rel(at(s, 100), 0.1);
  cfg->decay_steps = 95;
  EXPECT_THROW(cfg->instantiate(), Error);
}

TEST(ScheduleTest, StepwiseGivesEachSubScheduleItsRelativeStep) {
  auto ramp = Polynomial::default_config();
  ramp->begin_value = 0.0;
  ramp->end_step = 10;
  ramp->end_value = 1.0;
  auto cfg = Stepwise::default_config();
  cfg->sub = std::vector<ConfigPtr<ScheduleConfig>>{constant_schedule(5.0), ramp};
  cfg->start_step = std::vector<int64_t>{20};
  Schedule s = cfg->instantiate();
  expect_near_rel(at(s, 0), 5.0);
  expect_near_rel(at(s, 19), 5.0);
  expect_near_rel(at(s, 20), 0.0);
  expect_near_rel(at(s, 25), 0.5);
  expect_near_rel(at(s, 100), 1.0);
  cfg->start_step = std::vector<int64_t>{};
  EXPECT_THROW(cfg->instantiate(), Error);
}

TEST(ScheduleTest, AdafactorDecayRateAndBiasCorrection) {
  Schedule b2 = AdafactorDecayRate::default_config()->instantiate();
  for (int64_t step : {0, 1, 9, 999}) expect_near_rel(at(b2, step), 1 - std::pow(step + 1.0, -0.8));
  auto cfg = DecayBiasCorrection::default_config();
  cfg->decay = 0.9;
  Schedule d = cfg->instantiate();
  for (int64_t step : {0, 1, 5, 50}) {
    const double t = step + 1.0;
    expect_near_rel(at(d, step), 0.9 * (1 - std::pow(0.9, t - 1)) / (1 - std::pow(0.9, t)));
  }
}

TEST(ScheduleTest, EmaScheduleWarmsUp) {
  auto cfg = EmaSchedule::default_config();
  cfg->decay = 0.99;
  cfg->warmup_steps = 4;
  Schedule s = cfg->instantiate();
  expect_near_rel(at(s, 0), 0.0);
  expect_near_rel(at(s, 3), 0.75);
  expect_near_rel(at(s, 4), 0.99);
}

struct Holder : ConfigBase {
  AXLEARN_CONFIG(Holder)
  Field<ConfigPtr<ScheduleConfig>> lr{this, "lr", constant_schedule(1.0), "A schedule."};
};

TEST(ScheduleTest, SchedulesSwapByOverride) {
  Holder holder;
  apply_override(holder, "lr.fn=inverse_sqrt");
  apply_override(holder, "lr.warmup_steps=4");
  Schedule s = holder.lr->instantiate();
  expect_near_rel(at(s, 16), 0.25);
}

}  // namespace
}  // namespace axlearn::optim
