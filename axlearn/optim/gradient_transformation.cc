#include "axlearn/optim/gradient_transformation.h"

#include <cmath>
#include <regex>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/module/module.h"

namespace axlearn::optim {
namespace {

class FnTransformation final : public GradientTransformation {
 public:
  FnTransformation(InitFn init, UpdateFn update, PartitionFn partition)
      : init_(std::move(init)), update_(std::move(update)), partition_(std::move(partition)) {}
  NestedTensor init(const OptParams& params) const override { return init_(params); }
  UpdateResult update(const NestedTensor& updates, const NestedTensor& state,
                      const OptParams& params) const override {
    return update_(updates, state, params);
  }
  NestedParameterSpec partition(const NestedParameterSpec& specs) const override {
    return partition_(specs);
  }

 private:
  InitFn init_;
  UpdateFn update_;
  PartitionFn partition_;
};

NestedTensor empty_state(const OptParams&) { return NestedTensor(); }
NestedParameterSpec empty_partition(const NestedParameterSpec&) { return NestedParameterSpec(); }

NestedParameterSpec map_specs(const NestedParameterSpec& specs,
                              const std::function<ParameterSpec(const ParameterSpec&)>& fn) {
  if (specs.is_leaf()) return NestedParameterSpec(fn(specs.spec()));
  NestedParameterSpec out;
  for (const auto& [k, v] : specs.children()) out[k] = map_specs(v, fn);
  return out;
}

NestedTensor zeros_tree(const NestedTensor& like, std::optional<Dtype> dtype) {
  return like.map([&](const Tensor& t) { return zeros(t.shape(), dtype.value_or(t.dtype())); });
}

Tensor zero_count() { return zeros({}, int32); }
Tensor increment(const Tensor& count) {
  // optax.safe_int32_increment: saturates instead of wrapping.
  const Tensor max_int = scalar(2147483647.0, int32);
  return where(less(count, max_int), count + scalar(1.0, int32), max_int);
}

NestedTensor map2(const NestedTensor& a, const NestedTensor& b,
                  const std::function<Tensor(const Tensor&, const Tensor&)>& fn) {
  return NestedTensor::zip_map({&a, &b}, [&](const std::vector<Tensor>& v) { return fn(v[0], v[1]); });
}

Tensor cast_like(const Tensor& x, std::optional<Dtype> dtype) {
  return dtype && x.dtype() != *dtype ? astype(x, *dtype) : x;
}

// t / (1 - decay**count), as optax.bias_correction (decay**count in f32).
Tensor bias_correction(const Tensor& t, double decay, const Tensor& count) {
  const Tensor correction = 1.0 - power(scalar(decay), astype(count, float32));
  return t / astype(correction, t.dtype());
}

Tensor rms(const Tensor& x) { return sqrt(mean(x * x)); }

Tensor global_norm(const NestedTensor& tree) {
  Tensor total = scalar(0.0);
  for (const Tensor& leaf : tree.leaves()) total = total + astype(sum(leaf * leaf), float32);
  return sqrt(total);
}

// The decay scale of each parameter path: the spec's weight_decay_scale, else per_param_scale.
std::map<std::string, double> weight_decay_scales(const OptParams& params,
                                                  const PerParamScale& per_param_scale) {
  std::map<std::string, double> out;
  for (const auto& [path, value] : params.value.flatten_with_paths()) {
    (void)value;
    auto it = params.weight_decay_scale.find(path);
    if (it != params.weight_decay_scale.end()) {
      out[path] = it->second;
    } else {
      out[path] = per_param_scale ? per_param_scale(path) : 1.0;
    }
  }
  return out;
}

NestedTensor add_scaled_params(const NestedTensor& updates, const OptParams& params,
                               const std::optional<Tensor>& coeff, double weight_decay,
                               const std::map<std::string, double>& scales) {
  const auto u = updates.flatten_with_paths();
  const auto p = params.value.flatten_with_paths();
  if (u.size() != p.size()) {
    fail("add_decayed_weights: ", u.size(), " updates for ", p.size(), " parameters");
  }
  std::vector<Tensor> out;
  for (size_t i = 0; i < u.size(); ++i) {
    const Tensor& param = p[i].second;
    // AXLearn: g + weight_decay * lr_scale * p * s, evaluated left to right.
    Tensor decay = coeff ? multiply(astype(*coeff, param.dtype()), param) : param * weight_decay;
    decay = decay * scales.at(p[i].first);
    out.push_back(u[i].second + decay);
  }
  return updates.unflatten(out);
}

}  // namespace

OptParams make_opt_params(const NestedTensor& values, const NestedParameterSpec* specs) {
  OptParams out{values, {}};
  if (specs) {
    for (const auto& [path, value] : values.flatten_with_paths()) {
      (void)value;
      const ParameterSpec& spec = specs->at_path(path);
      if (spec.weight_decay_scale) out.weight_decay_scale[path] = *spec.weight_decay_scale;
    }
  }
  return out;
}

Transformation make_transformation(InitFn init, UpdateFn update, PartitionFn partition) {
  return std::make_shared<FnTransformation>(std::move(init), std::move(update),
                                            std::move(partition));
}

PerParamScale per_param_scale_by_path(std::vector<std::pair<std::string, double>> scale_by_path,
                                      double default_scale) {
  std::vector<std::pair<std::regex, double>> rules;
  for (const auto& [pattern, s] : scale_by_path) {
    try {
      rules.emplace_back(std::regex(pattern), s);
    } catch (const std::regex_error& e) {
      fail("per_param_scale_by_path: invalid regex '", pattern, "': ", e.what());
    }
  }
  return [rules = std::move(rules), default_scale](const std::string& path) {
    for (const auto& [re, s] : rules) {
      if (std::regex_match(path, re)) return s;
    }
    return default_scale;
  };
}

void maybe_add_summary(const std::string& name, const Tensor& value) {
  if (InvocationContext* ctx = current_context()) ctx->add_summary(name, Summary::scalar(value));
}

ParameterSpec scalar_state_spec(Dtype dtype) {
  return ParameterSpec{.shape = {}, .dtype = dtype, .mesh_axes = MeshAxes{}};
}

NestedParameterSpec copy_partition(const NestedParameterSpec& param_specs,
                                   std::optional<Dtype> dtype) {
  return map_specs(param_specs, [&](const ParameterSpec& s) {
    return ParameterSpec{.shape = s.shape,
                         .dtype = dtype ? dtype : s.dtype,
                         .mesh_axes = s.mesh_axes ? s.mesh_axes
                                                  : MeshAxes(s.shape.size(), std::monostate{})};
  });
}

Transformation chain(std::vector<Transformation> ts) {
  auto key = [](size_t i) { return std::to_string(i); };
  return make_transformation(
      [ts, key](const OptParams& params) {
        NestedTensor state;
        for (size_t i = 0; i < ts.size(); ++i) state[key(i)] = ts[i]->init(params);
        return state;
      },
      [ts, key](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        UpdateResult out{updates, NestedTensor()};
        for (size_t i = 0; i < ts.size(); ++i) {
          UpdateResult r = ts[i]->update(out.updates, state.at(key(i)), params);
          out.updates = std::move(r.updates);
          out.state[key(i)] = std::move(r.state);
        }
        return out;
      },
      [ts, key](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        for (size_t i = 0; i < ts.size(); ++i) out[key(i)] = ts[i]->partition(specs);
        return out;
      });
}

Transformation identity() {
  return make_transformation(
      empty_state,
      [](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        return UpdateResult{updates, state};
      },
      empty_partition);
}

Transformation scale(double step_size) {
  return make_transformation(
      empty_state,
      [step_size](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        return UpdateResult{updates.map([&](const Tensor& g) { return g * step_size; }), state};
      },
      empty_partition);
}

Transformation scale_by_schedule(Schedule schedule, std::optional<std::string> name) {
  const std::string prefix = name ? *name + "/" : "";
  return make_transformation(
      [](const OptParams&) { return NestedTensor{{"count", zero_count()}}; },
      [schedule, prefix](const NestedTensor& updates, const NestedTensor& state,
                         const OptParams&) {
        const Tensor& count = state.at("count").tensor();
        const Tensor s = schedule(count);
        maybe_add_summary(prefix + "schedule_step", count);
        maybe_add_summary(prefix + "schedule_scale", s);
        NestedTensor out = updates.map([&](const Tensor& g) { return astype(s, g.dtype()) * g; });
        return UpdateResult{std::move(out), NestedTensor{{"count", increment(count)}}};
      },
      [](const NestedParameterSpec&) {
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        return out;
      });
}

Schedule scale_from_learning_rate(Schedule learning_rate, bool flip_sign) {
  return [learning_rate, flip_sign](const Tensor& step) {
    const Tensor lr = learning_rate(step);
    maybe_add_summary("lr_schedule_step", step);
    maybe_add_summary("learning_rate", lr);
    return flip_sign ? negative(lr) : lr;
  };
}

Transformation clip_by_global_norm(std::optional<double> max_norm, std::optional<double> drop_norm,
                                   double eps) {
  return make_transformation(
      empty_state,
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        const Tensor g_norm = global_norm(updates);
        maybe_add_summary("gradient_norm", g_norm);
        if (!max_norm && !drop_norm) return UpdateResult{updates, state};
        Tensor g_scale = scalar(1.0);
        if (max_norm) g_scale = minimum(scalar(1.0), *max_norm / (g_norm + eps));
        if (drop_norm) g_scale = g_scale * astype(less(g_norm, scalar(*drop_norm)), float32);
        maybe_add_summary("gradient_scale", g_scale);
        return UpdateResult{
            updates.map([&](const Tensor& t) { return t * astype(g_scale, t.dtype()); }), state};
      },
      empty_partition);
}

