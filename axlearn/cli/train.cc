#include "axlearn/cli/train.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "axlearn/cli/generate.h"
#include "axlearn/core/error.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/experiments/experiments.h"

namespace axlearn::cli {
namespace fs = std::filesystem;

namespace {

std::string human_count(int64_t n) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(n >= 1e9 ? 2 : 1);
  if (n >= 1000000000) {
    os << n / 1e9 << "B";
  } else if (n >= 1000000) {
    os << n / 1e6 << "M";
  } else if (n >= 1000) {
    os << n / 1e3 << "K";
  } else {
    os << n;
  }
  return os.str();
}

void print_eval(const std::map<std::string, train::EvalMetrics>& evals, std::ostream& out) {
  for (const auto& [name, m] : evals) {
    out << "final eval (" << name << "): loss " << std::fixed << std::setprecision(4)
        << m.at("loss") << " nats/token, accuracy " << m.at("accuracy") << ", perplexity "
        << std::setprecision(2) << m.at("perplexity") << " over "
        << static_cast<int64_t>(m.at("num_tokens")) << " tokens\n";
  }
}

// Runs fn(trainer) on every device of the run and returns the first device's result (null on
// the other MPI ranks).
template <typename R>
std::optional<R> on_devices(const train::SpmdTrainer::Config& cfg, int64_t devices,
                            const std::function<R(train::SpmdTrainer&)>& fn) {
  std::optional<R> first;
  std::mutex mu;
  dist::run_spmd(devices, [&](int64_t rank) {
    std::unique_ptr<train::SpmdTrainer> trainer;
    {
      std::lock_guard<std::mutex> lock(mu);
      trainer = cfg.instantiate<train::SpmdTrainer>(nullptr);
    }
    R r = fn(*trainer);
    if (rank == 0) first = std::move(r);
  });
  return first;
}

}  // namespace

ConfigPtr<train::SpmdTrainer::Config> build_trainer_config(const TrainOptions& o) {
  if (o.trainer_dir.empty()) fail("--trainer_dir is required");
  ConfigPtr<train::SpmdTrainer::Config> cfg = experiments::trainer_config(o.config);
  cfg->dir = o.trainer_dir;
  if (o.max_step) {
    if (*o.max_step < 1) fail("--max_step must be at least 1, got ", *o.max_step);
    const int64_t old = cfg->max_step.get();
    const auto flat = cfg->to_flat_dict();
    for (const auto& [path, value] : flat.items()) {
      const bool is_max_step = path == "max_step" || (path.size() > 9 &&
                                                      path.substr(path.size() - 9) == ".max_step");
      if (is_max_step && value.is_number_integer() && value.get<int64_t>() == old) {
        apply_override(*cfg, path + "=" + std::to_string(*o.max_step));
        // A warmup as long as the whole (shorter) run would leave no room to decay.
        const std::string warmup = path.substr(0, path.size() - 8) + "warmup_steps";
        if (flat.contains(warmup) && flat[warmup].is_number_integer() &&
            flat[warmup].get<int64_t>() >= *o.max_step) {
          apply_override(*cfg, warmup + "=" + std::to_string(*o.max_step / 2));
        }
      }
    }
  }
  if (!o.mesh_selector.empty() && !train::apply_mesh_rules(*cfg, o.mesh_selector)) {
    std::fprintf(stderr, "no mesh rule of %s matches --mesh_selector=%s; keeping mesh_shape\n",
                 o.config.c_str(), o.mesh_selector.c_str());
  }
  apply_overrides(*cfg, o.overrides);
  return cfg;
}

int run_train(const TrainOptions& o, std::ostream& out) {
  ConfigPtr<train::SpmdTrainer::Config> cfg = build_trainer_config(o);
  std::optional<train::TrainResult> result = on_devices<train::TrainResult>(
      *cfg, o.devices, [](train::SpmdTrainer& t) { return t.run(); });
  if (!result) return 0;  // another MPI rank: the first one reports
  const train::TrainResult& r = *result;
  if (r.interrupted) {
    out << "stopped at step " << r.step << "; run the same command again to resume\n";
    return 0;
  }
  print_eval(r.last_eval, out);
  // A short sample from the model just trained (sampled, seeded: the same run prints the same).
  GenerateOptions sample;
  sample.trainer_dir = o.trainer_dir;
  sample.prompt = "And God said";
  sample.max_new_tokens = 40;
  sample.temperature = 0.7;
  sample.top_k = 40;
  sample.seed = 0;
  std::ostringstream quiet;
  out << "sample (temperature 0.7, top_k 40): ";
  out.flush();
  run_generate(sample, out, quiet);  // ends the line
  out << "checkpoints: " << o.trainer_dir << "/checkpoints  metrics: " << o.trainer_dir
      << "/metrics.jsonl\n"
      << "TensorBoard logs: " << o.trainer_dir
      << "/summaries  (view with: tensorboard --logdir " << o.trainer_dir << "/summaries)\n";
  return 0;
}

int run_eval(const EvalOptions& o, std::ostream& out) {
  if (o.trainer_dir.empty()) fail("--trainer_dir is required");
  ConfigPtr<train::SpmdTrainer::Config> cfg;
  if (!o.config.empty()) {
    cfg = experiments::trainer_config(o.config);
  } else {
    cfg = train::read_trainer_config(o.trainer_dir);
  }
  cfg->dir = o.trainer_dir;
  apply_overrides(*cfg, o.overrides);
  using Evals = std::map<std::string, train::EvalMetrics>;
  std::optional<Evals> evals =
      on_devices<Evals>(*cfg, o.devices, [](train::SpmdTrainer& t) { return t.evaluate(); });
  if (evals) print_eval(*evals, out);
  return 0;
}

void list_configs(std::ostream& out) {
  for (const experiments::Experiment& e : experiments::registered_experiments()) {
    auto cfg = e.make_config();
    const int64_t n = experiments::count_parameters(*cfg->model.get());
    out << std::left << std::setw(11) << e.name << std::right << std::setw(9) << human_count(n)
        << "  " << e.description << "\n";
  }
}

void show_config(const std::string& name, const std::vector<std::string>& overrides,
                 std::ostream& out) {
  ConfigPtr<train::SpmdTrainer::Config> cfg = experiments::trainer_config(name);
  apply_overrides(*cfg, overrides);
  out << cfg->debug_string();
}

}  // namespace axlearn::cli
