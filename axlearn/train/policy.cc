#include "axlearn/train/policy.h"

#include "axlearn/core/error.h"

namespace axlearn::train {

StepPolicy EveryNStepsPolicy::call() const {
  const int64_t every = n.get(), lo = min_step.get();
  const std::optional<int64_t> hi = max_step.get();
  if (every < 1) fail("every_n_steps_policy: n must be at least 1, got ", every);
  return [every, lo, hi](int64_t step) {
    return step >= lo && (!hi || step <= *hi) && step % every == 0;
  };
}

StepPolicy EveryNStepsAndLastPolicy::call() const {
  const int64_t every = n.get(), lo = min_step.get(), last = max_step.get();
  if (every < 1) fail("every_n_steps_and_last_policy: n must be at least 1, got ", every);
  return [every, lo, last](int64_t step) {
    return step >= lo && step <= last && (step % every == 0 || step == last);
  };
}

}  // namespace axlearn::train
