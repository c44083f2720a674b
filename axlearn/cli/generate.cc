#include "axlearn/cli/generate.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "axlearn/core/error.h"
#include "axlearn/core/random.h"
#include "axlearn/data/tokenizer.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/infer/decoding.h"
#include "axlearn/train/checkpointer.h"
#include "axlearn/train/trainer.h"

namespace axlearn::cli {
namespace fs = std::filesystem;

CLI::App* add_generate(CLI::App& app, GenerateOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Continue a prompt with a trained checkpoint, streaming the text as it is decoded. Greedy "
      "by default; --temperature/--top_k/--top_p/--seed sample; --beam runs beam search.");
  cmd->add_option("--trainer_dir", o.trainer_dir,
                  "Trainer folder of an `axlearn train` run (its trainer_config.json)")
      ->required();
  cmd->add_option("--step", o.step, "Checkpoint step to load (default: the newest committed)");
  cmd->add_option("--checkpoint", o.checkpoint,
                  "A step folder to load instead, e.g. DIR/checkpoints/step_00000100");
  cmd->add_option("--prompt", o.prompt, "The text to continue")->required();
  cmd->add_option("--max_new_tokens", o.max_new_tokens, "Tokens to generate at most")
      ->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "Sampling temperature (> 0; default 1)");
  cmd->add_option("--top_k", o.top_k, "Sample among the k most likely tokens (ties kept)");
  cmd->add_option("--top_p", o.top_p,
                  "Sample among the most likely tokens holding probability mass p, in (0, 1]");
  cmd->add_option("--seed", o.seed, "PRNG seed of sampling (default 0)");
  cmd->add_option("--beam", o.beam, "Beam search with this many beams (no sampling)");
  cmd->add_option("--length_penalty", o.length_penalty,
                  "Beam search length penalty alpha: scores are log_prob / ((5 + len) / 6)^alpha "
                  "(default 0)");
  return cmd;
}

void check_generate_options(const GenerateOptions& o) {
  if (o.trainer_dir.empty()) fail("--trainer_dir is required");
  if (o.prompt.empty()) fail("--prompt is empty");
  if (o.step && !o.checkpoint.empty())
    fail("--step and --checkpoint name the step twice; give one");
  if (o.step && *o.step < 0) fail("--step must be non-negative, got ", *o.step);
  if (o.max_new_tokens < 1) fail("--max_new_tokens must be at least 1, got ", o.max_new_tokens);
  if (o.temperature && !(*o.temperature >= 1e-4)) {
    fail("--temperature must be at least 1e-4, got ", *o.temperature,
         " (leave the sampling flags out for greedy decoding)");
  }
  if (o.top_k && *o.top_k < 1) fail("--top_k must be at least 1, got ", *o.top_k);
  if (o.top_p && !(*o.top_p > 0 && *o.top_p <= 1)) {
    fail("--top_p must be in (0, 1], got ", *o.top_p);
  }
  if (o.beam) {
    if (*o.beam < 1) fail("--beam must be at least 1, got ", *o.beam);
    const char* sampling_flag = o.temperature ? "--temperature"
                                : o.top_k     ? "--top_k"
                                : o.top_p     ? "--top_p"
                                : o.seed      ? "--seed"
                                              : nullptr;
    if (sampling_flag)
      fail("--beam cannot be combined with ", sampling_flag, " (beam search does not sample)");
  } else if (o.length_penalty) {
    fail("--length_penalty applies to beam search only; give --beam N");
  }
}

