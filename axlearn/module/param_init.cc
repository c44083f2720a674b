#include "axlearn/module/param_init.h"

#include <cmath>
#include <sstream>

#include "axlearn/config/format.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"

namespace axlearn {

namespace {

// The std of a standard normal truncated to (-2, 2), as jax and AXLearn divide by it.
constexpr double kTruncatedStd = 0.87962566103423978;

std::string axes_str(const std::optional<FanAxes>& axes) {
  if (!axes) return "None";
  auto list = [](const std::vector<int>& v) {
    std::string s = "(";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + (v.size() == 1 ? ",)" : ")");
  };
  return "FanAxes(in_axis=" + list(axes->in_axis) + ", out_axis=" + list(axes->out_axis) +
         ", batch_axis=" + list(axes->batch_axis) + ")";
}

int64_t axes_size(const Shape& shape, const std::vector<int>& axes, const char* what) {
  int64_t size = 1;
  for (int a : axes) size *= shape[size_t(normalize_axis(a, int(shape.size()), what))];
  return size;
}

}  // namespace

Fans compute_fans(const Shape& shape, const FanAxes& axes) {
  if (shape.size() < 1) fail("compute_fans: a scalar has no fans");
  const double in = double(axes_size(shape, axes.in_axis, "compute_fans in_axis"));
  const double out = double(axes_size(shape, axes.out_axis, "compute_fans out_axis"));
  const double batch = double(axes_size(shape, axes.batch_axis, "compute_fans batch_axis"));
  const double receptive = double(num_elements(shape)) / in / out / batch;
  Fans f;
  f.fan_in = in * receptive;
  f.fan_out = out * receptive;
  f.fan_avg = (f.fan_in + f.fan_out) / 2;
  return f;
}

// ---- ConstantInitializer ----

Tensor ConstantInitializer::initialize(const std::string&, const Tensor&, const Shape& shape,
                                       Dtype dtype, const std::optional<FanAxes>&) const {
  return full(shape, config().value, dtype);
}

std::string ConstantInitializer::debug_string(const std::string&, const Shape&,
                                              const std::optional<FanAxes>&) const {
  return "constant(" + py_repr(config().value.get()) + ")";
}

// ---- GaussianInitializer ----

Tensor GaussianInitializer::initialize(const std::string&, const Tensor& prng_key,
                                       const Shape& shape, Dtype dtype,
                                       const std::optional<FanAxes>&) const {
  return random::normal(prng_key, shape, dtype) * config().std.get();
}

std::string GaussianInitializer::debug_string(const std::string&, const Shape&,
                                              const std::optional<FanAxes>&) const {
  return "normal(0, " + py_repr(config().std.get()) + "^2)";
}

// ---- WeightInitializer ----

WeightInitializer::WeightInitializer(const Config& cfg) : Initializer(cfg) {
  const auto& fan = config().fan.get();
  if (fan && *fan != "fan_in" && *fan != "fan_out" && *fan != "fan_avg") {
    fail("WeightInitializer: fan must be fan_in, fan_out, fan_avg or None, given '", *fan, "'");
  }
  const std::string& d = config().distribution.get();
  if (d != "uniform" && d != "normal" && d != "truncated_normal") {
    fail("WeightInitializer: distribution must be uniform, normal or truncated_normal, given '", d,
         "'");
  }
}

Tensor WeightInitializer::initialize(const std::string& name, const Tensor& prng_key,
                                     const Shape& shape, Dtype dtype,
                                     const std::optional<FanAxes>& axes) const {
  const Config& cfg = config();
  const double scale = cfg.scale;
  const std::string& dist = cfg.distribution.get();
  if (const auto& fan = cfg.fan.get()) {
    if (!axes) fail("WeightInitializer: parameter '", name, "' needs fan axes for fan=", *fan);
    const Fans fans = compute_fans(shape, *axes);
    const double denominator = *fan == "fan_in"    ? fans.fan_in
                               : *fan == "fan_out" ? fans.fan_out
                                                   : fans.fan_avg;
    // As jax.nn.initializers.variance_scaling: the variance is rounded to dtype first and the
    // multipliers are computed in dtype.
    const Tensor variance = scalar(scale / denominator, dtype);
    if (dist == "uniform") {
      return random::uniform(prng_key, shape, dtype, -1, 1) * sqrt(variance * 3.0);
    }
    if (dist == "normal") return random::normal(prng_key, shape, dtype) * sqrt(variance);
    const Tensor stddev = sqrt(variance) / scalar(kTruncatedStd, dtype);
    return random::truncated_normal(prng_key, -2, 2, shape, dtype) * stddev;
  }
  if (dist == "uniform") return random::uniform(prng_key, shape, dtype, -scale, scale);
  if (dist == "normal") return random::normal(prng_key, shape, dtype) * scalar(scale, dtype);
  const Tensor stddev = scalar(scale, dtype) / scalar(kTruncatedStd, dtype);
  return random::truncated_normal(prng_key, -2, 2, shape, dtype) * stddev;
}

std::string WeightInitializer::debug_string(const std::string&, const Shape& shape,
                                            const std::optional<FanAxes>& axes) const {
  const Config& cfg = config();
  const std::string& dist = cfg.distribution.get();
  const std::string scale = py_repr(cfg.scale.get());
  if (const auto& fan = cfg.fan.get()) {
    const std::string where = ", shape=" + shape_str(shape) + ", axes=" + axes_str(axes);
    if (dist == "uniform") {
      const std::string s3 = py_repr(3 * cfg.scale.get());
      return "uniform(-sqrt(" + s3 + " / " + *fan + "), sqrt(" + s3 + " / " + *fan + "))" + where;
    }
    if (dist == "normal") return "normal(0, " + scale + " / " + *fan + ")" + where;
    return "truncated_normal(-2, 2) * sqrt(" + scale + " / " + *fan + ") / 0.88" + where;
  }
  if (dist == "uniform") return "uniform(" + py_repr(-cfg.scale.get()) + ", " + scale + ")";
  if (dist == "normal") return "normal(0, " + scale + "^2)";
  return "truncated_normal(-2, 2) * " + scale + " / 0.88";
}

// ---- DefaultInitializer ----

DefaultInitializer::DefaultInitializer(const Config& cfg) : Initializer(cfg) {
  OrderedDict<ConfigPtr<Initializer::Config>> rules = config().init_by_param_name;
  auto set_default = [&](const std::string& pattern, ConfigPtr<Initializer::Config> init) {
    for (const auto& [p, c] : rules) {
      if (p == pattern) return;
    }
    rules.emplace_back(pattern, std::move(init));
  };
  set_default(".*bias$", ConstantInitializer::default_config().set("value", 0.0));
  set_default(".*scale$", ConstantInitializer::default_config().set("value", 1.0));
  set_default(".*weight$", WeightInitializer::default_config());
  for (const auto& [pattern, init_cfg] : rules) {
    if (!init_cfg) fail("DefaultInitializer: the initializer for '", pattern, "' is None");
    std::regex re;
    try {
      re = std::regex(pattern);
    } catch (const std::regex_error& e) {
      fail("DefaultInitializer: invalid regex '", pattern, "': ", e.what());
    }
    auto scope = InstantiationScope::child("init_by_param_name[" + py_repr(pattern) + "]");
    rules_.push_back({pattern, std::move(re), init_cfg->instantiate<Initializer>()});
  }
}

const Initializer& DefaultInitializer::rule_for(const std::string& name) const {
  for (const Rule& r : rules_) {
    if (std::regex_match(name, r.regex)) return *r.initializer;
  }
  std::string patterns;
  for (const Rule& r : rules_) patterns += (patterns.empty() ? "'" : ", '") + r.pattern + "'";
  fail("DefaultInitializer: no rule matches parameter name '", name, "' (rules: ", patterns, ")");
}

Tensor DefaultInitializer::initialize(const std::string& name, const Tensor& prng_key,
                                      const Shape& shape, Dtype dtype,
                                      const std::optional<FanAxes>& axes) const {
  return rule_for(name).initialize(name, prng_key, shape, dtype, axes);
}

std::string DefaultInitializer::debug_string(const std::string& name, const Shape& shape,
                                             const std::optional<FanAxes>& axes) const {
  return rule_for(name).debug_string(name, shape, axes);
}

// ---- PerGroupInitializer ----

PerGroupInitializer::PerGroupInitializer(const Config& cfg) : Initializer(cfg) {
  if (config().num_groups < 1) fail("PerGroupInitializer: num_groups must be >= 1");
  const auto& inner = config().initializer.get();
  initializer_ = inner ? inner->instantiate<Initializer>()
                       : DefaultInitializer::default_config()->instantiate<Initializer>();
}

Tensor PerGroupInitializer::initialize(const std::string& name, const Tensor& prng_key,
                                       const Shape& shape, Dtype dtype,
                                       const std::optional<FanAxes>& axes) const {
  const int64_t groups = config().num_groups;
  if (shape.empty() || shape.back() % groups != 0) {
    fail("PerGroupInitializer: the last axis of ", shape_str(shape), " is not divisible by ",
         groups, " groups");
  }
  if (groups == 1) return initializer_->initialize(name, prng_key, shape, dtype, axes);
  Shape group_shape = shape;
  group_shape.back() /= groups;
  const Tensor keys = random::split(prng_key, int(groups));
  std::vector<Tensor> parts;
  for (int64_t g = 0; g < groups; ++g) {
    const Tensor key = reshape(slice_axis(keys, 0, g, g + 1), {2});
    parts.push_back(initializer_->initialize(name, key, group_shape, dtype, axes));
  }
  return concatenate(parts, -1);
}

std::string PerGroupInitializer::debug_string(const std::string& name, const Shape& shape,
                                              const std::optional<FanAxes>& axes) const {
  return initializer_->debug_string(name, shape, axes) + " [PerGroupInitializer]";
}

}  // namespace axlearn