Transformation skip_and_clip_by_global_norm(Transformation inner, std::optional<double> drop_norm,
                                            std::optional<double> max_norm, double eps) {
  return make_transformation(
      [inner](const OptParams& params) {
        return NestedTensor{{"nonvalid_count", zero_count()}, {"inner_state", inner->init(params)}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        const Tensor g_norm = global_norm(updates);
        maybe_add_summary("gradient_norm", g_norm);
        Tensor is_valid = isfinite(g_norm);
        if (drop_norm) is_valid = logical_and(is_valid, less(g_norm, scalar(*drop_norm)));
        const Tensor nonvalid_count =
            state.at("nonvalid_count").tensor() + astype(logical_not(is_valid), int32);
        maybe_add_summary("count_valid_steps", astype(is_valid, int32));
        maybe_add_summary("nonvalid_count", nonvalid_count);
        NestedTensor clipped = updates;
        if (max_norm) {
          const Tensor g_scale = minimum(scalar(1.0), *max_norm / (g_norm + eps));
          maybe_add_summary("gradient_scale", g_scale);
          clipped = updates.map([&](const Tensor& t) { return t * astype(g_scale, t.dtype()); });
        }
        const NestedTensor& inner_state = state.at("inner_state");
        UpdateResult r = inner->update(clipped, inner_state, params);
        NestedTensor final_updates =
            map2(r.updates, updates, [&](const Tensor& x, const Tensor& y) {
              return where(is_valid, x, zeros(y.shape(), x.dtype()));
            });
        NestedTensor final_state = map2(r.state, inner_state, [&](const Tensor& x, const Tensor& y) {
          return where(is_valid, x, y);
        });
        return UpdateResult{std::move(final_updates),
                            NestedTensor{{"nonvalid_count", nonvalid_count},
                                         {"inner_state", std::move(final_state)}}};
      },
      [inner](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["nonvalid_count"] = NestedParameterSpec(scalar_state_spec());
        out["inner_state"] = inner->partition(specs);
        return out;
      });
}

Transformation clip_by_block_rms(std::optional<double> threshold) {
  return make_transformation(
      empty_state,
      [threshold](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        if (!threshold) return UpdateResult{updates, state};
        return UpdateResult{updates.map([&](const Tensor& u) {
                              return u / maximum(weak_scalar(1.0, u), rms(u) / *threshold);
                            }),
                            state};
      },
      empty_partition);
}

Transformation scale_by_param_block_rms(double min_scale) {
  return make_transformation(
      empty_state,
      [min_scale](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        return UpdateResult{map2(updates, params.value,
                                 [&](const Tensor& u, const Tensor& p) {
                                   // optax.safe_root_mean_squares(p, min_scale).
                                   const Tensor r = sqrt(maximum(
                                       mean(p * p), weak_scalar(min_scale * min_scale, p)));
                                   return u * r;
                                 }),
                            state};
      },
      empty_partition);
}

Transformation add_decayed_weights(double weight_decay, std::optional<double> learning_rate_exponent,
                                   Schedule learning_rate, PerParamScale per_param_scale) {
  if (learning_rate_exponent && !learning_rate) {
    fail("add_decayed_weights: learning_rate is required when learning_rate_exponent is set");
  }
  const bool counts = learning_rate_exponent.has_value();
  return make_transformation(
      [counts](const OptParams&) {
        return counts ? NestedTensor{{"count", zero_count()}} : NestedTensor();
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        std::optional<Tensor> coeff;
        // AXLearn: an exponent of 0 (or None) leaves the decay unscaled.
        if (learning_rate_exponent && *learning_rate_exponent != 0.0) {
          const Tensor lr = learning_rate(state.at("count").tensor());
          coeff = power(lr, scalar(*learning_rate_exponent)) * weight_decay;
        }
        NestedTensor out = add_scaled_params(updates, params, coeff, weight_decay,
                                             weight_decay_scales(params, per_param_scale));
        NestedTensor new_state =
            counts ? NestedTensor{{"count", increment(state.at("count").tensor())}} : state;
        return UpdateResult{std::move(out), std::move(new_state)};
      },
      [counts](const NestedParameterSpec&) {
        NestedParameterSpec out;
        if (counts) out["count"] = NestedParameterSpec(scalar_state_spec());
        return out;
      });
}

Transformation l2_regularizer(double regularizer_weight, PerParamScale per_param_scale) {
  return make_transformation(
      empty_state,
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        if (regularizer_weight == 0.0) return UpdateResult{updates, state};
        return UpdateResult{add_scaled_params(updates, params, std::nullopt, regularizer_weight,
                                              weight_decay_scales(params, per_param_scale)),
                            state};
      },
      empty_partition);
}

