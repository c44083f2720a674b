// Step policies (AXLearn's evaler.every_n_steps_policy and
// checkpointer.every_n_steps_and_last_policy): registered function configs deciding at which
// steps the trainer saves a checkpoint, runs an evaler or writes summaries.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "axlearn/config/configurable.h"

namespace axlearn::train {

// step -> whether to act at it.
using StepPolicy = std::function<bool(int64_t step)>;
using StepPolicyConfig = FunctionConfig<StepPolicy>;

// True at steps min_step <= step (<= max_step when set) divisible by n.
struct EveryNStepsPolicy : StepPolicyConfig {
  AXLEARN_FUNCTION_CONFIG(EveryNStepsPolicy, "axlearn.common.evaler.every_n_steps_policy")
  Field<int64_t> n{this, "n", REQUIRED, "Act every n steps (>= 1)."};
  Field<int64_t> min_step{this, "min_step", 1, "No action before this step."};
  Field<std::optional<int64_t>> max_step{this, "max_step", std::nullopt,
                                         "No action after this step; None: no limit."};

 protected:
  StepPolicy call() const override;
};

// Every n steps, and also at max_step (the last step of training).
struct EveryNStepsAndLastPolicy : StepPolicyConfig {
  AXLEARN_FUNCTION_CONFIG(EveryNStepsAndLastPolicy,
                          "axlearn.common.checkpointer.every_n_steps_and_last_policy")
  Field<int64_t> n{this, "n", REQUIRED, "Act every n steps (>= 1)."};
  Field<int64_t> max_step{this, "max_step", REQUIRED, "The last step; always acted on."};
  Field<int64_t> min_step{this, "min_step", 1, "No action before this step."};

 protected:
  StepPolicy call() const override;
};

}  // namespace axlearn::train
