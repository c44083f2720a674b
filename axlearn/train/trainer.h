// SpmdTrainer (AXLearn's trainer.py) and SpmdEvaler (evaler.py): the training loop around one
// compiled step — input, model, learner, checkpoints, summaries, evaluation, metrics.jsonl,
// progress lines, a watchdog, NaN/Inf detection and clean stops on SIGINT/SIGTERM.
//
// <dir>/checkpoints/step_%08d/   committed checkpoints (model, learner state, PRNG key; the
//                                step and the input iterator's position in the index)
// <dir>/summaries/train/          TensorBoard events of training
// <dir>/summaries/eval_<name>/    TensorBoard events of each evaler
// <dir>/metrics.jsonl             one JSON object per logged step and per evaluation
// <dir>/trainer_config.json       the config the run used (`axlearn eval` reloads it)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "axlearn/core/compile.h"
#include "axlearn/core/sharding.h"
#include "axlearn/data/text_input.h"
#include "axlearn/layers/decoder.h"
#include "axlearn/optim/learner.h"
#include "axlearn/train/checkpointer.h"
#include "axlearn/train/policy.h"
#include "axlearn/train/summary_writer.h"

namespace axlearn::train {

// Evaluation metrics by name: loss, cross_entropy, accuracy, perplexity, num_tokens.
using EvalMetrics = std::map<std::string, double>;

// Runs the model over its whole input and averages the model's summaries weighted by the
// number of target tokens of each batch (AXLearn's ModelSummaryAccumulator).
class SpmdEvaler : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> name{this, "name", REQUIRED, "Evaler name (filled in from the key)."};
    Field<ConfigPtr<data::Input::Config>> input{this, "input", REQUIRED,
                                                "Evaluation input (is_training False)."};
    Field<ConfigPtr<StepPolicyConfig>> eval_policy{this, "eval_policy", REQUIRED,
                                                   "Steps to evaluate at."};
    Field<ConfigPtr<SummaryWriter::Config>> summary_writer{
        this, "summary_writer", SummaryWriter::default_config(),
        "Writes to <trainer dir>/summaries/eval_<name> (dir filled in)."};
    Field<std::optional<Dtype>> eval_dtype{this, "eval_dtype", std::nullopt,
                                           "Dtype the model sees parameters in; None: theirs."};
  };
  AXLEARN_CONFIGURABLE(SpmdEvaler, "axlearn.common.evaler.SpmdEvaler")
  explicit SpmdEvaler(const Config& cfg);

  // batch -> {"loss", "cross_entropy", "accuracy", "num_tokens"} (f32 scalars).
  using BatchFn = std::function<NestedTensor(const NestedTensor& params, const NestedTensor& batch)>;

  const std::string& name() const { return name_; }
  bool should_eval(int64_t step) const { return policy_(step); }
  // One pass over the input; writes the metrics as summaries at `step` and returns them.
  EvalMetrics evaluate(int64_t step, const NestedTensor& params, const BatchFn& fn);

 private:
  std::string name_;
  StepPolicy policy_;
  std::unique_ptr<data::Input> input_;
  std::unique_ptr<SummaryWriter> summary_writer_;
};

struct TrainResult {
  int64_t step = 0;          // the last step trained (or restored)
  double loss = 0;           // loss of the last step trained (NaN when none ran)
  bool interrupted = false;  // stopped by SIGINT/SIGTERM (a checkpoint was saved)
  std::map<std::string, EvalMetrics> last_eval;  // per evaler, the last evaluation
};

