// Named trainer configs (AXLearn's experiments): `axlearn train --config=NAME` looks them up
// here. The Fuji family are LLaMA-style decoders; fuji-test and fuji-nano train on the built-in
// corpus, the others carry AXLearn's real dimensions for `configs show` and parameter counts.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "axlearn/train/trainer.h"

namespace axlearn::experiments {

using TrainerConfigFn = std::function<ConfigPtr<train::SpmdTrainer::Config>()>;

struct Experiment {
  std::string name;
  std::string description;
  TrainerConfigFn make_config;
  bool trainable_here = false;  // fits this kind of machine (CPU, one device)
};

// Every registered experiment, in a stable order.
const std::vector<Experiment>& registered_experiments();
// The config of experiment `name`; Error listing the names (with a suggestion) when unknown.
ConfigPtr<train::SpmdTrainer::Config> trainer_config(const std::string& name);

// Parameter count of a model config without allocating the parameters.
int64_t count_parameters(const layers::Model::Config& model);

}  // namespace axlearn::experiments
