// `axlearn convert`: a trainer dir's checkpoint to a Hugging Face LLaMA directory
// (--to=hf) and back into a committed step-0 checkpoint that `axlearn train` fine-tunes from
// (--to=axlearn). The mapping itself lives in axlearn/infer/hf_llama.h; see docs/interop.md.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace axlearn::cli {

struct ConvertOptions {
  std::string to;               // "hf" or "axlearn"
  std::string trainer_dir;      // --to=hf: read from; --to=axlearn: written to
  std::optional<int64_t> step;  // --to=hf: the step to export (default: the newest)
  std::string out;              // --to=hf: the HF directory written
  std::string dtype;            // --to=hf: "bf16", "f16", "f32"; empty: the parameters' dtype
  std::string max_shard_size = "5GB";  // --to=hf: bytes per shard ("5GB", "500MB", 123456)
  std::string hf_dir;                  // --to=axlearn: the HF directory read
  std::string config;                  // --to=axlearn: the experiment name
  std::vector<std::string> overrides;  // --to=axlearn: --set PATH=VALUE, in order
};

// Registers the `convert` subcommand and its flags on `app`.
CLI::App* add_convert(CLI::App& app, ConvertOptions& options);

// "5GB" (10^9), "2GiB" (2^30), "500MB", "64KiB", "123456" -> bytes; Error on anything else.
uint64_t parse_byte_size(const std::string& text);

// Runs the conversion and prints what was written. Returns the exit status.
int run_convert(const ConvertOptions& options, std::ostream& out);

}  // namespace axlearn::cli
