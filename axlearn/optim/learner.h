// Learner (AXLearn's learner.py): owns the optimizer, decides per parameter which updates apply
// (update_rules), keeps an optional EMA of the parameters, and runs forward_and_backward —
// gradients (accumulated over micro-batches, computed in train_dtype against f32 master
// parameters), the optimizer step, and the step's summaries.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/module/module.h"
#include "axlearn/optim/optimizers.h"

namespace axlearn::optim {

// Which updates a parameter takes: none (frozen), the optimizer's, the forward pass's state
// updates (e.g. batch-norm statistics), or both (a state update wins where there is one).
enum class UpdateType : uint8_t { kNoUpdate, kOptimizers, kStateUpdates, kAllUpdates };
AXLEARN_CONFIG_ENUM(UpdateType, {UpdateType::kNoUpdate, "no_update"},
                    {UpdateType::kOptimizers, "optimizers"},
                    {UpdateType::kStateUpdates, "state_updates"}, {UpdateType::kAllUpdates, "all"})

// What the function given to forward_and_backward returns for one (micro-)batch.
struct ForwardOutput {
  Tensor loss;                // scalar
  NestedTensor aux;           // anything else; averaged over micro-batches
  NestedTensor state_updates; // new values of (some) parameters, keyed like the parameters
};
// fn(params in train_dtype, inputs).
using ForwardFn = std::function<ForwardOutput(const NestedTensor& params, const NestedTensor& inputs)>;

struct ForwardBackwardOutput {
  Tensor loss;
  NestedTensor aux;
  NestedTensor params;         // the updated (master) parameters
  NestedTensor learner_state;  // {"optimizer": ..., "ema": ...}
  // "learning_rate", "gradient_norm", "update_norm", the optimizer's own, and with
  // enable_per_variable_summaries "param_norm/<path>", "grad_norm/<path>".
  std::vector<std::pair<std::string, Summary>> summaries;
};

class Learner : public Module {
 public:
  struct Config : Module::Config {
    AXLEARN_CONFIG(Config)
    Field<ConfigPtr<TransformationConfig>> optimizer{this, "optimizer", REQUIRED,
                                                     "The gradient transformation."};
    Field<OrderedDict<UpdateType>> update_rules{
        this, "update_rules", {},
        "Parameter path regex -> update type; the first full match wins, default 'all'."};
    Field<ConfigPtr<TransformationConfig>> ema{this, "ema", nullptr,
                                               "EMA of the parameters (param_ema); None: none."};
    Field<bool> enable_per_variable_summaries{this, "enable_per_variable_summaries", false,
                                              "Add norms of each parameter and gradient."};
    Field<int64_t> num_microbatches{this, "num_microbatches", 1,
                                    "Split the batch (axis 0 of every input) and accumulate."};
    Field<std::optional<Dtype>> train_dtype{
        this, "train_dtype", std::nullopt,
        "Dtype the forward pass sees the parameters in; None: their own."};
  };
  AXLEARN_CONFIGURABLE(Learner, "axlearn.common.learner.Learner")

  Learner(const Config& cfg, Module* parent);

  UpdateType update_type(const std::string& path) const;
  // The learner state for these parameters: {"optimizer": ..., "ema": ... (when enabled)}.
  NestedTensor init(const NestedTensor& params) const;
  NestedParameterSpec create_state_partition_specs(const NestedParameterSpec& param_specs) const;

  ForwardBackwardOutput forward_and_backward(const ForwardFn& fn, const NestedTensor& params,
                                             const NestedTensor& learner_state,
                                             const NestedTensor& inputs,
                                             const NestedParameterSpec* param_specs = nullptr);

 private:
  Transformation optimizer_;
  Transformation ema_;  // null when disabled
};

}  // namespace axlearn::optim