Transformation trace(double decay, bool nesterov, std::optional<Dtype> accumulator_dtype) {
  return make_transformation(
      [accumulator_dtype](const OptParams& params) {
        return NestedTensor{{"trace", zeros_tree(params.value, accumulator_dtype)}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        auto f = [&](const Tensor& g, const Tensor& t) { return g + t * decay; };
        NestedTensor new_trace = map2(updates, state.at("trace"), f);
        NestedTensor out = nesterov ? map2(updates, new_trace, f) : new_trace;
        new_trace = new_trace.map([&](const Tensor& t) { return cast_like(t, accumulator_dtype); });
        return UpdateResult{std::move(out), NestedTensor{{"trace", std::move(new_trace)}}};
      },
      [accumulator_dtype](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["trace"] = copy_partition(specs, accumulator_dtype);
        return out;
      });
}

Transformation scale_by_adam(double b1, double b2, double eps, double eps_root,
                             std::optional<Dtype> mu_dtype) {
  return make_transformation(
      [mu_dtype](const OptParams& params) {
        return NestedTensor{{"count", zero_count()},
                            {"mu", zeros_tree(params.value, mu_dtype)},
                            {"nu", zeros_tree(params.value, std::nullopt)}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        NestedTensor mu = map2(updates, state.at("mu"), [&](const Tensor& g, const Tensor& m) {
          return g * (1.0 - b1) + m * b1;
        });
        NestedTensor nu = map2(updates, state.at("nu"), [&](const Tensor& g, const Tensor& v) {
          return (g * g) * (1.0 - b2) + v * b2;
        });
        const Tensor count = increment(state.at("count").tensor());
        NestedTensor out = map2(mu, nu, [&](const Tensor& m, const Tensor& v) {
          const Tensor m_hat = bias_correction(m, b1, count);
          const Tensor v_hat = bias_correction(v, b2, count);
          return m_hat / (sqrt(v_hat + eps_root) + eps);
        });
        mu = mu.map([&](const Tensor& m) { return cast_like(m, mu_dtype); });
        nu = map2(nu, state.at("nu"), [](const Tensor& v, const Tensor& old) {
          return cast_like(v, old.dtype());
        });
        return UpdateResult{std::move(out),
                            NestedTensor{{"count", count}, {"mu", std::move(mu)}, {"nu", std::move(nu)}}};
      },
      [mu_dtype](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        out["mu"] = copy_partition(specs, mu_dtype);
        out["nu"] = copy_partition(specs);
        return out;
      });
}

Transformation scale_by_lion(double b1, double b2, std::optional<Dtype> mu_dtype) {
  return make_transformation(
      [mu_dtype](const OptParams& params) {
        return NestedTensor{{"count", zero_count()}, {"mu", zeros_tree(params.value, mu_dtype)}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        const NestedTensor& mu = state.at("mu");
        NestedTensor new_mu = map2(updates, mu, [&](const Tensor& g, const Tensor& m) {
          return cast_like(g * (1.0 - b2) + m * b2, mu_dtype);
        });
        NestedTensor out = map2(updates, mu, [&](const Tensor& g, const Tensor& m) {
          return sign(g * (1.0 - b1) + m * b1);
        });
        return UpdateResult{std::move(out),
                            NestedTensor{{"count", increment(state.at("count").tensor())},
                                         {"mu", std::move(new_mu)}}};
      },
      [mu_dtype](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        out["mu"] = copy_partition(specs, mu_dtype);
        return out;
      });
}

Transformation ema(Schedule decay, bool debias, std::optional<Dtype> accumulator_dtype) {
  auto acc_dtype = [accumulator_dtype](const Shape& shape, std::optional<Dtype> own) {
    // Scalars keep their own dtype, as AXLearn's ema does.
    return !shape.empty() && accumulator_dtype ? accumulator_dtype : own;
  };
  return make_transformation(
      [acc_dtype](const OptParams& params) {
        return NestedTensor{{"count", zero_count()},
                            {"ema", params.value.map([&](const Tensor& t) {
                               return zeros(t.shape(), *acc_dtype(t.shape(), t.dtype()));
                             })}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams&) {
        const Tensor count = state.at("count").tensor();
        const Tensor d = decay(count);
        const Tensor count_inc = increment(count);
        const NestedTensor& old = state.at("ema");
        NestedTensor new_ema = map2(updates, old, [&](const Tensor& g, const Tensor& e) {
          return astype(1.0 - d, g.dtype()) * g + astype(d, e.dtype()) * e;
        });
        NestedTensor out = new_ema;
        if (debias) {
          out = new_ema.map([&](const Tensor& e) {
            const Tensor correction = 1.0 - power(d, astype(count_inc, float32));
            return e / astype(correction, e.dtype());
          });
        }
        new_ema = map2(new_ema, old, [](const Tensor& e, const Tensor& o) {
          return cast_like(e, o.dtype());
        });
        return UpdateResult{std::move(out),
                            NestedTensor{{"count", count_inc}, {"ema", std::move(new_ema)}}};
      },
      [acc_dtype](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        out["ema"] = map_specs(specs, [&](const ParameterSpec& s) {
          NestedParameterSpec one(s);
          ParameterSpec c = copy_partition(one).spec();
          c.dtype = acc_dtype(s.shape, s.dtype);
          return c;
        });
        return out;
      });
}

Transformation param_ema(Schedule decay) {
  return make_transformation(
      [](const OptParams& params) {
        return NestedTensor{{"count", zero_count()}, {"ema", zeros_tree(params.value, std::nullopt)}};
      },
      [decay](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        const Tensor count = state.at("count").tensor();
        const Tensor d = decay(count);
        NestedTensor new_ema = map2(params.value, state.at("ema"), [&](const Tensor& p, const Tensor& e) {
          return astype(1.0 - d, p.dtype()) * p + astype(d, e.dtype()) * e;
        });
        return UpdateResult{updates,
                            NestedTensor{{"count", increment(count)}, {"ema", std::move(new_ema)}}};
      },
      [](const NestedParameterSpec& specs) {
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        out["ema"] = copy_partition(specs);
        return out;
      });
}

namespace {

// The two largest dims (d1 second largest, d0 largest) when the moment is factored.
std::optional<std::pair<int, int>> factored_dims(const Shape& shape, bool factored,
                                                 int64_t min_dim_size_to_factor) {
  if (!factored || shape.size() < 2) return std::nullopt;
  std::vector<int> order(shape.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  // A stable sort, as np.argsort's ties keep index order for these small shapes.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return shape[a] < shape[b]; });
  const int d1 = order[order.size() - 2], d0 = order.back();
  if (shape[d1] < min_dim_size_to_factor) return std::nullopt;
  return std::make_pair(d1, d0);
}

Shape drop_dim(const Shape& shape, int d) {
  Shape out;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (int(i) != d) out.push_back(shape[i]);
  }
  return out;
}

}  // namespace

Transformation scale_by_factored_rms(bool factored, Schedule decay_rate, int64_t step_offset,
                                     int64_t min_dim_size_to_factor, double epsilon) {
  return make_transformation(
      [=](const OptParams& params) {
        NestedTensor v_row, v_col, v;
        const auto leaves = params.value.leaves();
        std::vector<Tensor> rows, cols, fulls;
        for (const Tensor& p : leaves) {
          const auto dims = factored_dims(p.shape(), factored, min_dim_size_to_factor);
          if (dims) {
            rows.push_back(zeros(drop_dim(p.shape(), dims->second), p.dtype()));
            cols.push_back(zeros(drop_dim(p.shape(), dims->first), p.dtype()));
            fulls.push_back(zeros({1}, p.dtype()));
          } else {
            rows.push_back(zeros({1}, p.dtype()));
            cols.push_back(zeros({1}, p.dtype()));
            fulls.push_back(zeros(p.shape(), p.dtype()));
          }
        }
        return NestedTensor{{"count", zero_count()},
                            {"v_row", params.value.unflatten(rows)},
                            {"v_col", params.value.unflatten(cols)},
                            {"v", params.value.unflatten(fulls)}};
      },
      [=](const NestedTensor& updates, const NestedTensor& state, const OptParams& params) {
        const Tensor count = state.at("count").tensor();
        const Tensor d = decay_rate(count - scalar(double(step_offset), int32));
        const auto g = updates.leaves();
        const auto p = params.value.leaves();
        const auto vr = state.at("v_row").leaves();
        const auto vc = state.at("v_col").leaves();
        const auto vf = state.at("v").leaves();
        std::vector<Tensor> out, rows, cols, fulls;
        for (size_t i = 0; i < g.size(); ++i) {
          const Dtype dt = p[i].dtype();
          const Tensor dd = astype(d, dt);
          const Tensor one_minus = astype(1.0 - d, dt);
          const Tensor grad_sqr = g[i] * g[i] + epsilon;
          const auto dims = factored_dims(p[i].shape(), factored, min_dim_size_to_factor);
          if (dims) {
            const auto [d1, d0] = *dims;
            const Tensor new_row = astype(dd * vr[i] + one_minus * mean(grad_sqr, {d0}), dt);
            const Tensor new_col = astype(dd * vc[i] + one_minus * mean(grad_sqr, {d1}), dt);
            const int reduced_d1 = d1 > d0 ? d1 - 1 : d1;
            const Tensor row_col_mean = mean(new_row, {reduced_d1}, true);
            const Tensor row_factor = power(new_row / row_col_mean, weak_scalar(-0.5, new_row));
            const Tensor col_factor = power(new_col, weak_scalar(-0.5, new_col));
            out.push_back(g[i] * expand_dims(row_factor, d0) * expand_dims(col_factor, d1));
            rows.push_back(new_row);
            cols.push_back(new_col);
            fulls.push_back(zeros({1}, dt));
          } else {
            const Tensor new_v = astype(dd * vf[i] + one_minus * grad_sqr, dt);
            out.push_back(g[i] * power(new_v, weak_scalar(-0.5, new_v)));
            rows.push_back(zeros({1}, dt));
            cols.push_back(zeros({1}, dt));
            fulls.push_back(new_v);
          }
        }
        return UpdateResult{updates.unflatten(out),
                            NestedTensor{{"count", increment(count)},
                                         {"v_row", params.value.unflatten(rows)},
                                         {"v_col", params.value.unflatten(cols)},
                                         {"v", params.value.unflatten(fulls)}}};
      },
      [=](const NestedParameterSpec& specs) {
        auto shaped = [&](int which) {
          return map_specs(specs, [&](const ParameterSpec& s) {
            const auto dims = factored_dims(s.shape, factored, min_dim_size_to_factor);
            const MeshAxes axes = s.mesh_axes.value_or(MeshAxes(s.shape.size(), std::monostate{}));
            auto drop_axis = [&](int dim) {
              MeshAxes a;
              for (size_t i = 0; i < axes.size(); ++i) {
                if (int(i) != dim) a.push_back(axes[i]);
              }
              return a;
            };
            ParameterSpec out{.shape = {1}, .dtype = s.dtype, .mesh_axes = MeshAxes{std::monostate{}}};
            if (dims && which == 0) {
              out.shape = drop_dim(s.shape, dims->second);
              out.mesh_axes = drop_axis(dims->second);
            } else if (dims && which == 1) {
              out.shape = drop_dim(s.shape, dims->first);
              out.mesh_axes = drop_axis(dims->first);
            } else if (!dims && which == 2) {
              out.shape = s.shape;
              out.mesh_axes = axes;
            }
            return out;
          });
        };
        NestedParameterSpec out;
        out["count"] = NestedParameterSpec(scalar_state_spec());
        out["v_row"] = shaped(0);
        out["v_col"] = shaped(1);
        out["v"] = shaped(2);
        return out;
      });
}

}  // namespace axlearn::optim
