// The `axlearn` command line: one subcommand per job (train, eval, generate, convert, configs,
// bench, demo). Flag errors come from CLI11 with usage (exit status 100+); errors in a job print
// one line and exit 1, never a crash.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>

#include "axlearn/cli/bench.h"
#include "axlearn/cli/convert.h"
#include "axlearn/cli/demo.h"
#include "axlearn/cli/generate.h"
#include "axlearn/cli/train.h"
#include "axlearn/core/error.h"

namespace {

CLI::App* add_demo(CLI::App& app, axlearn::cli::DemoOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "demo", "Train softmax regression and a 784-H-10 MLP on Fashion-MNIST; print accuracy");
  cmd->add_option("--model", o.model, "Which model to train")
      ->check(CLI::IsMember({"softmax", "mlp", "both"}))
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Passes over the training set")->capture_default_str();
  cmd->add_option("--batch_size", o.batch_size, "Examples per step")->capture_default_str();
  cmd->add_option("--learning_rate", o.learning_rate, "Adam step size")->capture_default_str();
  cmd->add_option("--hidden", o.hidden, "Hidden units of the MLP")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed for initialisation and shuffling")->capture_default_str();
  cmd->add_option("--data_dir", o.data_dir,
                  "Directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
      ->capture_default_str();
  cmd->add_option("--limit_train", o.limit_train, "Train on the first N examples only (0: all)")
      ->capture_default_str();
  return cmd;
}

CLI::App* add_train(CLI::App& app, axlearn::cli::TrainOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a registered experiment (see `axlearn configs list`); resumes from the newest "
      "checkpoint in --trainer_dir. SIGINT/SIGTERM save a checkpoint and exit.");
  cmd->add_option("--config", o.config, "Experiment name, e.g. fuji-nano")->required();
  cmd->add_option("--trainer_dir", o.trainer_dir,
                  "Folder for checkpoints/, summaries/ (TensorBoard) and metrics.jsonl")
      ->required();
  cmd->add_option("--max_step", o.max_step,
                  "Train to this step (also moves the schedule's and policies' max_step, and shortens a longer "
                  "warmup)");
  cmd->add_option("--set", o.overrides,
                  "Config override PATH=VALUE, repeatable, e.g. --set "
                  "model.decoder.transformer.num_layers=2 --set input.global_batch_size=8")
      ->take_all();
  cmd->add_option("--devices", o.devices,
                  "Run on N virtual CPU devices (threads of this process); the mesh comes from "
                  "mesh_shape, e.g. --set mesh_shape=[1,2,1,2,1,1]. Under mpirun each process is "
                  "one device: leave this out")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--mesh_selector", o.mesh_selector,
                  "Platform name matched against the config's mesh_rules (e.g. cpu, "
                  "gpu-p5.48xlarge-256); the first matching rule sets the mesh");
  return cmd;
}

CLI::App* add_eval(CLI::App& app, axlearn::cli::EvalOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "eval", "Evaluate the newest checkpoint of a trainer dir with the run's evalers");
  cmd->add_option("--trainer_dir", o.trainer_dir, "Trainer folder of an `axlearn train` run")
      ->required();
  cmd->add_option("--config", o.config,
                  "Experiment name; default: the trainer_config.json saved by the run");
  cmd->add_option("--set", o.overrides, "Config override PATH=VALUE, repeatable")->take_all();
  cmd->add_option("--devices", o.devices, "Evaluate on N virtual CPU devices (see train --help)")
      ->check(CLI::PositiveNumber);
  return cmd;
}

// `bench train-step`; the parent command only groups benchmarks.
CLI::App* add_bench(CLI::App& app, axlearn::cli::BenchOptions& o) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (see docs/performance.md)");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand(
      "train-step",
      "Time an experiment's compiled training step on synthetic tokens; print one JSON line");
  cmd->add_option("--config", o.config, "Experiment name, e.g. fuji-nano")->required();
  cmd->add_option("--set", o.overrides, "Config override PATH=VALUE, repeatable")->take_all();
  cmd->add_option("--steps", o.steps, "Timed steps (the median is reported)")
      ->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Untimed steps first (the first compiles)")
      ->capture_default_str();
  cmd->add_option("--dtype", o.dtype, "Forward/backward dtype (bf16: f32 master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--profile", o.profile, "Also run one step op by op; per-op times on stderr");
  cmd->add_option("--profile_top", o.profile_top, "Rows of the per-op-signature table")
      ->capture_default_str();
  cmd->add_option("--devices", o.devices,
                  "Run on N virtual CPU devices with the config's mesh_shape (--set "
                  "mesh_shape=[...]); adds per-device state bytes and collective traffic")
      ->check(CLI::PositiveNumber);
  return bench;
}

struct ConfigsOptions {
  std::string name;
  std::vector<std::string> overrides;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"AXLearn C++: train deep-learning models with a lazy tensor engine.", "axlearn"};
  app.require_subcommand(1);
  axlearn::cli::DemoOptions demo_options;
  CLI::App* demo = add_demo(app, demo_options);
  axlearn::cli::TrainOptions train_options;
  CLI::App* train = add_train(app, train_options);
  axlearn::cli::EvalOptions eval_options;
  CLI::App* eval = add_eval(app, eval_options);
  axlearn::cli::BenchOptions bench_options;
  CLI::App* bench = add_bench(app, bench_options);
  axlearn::cli::ConvertOptions convert_options;
  CLI::App* convert = axlearn::cli::add_convert(app, convert_options);
  axlearn::cli::GenerateOptions generate_options;
  CLI::App* generate = axlearn::cli::add_generate(app, generate_options);
  CLI::App* configs = app.add_subcommand("configs", "List or print the registered experiments");
  configs->require_subcommand(1);
  CLI::App* configs_list =
      configs->add_subcommand("list", "Name, parameter count and description of each");
  ConfigsOptions show_options;
  CLI::App* configs_show = configs->add_subcommand(
      "show", "Print an experiment's config, one 'path: value' line per field");
  configs_show->add_option("name", show_options.name, "Experiment name")->required();
  configs_show->add_option("--set", show_options.overrides, "Config override PATH=VALUE")
      ->take_all();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  const char* job = demo->parsed()       ? "demo"
                    : train->parsed()    ? "train"
                    : eval->parsed()     ? "eval"
                    : configs->parsed()  ? "configs"
                    : bench->parsed()    ? "bench"
                    : convert->parsed()  ? "convert"
                    : generate->parsed() ? "generate"
                                         : "";
  try {
    if (demo->parsed()) axlearn::cli::run_demo(demo_options, std::cout);
    if (train->parsed()) return axlearn::cli::run_train(train_options, std::cout);
    if (eval->parsed()) return axlearn::cli::run_eval(eval_options, std::cout);
    if (bench->parsed()) return axlearn::cli::run_bench_train_step(bench_options, std::cout);
    if (convert->parsed()) return axlearn::cli::run_convert(convert_options, std::cout);
    if (generate->parsed()) {
      return axlearn::cli::run_generate(generate_options, std::cout, std::cerr);
    }
    if (configs_list->parsed()) axlearn::cli::list_configs(std::cout);
    if (configs_show->parsed()) {
      axlearn::cli::show_config(show_options.name, show_options.overrides, std::cout);
    }
    return 0;
  } catch (const axlearn::Error& e) {
    std::fprintf(stderr, "axlearn %s: error: %s\n", job, e.what());
  } catch (const std::exception& e) {
    // An internal invariant or the system (e.g. out of memory): still a message, not an abort.
    std::fprintf(stderr, "axlearn %s: internal error: %s\n", job, e.what());
  }
  return 1;
}
