// The `axlearn` command line: one subcommand per job (`axlearn demo`, ...). Flag errors come from
// CLI11 with usage (exit status 100+); errors in a job print one line and exit 1, never a crash.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>

#include "axlearn/cli/demo.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"AXLearn C++: train deep-learning models with a lazy tensor engine.", "axlearn"};
  app.require_subcommand(1);
  axlearn::cli::DemoOptions demo_options;
  CLI::App* demo = add_demo(app, demo_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  const char* job = demo->parsed() ? "demo" : "";
  try {
    if (demo->parsed()) axlearn::cli::run_demo(demo_options, std::cout);
    return 0;
  } catch (const axlearn::Error& e) {
    std::fprintf(stderr, "axlearn %s: error: %s\n", job, e.what());
  } catch (const std::exception& e) {
    // An internal invariant or the system (e.g. out of memory): still a message, not an abort.
    std::fprintf(stderr, "axlearn %s: internal error: %s\n", job, e.what());
  }
  return 1;
}