namespace {

using train::SpmdTrainer;


// The trainer dir and step of a step folder "<dir>/checkpoints/step_%08d".
std::pair<std::string, int64_t> parse_step_dir(const std::string& step_dir) {
  fs::path p = fs::path(step_dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string name = p.filename().string();
  const bool digits =
      name.size() > 5 && name.find_first_not_of("0123456789", 5) == std::string::npos;
  if (name.rfind("step_", 0) != 0 || !digits || p.parent_path().filename() != "checkpoints") {
    fail("--checkpoint must be a step folder like DIR/checkpoints/step_00000100, got '", step_dir,
         "'");
  }
  std::string dir = p.parent_path().parent_path().string();
  return {dir.empty() ? "." : dir, std::stoll(name.substr(5))};
}

// Prints the decoded text as it grows: each call decodes every id so far and prints what is new.
// Sentencepiece joins pieces with context (the space of "▁the"), so the whole text is decoded
// each time; an incomplete UTF-8 character (decoded as U+FFFD) waits for its next byte.
class TextStream {
 public:
  TextStream(const data::SentencePieceTokenizer& tok, std::vector<int32_t> prompt,
             std::ostream& out)
      : tok_(tok), ids_(std::move(prompt)), out_(out) {
    printed_ = decode();
    out_ << printed_ << std::flush;
  }
  void push(int32_t id) {
    if (id >= 0 && id < tok_.vocab_size()) ids_.push_back(id);  // padded vocab ids print nothing
    const std::string text = decode();
    static const std::string kReplacement = "\xEF\xBF\xBD";
    const bool partial = text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0;
    if (!partial && text.size() > printed_.size() &&
        text.compare(0, printed_.size(), printed_) == 0) {
      out_ << text.substr(printed_.size()) << std::flush;
      printed_ = text;
    }
  }
  void finish() {
    const std::string text = decode();
    if (text.size() > printed_.size() && text.compare(0, printed_.size(), printed_) == 0) {
      out_ << text.substr(printed_.size());
    }
    out_ << "\n" << std::flush;
  }

 private:
  std::string decode() const { return tok_.decode(ids_); }
  const data::SentencePieceTokenizer& tok_;
  std::vector<int32_t> ids_;
  std::string printed_;
  std::ostream& out_;
};

const char* reason_name(infer::StopReason r) {
  switch (r) {
    case infer::StopReason::kEos:
      return "end of text";
    case infer::StopReason::kStopSequence:
      return "stop sequence";
    case infer::StopReason::kMaxNewTokens:
      break;
  }
  return "max_new_tokens";
}

}  // namespace

int run_generate(const GenerateOptions& o, std::ostream& out, std::ostream& log) {
  check_generate_options(o);
  // One device, whatever mesh the run trained on.
  dist::SingleDeviceScope one_device;
  ConfigPtr<SpmdTrainer::Config> cfg = train::read_trainer_config(o.trainer_dir);
  train::use_one_device(*cfg);
  std::string ckpt_dir = o.trainer_dir;
  std::optional<int64_t> step = o.step;
  if (!o.checkpoint.empty()) std::tie(ckpt_dir, step) = parse_step_dir(o.checkpoint);
  if (!step) {
    step = latest_step(ckpt_dir);
    if (!step) fail("no committed checkpoint in ", ckpt_dir, "/checkpoints (train first)");
  }

  std::unique_ptr<SpmdTrainer> trainer = cfg->instantiate<SpmdTrainer>(nullptr);
  // init_state() is lazy: the restore reads only its shapes and dtypes.
  RestoredCheckpoint restored = restore_checkpoint(ckpt_dir, *step, trainer->init_state());
  const NestedTensor& params = restored.tree.at("model").at("decoder");
  const layers::Decoder& decoder = trainer->model().decoder();

  const data::SentencePieceTokenizer tokenizer(cfg->input.get()->vocab.get());
  const int64_t model_vocab = decoder.config().vocab_size;
  if (tokenizer.vocab_size() > model_vocab) {
    fail(tokenizer.path(), " has ", tokenizer.vocab_size(), " pieces, more than the model's ",
         model_vocab);
  }
  const std::vector<int32_t> text_ids = tokenizer.encode(o.prompt);
  // The packed training stream puts an EOS before every document, so a prompt starts after one.
  std::vector<int32_t> prompt;
  if (tokenizer.eos_id() >= 0) prompt.push_back(tokenizer.eos_id());
  prompt.insert(prompt.end(), text_ids.begin(), text_ids.end());

  log << "generate: step " << *step << " of " << ckpt_dir << ", prompt of " << text_ids.size()
      << " tokens\n";
  const int64_t trained_len = cfg->input.get()->max_len;
  if (int64_t(prompt.size()) + o.max_new_tokens > trained_len) {
    log << "generate: note: up to " << int64_t(prompt.size()) + o.max_new_tokens
        << " positions, longer than the " << trained_len << " the model was trained on\n";
  }
  log << std::flush;
  TextStream stream(tokenizer, text_ids, out);
  infer::DecodeOptions dopts;
  dopts.max_new_tokens = o.max_new_tokens;
  if (tokenizer.eos_id() >= 0) dopts.eos_id = tokenizer.eos_id();
  dopts.on_token = [&](int64_t, int32_t token) { stream.push(token); };

  const auto start = std::chrono::steady_clock::now();
  size_t generated = 0;
  std::string stopped;
  if (o.beam) {
    infer::BeamSearchOptions bs{*o.beam, o.length_penalty.value_or(0.0)};
    auto hyps = infer::beam_search_decode(decoder, params, {prompt}, dopts, bs)[0];
    stream.finish();
    for (size_t i = 0; i < hyps.size(); ++i) {
      log << "beam " << i << ": score " << std::fixed << std::setprecision(4) << hyps[i].score
          << ", log_prob " << hyps[i].log_prob << ", " << hyps[i].tokens.size() << " tokens ("
          << reason_name(hyps[i].stop_reason) << ")\n";
    }
    generated = hyps.empty() ? 0 : hyps[0].tokens.size();
    stopped = hyps.empty() ? "no hypothesis" : reason_name(hyps[0].stop_reason);
  } else {
    std::vector<infer::DecodedSequence> seqs;
    if (o.temperature || o.top_k || o.top_p || o.seed) {
      infer::SamplingOptions so{o.temperature.value_or(1.0), o.top_k, o.top_p};
      seqs = infer::sample_decode(decoder, params, {prompt}, dopts, so,
                                  random::key(o.seed.value_or(0)));
    } else {
      seqs = infer::greedy_decode(decoder, params, {prompt}, dopts);
    }
    stream.finish();
    generated = seqs[0].tokens.size();
    stopped = reason_name(seqs[0].stop_reason);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << "generate: " << generated << " tokens in " << std::fixed << std::setprecision(2) << secs
      << " s (" << std::setprecision(1) << double(generated) / std::max(secs, 1e-9)
      << " tokens/s), stopped by " << stopped << "\n";
  return 0;
}

}  // namespace axlearn::cli
