// `axlearn generate`: text from a trained checkpoint. The run's trainer_config.json is rebuilt,
// the checkpoint restored, the prompt tokenized with the input's sentencepiece model, and the
// continuation decoded on the KV cache (greedy, sampling or beam search; infer/decoding.h) and
// streamed to stdout token by token. See docs/generation.md.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace CLI {
class App;
}

namespace axlearn::cli {

struct GenerateOptions {
  std::string trainer_dir;      // the run: trainer_config.json and checkpoints/
  std::optional<int64_t> step;  // the checkpoint step; default: the newest committed
  std::string checkpoint;       // or a step folder <dir>/checkpoints/step_%08d
  std::string prompt;
  int64_t max_new_tokens = 32;
  std::optional<double> temperature;  // any sampling flag switches greedy to sampling
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
  std::optional<int64_t> beam;  // beam search with this many beams
  std::optional<double> length_penalty;
};

// Registers the `generate` subcommand and its flags on `app`.
CLI::App* add_generate(CLI::App& app, GenerateOptions& options);

// Throws Error naming the flag for a bad combination or value (top_p outside (0, 1], beam with a
// sampling flag, ...).
void check_generate_options(const GenerateOptions& options);

// Prints the prompt and then each new piece of text as it is decoded to `out`; the checkpoint,
// timing and (beam search) the hypotheses' scores to `log`. Returns the exit status.
int run_generate(const GenerateOptions& options, std::ostream& out, std::ostream& log);

}  // namespace axlearn::cli
