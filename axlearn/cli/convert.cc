#include "axlearn/cli/convert.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "axlearn/cli/train.h"
#include "axlearn/core/error.h"
#include "axlearn/core/transforms.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/infer/hf_llama.h"
#include "axlearn/train/checkpointer.h"
#include "axlearn/train/trainer.h"

namespace axlearn::cli {
namespace fs = std::filesystem;

namespace {

using train::SpmdTrainer;



void reject(bool given, const char* flag, const char* mode) {
  if (given) fail(flag, " does not apply to --to=", mode);
}

void require(const std::string& value, const char* flag, const char* mode) {
  if (value.empty()) fail("--to=", mode, " needs ", flag);
}

int convert_to_hf(const ConvertOptions& o, std::ostream& out) {
  require(o.trainer_dir, "--trainer_dir", "hf");
  require(o.out, "--out", "hf");
  reject(!o.hf_dir.empty(), "--hf_dir", "hf");
  reject(!o.config.empty(), "--config", "hf (the run's trainer_config.json is used)");
  reject(!o.overrides.empty(), "--set", "hf (the run's trainer_config.json is used)");

  infer::HfExportOptions eo;
  if (!o.dtype.empty()) eo.dtype = dtype_from_name(o.dtype);
  eo.max_shard_size = parse_byte_size(o.max_shard_size);
  // One device, whatever mesh the run trained on.
  dist::SingleDeviceScope one_device;
  ConfigPtr<SpmdTrainer::Config> cfg = train::read_trainer_config(o.trainer_dir);
  train::use_one_device(*cfg);
  if (const auto* input = cfg->input.is_set() ? cfg->input.get().get() : nullptr;
      input && input->max_len.is_set()) {
    eo.max_position_embeddings = input->max_len;
  }
  // Refuse unsupported models before reading any checkpoint.
  infer::llama_spec(*cfg->model.get());

  const std::vector<int64_t> steps = committed_steps(o.trainer_dir);
  if (steps.empty()) fail(o.trainer_dir, "/checkpoints: no committed checkpoint to convert");
  const int64_t step = o.step.value_or(steps.back());
  if (std::find(steps.begin(), steps.end(), step) == steps.end()) {
    std::string have;
    for (int64_t s : steps) have += (have.empty() ? "" : ", ") + std::to_string(s);
    fail(o.trainer_dir, "/checkpoints: no committed step ", step, " (committed: ", have, ")");
  }
  std::unique_ptr<SpmdTrainer> trainer = cfg->instantiate<SpmdTrainer>(nullptr);
  // init_state() is lazy: the restore reads only its shapes and dtypes.
  RestoredCheckpoint r = restore_checkpoint(o.trainer_dir, step, trainer->init_state());
  const std::vector<std::string> files =
      infer::export_hf(o.out, *cfg->model.get(), r.tree.at("model"), eo);
  out << "exported step " << step << " of " << o.trainer_dir << " to " << o.out << ": config.json";
  for (const auto& f : files) out << ", " << f;
  out << "\n";
  return 0;
}

int convert_to_axlearn(const ConvertOptions& o, std::ostream& out) {
  require(o.hf_dir, "--hf_dir", "axlearn");
  require(o.trainer_dir, "--trainer_dir", "axlearn");
  require(o.config, "--config", "axlearn");
  reject(!o.out.empty(), "--out", "axlearn");
  reject(o.step.has_value(), "--step", "axlearn (the checkpoint is written as step 0)");
  reject(!o.dtype.empty(), "--dtype", "axlearn (weights take the model's parameter dtype)");

  dist::SingleDeviceScope one_device;
  ConfigPtr<SpmdTrainer::Config> cfg =
      build_trainer_config(TrainOptions{o.config, o.trainer_dir, std::nullopt, o.overrides});
  train::use_one_device(*cfg);
  if (std::optional<int64_t> latest = latest_step(o.trainer_dir)) {
    fail(o.trainer_dir, " already holds checkpoints (newest: step ", *latest,
         "); convert into an empty --trainer_dir");
  }
  NestedTensor params = infer::import_hf(o.hf_dir, *cfg->model.get());

  std::unique_ptr<SpmdTrainer> trainer = cfg->instantiate<SpmdTrainer>(nullptr);
  NestedTensor state = trainer->init_state();
  // llama_spec checked every parameter against the model's specs; this guards the invariant.
  const auto like = state.at("model").flatten_with_paths(), got = params.flatten_with_paths();
  AXLEARN_CHECK(like.size() == got.size());
  for (size_t i = 0; i < like.size(); ++i) {
    AXLEARN_CHECK(like[i].first == got[i].first &&
                      like[i].second.shape() == got[i].second.shape() &&
                      like[i].second.dtype() == got[i].second.dtype(),
                  like[i].first);
  }
  state["model"] = params;
  std::error_code ec;
  fs::create_directories(o.trainer_dir, ec);
  if (ec) fail("cannot create ", o.trainer_dir, ": ", ec.message());
  save_checkpoint(o.trainer_dir, 0, state, nlohmann::json{{"step", 0}}.dump());
  train::write_trainer_config(*cfg, o.trainer_dir);
  out << "imported " << o.hf_dir << " into " << checkpoint_step_dir(o.trainer_dir, 0)
      << " (model from Hugging Face, fresh learner state)\n"
      << "fine-tune with: axlearn train --config " << o.config << " --trainer_dir "
      << o.trainer_dir;
  for (const auto& s : o.overrides) out << " --set " << s;
  out << "\n";
  return 0;
}

}  // namespace

CLI::App* add_convert(CLI::App& app, ConvertOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "Convert checkpoints to and from Hugging Face LLaMA (LlamaForCausalLM) directories");
  cmd->footer(
      "Forms (see docs/interop.md):\n"
      "  --to=hf       --trainer_dir=DIR [--step=N] --out=HF_DIR [--dtype=bf16|f16|f32]\n"
      "                [--max_shard_size=5GB]: writes config.json and model.safetensors (or\n"
      "                model-0000i-of-0000N.safetensors + model.safetensors.index.json)\n"
      "  --to=axlearn  --hf_dir=HF_DIR --trainer_dir=DIR --config=NAME [--set PATH=VALUE ...]:\n"
      "                checks config.json against the experiment's model and writes a step-0\n"
      "                checkpoint that `axlearn train` (same --config/--set) fine-tunes from");
  cmd->add_option("--to", o.to, "Direction: 'hf' (export) or 'axlearn' (import)")
      ->required()
      ->check(CLI::IsMember({"hf", "axlearn"}));
  cmd->add_option("--trainer_dir", o.trainer_dir,
                  "hf: the `axlearn train` folder to export; axlearn: the new (empty) folder")
      ->required();
  cmd->add_option("--step", o.step, "hf: the checkpoint step (default: the newest committed)");
  cmd->add_option("--out", o.out, "hf: the Hugging Face directory to write");
  cmd->add_option("--dtype", o.dtype,
                  "hf: dtype of the written weights (default: the "
                  "parameters' own, lossless)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--max_shard_size", o.max_shard_size,
                  "hf: bytes per safetensors file before sharding (5GB = 5e9, 2GiB = 2^31)")
      ->capture_default_str();
  cmd->add_option("--hf_dir", o.hf_dir, "axlearn: the Hugging Face directory to read");
  cmd->add_option("--config", o.config, "axlearn: experiment whose model the weights fill");
  cmd->add_option("--set", o.overrides, "axlearn: config override PATH=VALUE, repeatable")
      ->take_all();
  return cmd;
}

uint64_t parse_byte_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 19) fail("--max_shard_size: '", text, "' is not a byte count such as 5GB");
  const uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  for (char& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  static const std::map<std::string, uint64_t> units{{"", 1},
                                                     {"B", 1},
                                                     {"KB", 1000},
                                                     {"MB", 1000'000},
                                                     {"GB", 1000'000'000},
                                                     {"KIB", 1ull << 10},
                                                     {"MIB", 1ull << 20},
                                                     {"GIB", 1ull << 30}};
  auto it = units.find(unit);
  if (it == units.end()) {
    fail("--max_shard_size: unknown unit in '", text, "' (B, KB, MB, GB, KiB, MiB, GiB)");
  }
  if (n == 0) fail("--max_shard_size must be positive");
  if (n > UINT64_MAX / it->second) fail("--max_shard_size: '", text, "' is too large");
  return n * it->second;
}

int run_convert(const ConvertOptions& o, std::ostream& out) {
  if (o.to == "hf") return convert_to_hf(o, out);
  if (o.to == "axlearn") return convert_to_axlearn(o, out);
  fail("--to must be 'hf' or 'axlearn', got '", o.to, "'");
}

}  // namespace axlearn::cli
