#include "axlearn/optim/learner.h"

#include <regex>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"

namespace axlearn::optim {
namespace {

Tensor global_norm(const NestedTensor& tree) {
  Tensor total = scalar(0.0);
  for (const Tensor& leaf : tree.leaves()) total = total + astype(sum(leaf * leaf), float32);
  return sqrt(total);
}

bool takes_optimizer(UpdateType t) {
  return t == UpdateType::kOptimizers || t == UpdateType::kAllUpdates;
}
bool takes_state_updates(UpdateType t) {
  return t == UpdateType::kStateUpdates || t == UpdateType::kAllUpdates;
}

// Micro-batch i of n: rows [i * b / n, (i + 1) * b / n) of every input.
NestedTensor microbatch(const NestedTensor& inputs, int64_t i, int64_t n) {
  return inputs.map_with_path([&](const std::string& path, const Tensor& x) {
    if (x.shape().empty() || x.shape()[0] % n != 0) {
      fail("Learner: input '", path, "' of shape ", shape_str(x.shape()),
           " cannot be split into ", n, " micro-batches along axis 0");
    }
    const int64_t rows = x.shape()[0] / n;
    return slice_axis(x, 0, i * rows, (i + 1) * rows);
  });
}

}  // namespace

Learner::Learner(const Config& cfg, Module* parent) : Module(cfg, parent) {
  optimizer_ = instantiate_transformation(cfg.optimizer, "optimizer");
  ema_ = instantiate_transformation(cfg.ema.get(), "ema");
  for (const auto& [pattern, type] : cfg.update_rules.get()) {
    (void)type;
    try {
      std::regex re(pattern);
    } catch (const std::regex_error& e) {
      fail(path(), ".update_rules: invalid regex '", pattern, "': ", e.what());
    }
  }
  if (cfg.num_microbatches < 1) {
    fail(path(), ".num_microbatches must be >= 1, given ", int64_t(cfg.num_microbatches));
  }
}

UpdateType Learner::update_type(const std::string& param_path) const {
  for (const auto& [pattern, type] : config().update_rules.get()) {
    if (std::regex_match(param_path, std::regex(pattern))) return type;
  }
  return UpdateType::kAllUpdates;
}

NestedTensor Learner::init(const NestedTensor& params) const {
  NestedTensor state{{"optimizer", optimizer_->init(make_opt_params(params))}};
  if (ema_) state["ema"] = ema_->init(make_opt_params(params));
  return state;
}

NestedParameterSpec Learner::create_state_partition_specs(
    const NestedParameterSpec& param_specs) const {
  NestedParameterSpec out;
  out["optimizer"] = optimizer_->partition(param_specs);
  if (ema_) out["ema"] = ema_->partition(param_specs);
  return out;
}

ForwardBackwardOutput Learner::forward_and_backward(const ForwardFn& fn,
                                                    const NestedTensor& params,
                                                    const NestedTensor& learner_state,
                                                    const NestedTensor& inputs,
                                                    const NestedParameterSpec* param_specs) {
  const Config& cfg = config();
  const std::optional<Dtype> train_dtype = cfg.train_dtype;
  const int64_t n = cfg.num_microbatches;

  // ---- gradients, accumulated over micro-batches ----
  Tensor loss;
  NestedTensor grads, aux, state_updates;
  for (int64_t i = 0; i < n; ++i) {
    const NestedTensor batch = n == 1 ? inputs : microbatch(inputs, i, n);
    NestedTensor mb_state_updates;
    NestedValueAndGrad vg = value_and_grad_with_aux(
        [&](const NestedTensor& p) {
          const NestedTensor cast = train_dtype ? p.map([&](const Tensor& t) {
            return t.dtype() == *train_dtype ? t : astype(t, *train_dtype);
          })
                                                : p;
          ForwardOutput out = fn(cast, batch);
          mb_state_updates = out.state_updates;
          return std::make_pair(astype(out.loss, float32), out.aux);
        },
        params);
    if (i == 0) {
      loss = vg.value;
      grads = vg.grads;
      aux = vg.aux;
    } else {
      loss = loss + vg.value;
      grads = NestedTensor::zip_map({&grads, &vg.grads},
                                    [](const std::vector<Tensor>& v) { return v[0] + v[1]; });
      aux = NestedTensor::zip_map({&aux, &vg.aux}, [](const std::vector<Tensor>& v) {
        return v[0] + v[1];
      });
    }
    state_updates = mb_state_updates;  // the last micro-batch's, as a sequential run would leave
  }
  if (n > 1) {
    const double inv = 1.0 / double(n);
    loss = loss * inv;
    grads = grads.map([&](const Tensor& g) { return g * inv; });
    aux = aux.map([&](const Tensor& a) {
      return is_floating(a.dtype()) ? a * inv : a;
    });
  }
  // Gradients reach the optimizer in the master parameters' dtype; frozen ones are zeros.
  grads = NestedTensor::zip_map({&grads, &params}, [](const std::vector<Tensor>& v) {
    return v[0].dtype() == v[1].dtype() ? v[0] : astype(v[0], v[1].dtype());
  });
  grads = grads.map_with_path([&](const std::string& path, const Tensor& g) {
    return takes_optimizer(update_type(path)) ? g : zeros_like(g);
  });

  // ---- optimizer step, with its summaries collected in this learner's context ----
  ForwardBackwardOutput result;
  auto step = functional_call(*this, NestedTensor(), std::nullopt, true, [&] {
    const OptParams opt_params = make_opt_params(params, param_specs);
    add_summary("gradient_norm", global_norm(grads));
    UpdateResult r = optimizer_->update(grads, learner_state.at("optimizer"), opt_params);
    add_summary("update_norm", global_norm(r.updates));
    if (cfg.enable_per_variable_summaries) {
      for (const auto& [path, p] : params.flatten_with_paths()) {
        add_summary("param_norm/" + path, sqrt(sum(p * p)));
      }
      for (const auto& [path, g] : grads.flatten_with_paths()) {
        add_summary("grad_norm/" + path, sqrt(sum(g * g)));
      }
    }
    const auto param_leaves = params.flatten_with_paths();
    const auto update_leaves = r.updates.leaves();
    std::vector<Tensor> new_leaves;
    for (size_t i = 0; i < param_leaves.size(); ++i) {
      const auto& [path, p] = param_leaves[i];
      const UpdateType type = update_type(path);
      Tensor value = p;  // kNoUpdate leaves the very same tensor
      if (takes_optimizer(type)) value = astype(p + update_leaves[i], p.dtype());
      if (takes_state_updates(type)) {
        const auto flat = state_updates.flatten_with_paths();
        for (const auto& [u_path, u] : flat) {
          if (u_path == path) value = astype(u, p.dtype());
        }
      }
      new_leaves.push_back(value);
    }
    NestedTensor new_params = params.unflatten(new_leaves);
    NestedTensor new_state{{"optimizer", std::move(r.state)}};
    if (ema_) {
      UpdateResult e = ema_->update(new_params, learner_state.at("ema"),
                                    make_opt_params(new_params, param_specs));
      new_state["ema"] = std::move(e.state);
    }
    result.params = std::move(new_params);
    result.learner_state = std::move(new_state);
    return 0;
  });
  result.loss = loss;
  result.aux = aux;
  result.summaries = step.output_collection.summaries();
  return result;
}

}  // namespace axlearn::optim