class SpmdTrainer : public Module {
 public:
  struct Config : Module::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> dir{this, "dir", REQUIRED, "The trainer dir."};
    Field<ConfigPtr<data::Input::Config>> input{this, "input", REQUIRED, "Training input."};
    Field<ConfigPtr<layers::Model::Config>> model{this, "model", REQUIRED, "The model."};
    Field<ConfigPtr<optim::Learner::Config>> learner{this, "learner", REQUIRED, "The learner."};
    Field<int64_t> max_step{this, "max_step", REQUIRED, "Train until this step."};
    Field<ConfigPtr<Checkpointer::Config>> checkpointer{
        this, "checkpointer", Checkpointer::default_config(), "dir is filled in."};
    Field<ConfigPtr<SummaryWriter::Config>> summary_writer{
        this, "summary_writer", SummaryWriter::default_config(),
        "Training summaries, in <dir>/summaries/train (dir filled in)."};
    Field<std::map<std::string, ConfigPtr<SpmdEvaler::Config>>> evalers{
        this, "evalers", {}, "Evaluators by name."};
    Field<int64_t> log_every_n_steps{this, "log_every_n_steps", 10,
                                     "Progress line and metrics.jsonl record every n steps."};
    Field<bool> save_input_iterator{this, "save_input_iterator", false,
                                    "Checkpoint the input position, so resume continues with "
                                    "the exact next batch; False restarts the input."};
    Field<std::optional<Dtype>> train_dtype{
        this, "train_dtype", std::nullopt,
        "Dtype of the forward/backward pass (learner.train_dtype when that is None)."};
    Field<std::vector<int64_t>> mesh_shape{this, "mesh_shape", std::vector<int64_t>{1},
                                           "Devices per mesh axis; -1: inferred."};
    Field<std::vector<std::string>> mesh_axis_names{
        this, "mesh_axis_names", std::vector<std::string>{"data"}, "Names of the mesh axes."};
    Field<std::vector<std::string>> batch_axis_names{
        this, "batch_axis_names", std::vector<std::string>{"data"},
        "Mesh axes the global batch is split over."};
    Field<std::vector<std::string>> seq_axis_names{
        this, "seq_axis_names", std::vector<std::string>{},
        "Mesh axes the sequence dimension of input batches is split over (sequence "
        "parallelism)."};
    Field<std::optional<double>> watchdog_timeout_seconds{
        this, "watchdog_timeout_seconds", std::nullopt,
        "Report on stderr when a step takes longer than this; None: no watchdog."};
    Field<int64_t> prng_seed{this, "prng_seed", 0,
                             "Seed of the PRNG key for initialization and dropout."};
    Field<OrderedDict<std::vector<std::string>>> mesh_rules{
        this, "mesh_rules", {},
        "Per platform, a regex over the --mesh_selector and the overrides (PATH=VALUE, e.g. "
        "mesh_shape=[1,-1,1,8,1,1]) the first matching rule applies."};
  };
  AXLEARN_CONFIGURABLE(SpmdTrainer, "axlearn.common.trainer.SpmdTrainer")
  SpmdTrainer(const Config& cfg, Module* parent);
  ~SpmdTrainer() override;

  // Trains from the latest committed checkpoint in dir (or from scratch) to max_step, running
  // each evaler when its policy says so and once more at max_step.
  // Throws Error on NaN/Inf loss (the last good checkpoint stays the latest).
  TrainResult run();
  // Restores the latest checkpoint (Error when there is none) and runs every evaler once.
  std::map<std::string, EvalMetrics> evaluate();

  // A fresh state {"model", "learner", "prng_key"} from prng_seed (no checkpoint involved).
  NestedTensor init_state() const;
  // The training step, compiled: {"model", "learner", "prng_key", "input": batch} ->
  // {"model", "learner", "prng_key" (the next state), "loss", "summaries": {"model": ...,
  // "learner": ...}}. One call is one optimizer step.
  NestedFn make_train_step();

  const layers::Model& model() const { return *model_; }
  const optim::Learner& learner() const { return *learner_; }
  // Parameters as of the last run()/evaluate() (after restore or training).
  const NestedTensor& params() const { return state_.at("model"); }
  const NestedParameterSpec& param_specs() const { return param_specs_; }
  // Matmul FLOPs of one training step per token (6 per weight use plus attention).
  double flops_per_token() const;
  // The device mesh when the run has more than one device (virtual devices or MPI ranks).
  const std::optional<Mesh>& mesh() const { return mesh_; }
  // How each parameter is split over the mesh (from its ParameterSpec.mesh_axes), by path.
  const std::map<std::string, Sharding>& param_shardings() const { return param_shardings_; }
  // state placed on the mesh: parameters and their optimizer state split as the parameters'
  // mesh_axes say, everything else replicated. The identity on one device.
  NestedTensor shard_state(const NestedTensor& state) const;
  // A whole global batch (the same on every device) placed on the mesh: rows split over the
  // batch axes, the sequence over the sequence axes. The identity on one device.
  NestedTensor place_global_batch(const NestedTensor& batch) const;

 private:
  bool is_leader() const;
  int64_t batch_shards() const;
  // The input config for this device: its share of each global batch.
  ConfigPtr<data::Input::Config> device_input_config(const data::Input::Config& cfg) const;
  // This device's rows of the batch as the global batch, split over the batch axes.
  NestedTensor shard_batch(const NestedTensor& batch) const;
  // How a batch tensor of rank ndim is split (rows over the batch axes, then the sequence).
  Sharding batch_sharding(int ndim) const;

  // state_ = {"model", "learner", "prng_key"}, initialized or restored; returns the step.
  int64_t init_or_restore(data::InputIterator* iterator);
  void save(int64_t step, data::InputIterator* iterator);
  std::map<std::string, EvalMetrics> run_evalers(int64_t step, bool force);
  void append_metrics(const std::string& json_line);

  layers::Model* model_ = nullptr;
  optim::Learner* learner_ = nullptr;
  NestedParameterSpec param_specs_;
  std::unique_ptr<data::Input> input_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<SummaryWriter> summary_writer_;
  std::vector<std::unique_ptr<SpmdEvaler>> evalers_;
  std::optional<Mesh> mesh_;
  std::map<std::string, Sharding> param_shardings_;
  std::vector<int> batch_axes_;  // mesh axes (of size > 1) the batch is split over
  std::vector<int> seq_axes_;    // and its sequence dimension
  NestedTensor state_;
  NestedFn train_step_;
  SpmdEvaler::BatchFn eval_step_;
};

// <dir>/trainer_config.json, the config a run saved (dir set to `trainer_dir`); Error naming the
// file when it is missing or not a trainer config.
ConfigPtr<SpmdTrainer::Config> read_trainer_config(const std::string& trainer_dir);
// Writes cfg as <dir>/trainer_config.json atomically (temp file, then rename).
void write_trainer_config(const SpmdTrainer::Config& cfg, const std::string& dir);
// Applies the first of cfg.mesh_rules whose regex matches all of `selector` (AXLearn's
// --mesh_selector) and returns that regex, or nullopt when none matches (cfg is unchanged).
// Error naming the rule on a bad regex or override.
std::optional<std::string> apply_mesh_rules(SpmdTrainer::Config& cfg, const std::string& selector);

// For jobs that run on one device whatever mesh a run trained on (generation, conversion; a
// checkpoint restores onto any mesh): every mesh axis of cfg set to 1.
void use_one_device(SpmdTrainer::Config& cfg);

// f32 matmul throughput of this machine in GFLOP/s (a short oneDNN measurement), the
// denominator of the trainer's MFU estimate.
double measure_matmul_peak_gflops();

}  // namespace axlearn::train
