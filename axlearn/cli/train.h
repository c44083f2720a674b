// `axlearn train`, `axlearn eval` and `axlearn configs`: the trainer from the command line.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "axlearn/train/trainer.h"

namespace axlearn::cli {

struct TrainOptions {
  std::string config;       // a registered experiment
  std::string trainer_dir;  // where checkpoints, summaries and metrics go
  std::optional<int64_t> max_step;
  std::vector<std::string> overrides;  // "path=value", applied in order after max_step
  int64_t devices = 1;                 // virtual CPU devices (threads); 1 under mpirun
  std::string mesh_selector;           // picks one of the config's mesh_rules (empty: none)
};

// The experiment's config with the trainer dir, max_step and overrides applied. --max_step also
// moves every other max_step of the config that equalled the experiment's (the learning-rate
// schedule's, the checkpoint and eval policies'), so a shorter run still decays and evaluates
// at its end; a warmup at least as long as the new max_step is halved to max_step / 2. The
// mesh rule that --mesh_selector matches applies before the overrides.
ConfigPtr<train::SpmdTrainer::Config> build_trainer_config(const TrainOptions& options);

// Trains and prints the final evaluation, a short text sample from the trained model and where
// the TensorBoard logs are. Returns the exit status (0, also after a clean stop on
// SIGINT/SIGTERM). With several devices (options.devices virtual devices, or the ranks of an MPI
// job) every device trains its part and the first one prints.
int run_train(const TrainOptions& options, std::ostream& out);

struct EvalOptions {
  std::string trainer_dir;
  std::string config;  // empty: the trainer_config.json the run saved in trainer_dir
  std::vector<std::string> overrides;
  int64_t devices = 1;
};
int run_eval(const EvalOptions& options, std::ostream& out);

// `configs list`: name, parameter count and description of every experiment.
void list_configs(std::ostream& out);
// `configs show NAME`: the config in AXLearn's golden-file format, one "path: value" per line.
void show_config(const std::string& name, const std::vector<std::string>& overrides,
                 std::ostream& out);

}  // namespace axlearn::cli
