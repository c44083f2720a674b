// The language-model input: text files (one document per line) tokenized with sentencepiece,
// packed into one stream with EOS after each document, cut into windows of max_len + 1 tokens,
// shuffled per epoch (training) or read in order (eval), batched, split across processes and
// prefetched. The iterator's position is a JSON state that a checkpoint saves and restores.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/core/nested.h"
#include "axlearn/data/tokenizer.h"

namespace axlearn::data {

class InputIterator;
namespace detail {
struct TokenStream;
}  // namespace detail

// Batches (per process, B = global_batch_size / process_count rows, T = max_len):
//   "input_ids"          (B, T) int32: window[0:T]
//   "target_labels"      (B, T) int32: window[1:T+1]; -1 where there is nothing to predict
//   "input_segment_ids"  (B, T) int32, with_segment_ids only: documents in the row numbered 1, 2..
//   "input_positions"    (B, T) int32, with_segment_ids only: 0 at the row's and each document's
//                        first token
// Eval padding rows and positions past the end of the stream have input_ids = pad_id,
// target_labels = -1, segment id 0, position 0. docs/data.md gives the packing rule.
class Input : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::vector<std::string>> sources{
        this, "sources", REQUIRED,
        "Text files or glob patterns ('{data_dir}' expanded), read in this order; one document "
        "per line."};
    Field<std::string> vocab{this, "vocab", REQUIRED,
                             "Sentencepiece model file ('{data_dir}' expanded)."};
    Field<int64_t> max_len{this, "max_len", REQUIRED, "Tokens per row (T)."};
    Field<int64_t> global_batch_size{this, "global_batch_size", REQUIRED,
                                     "Rows per batch over all processes."};
    Field<bool> is_training{this, "is_training", true,
                            "True: windows shuffled per epoch, repeating forever. False: one "
                            "pass in file order, the last batch padded."};
    Field<int64_t> seed{this, "seed", 0, "Seed of the per-epoch window permutation."};
    Field<bool> with_segment_ids{this, "with_segment_ids", false,
                                 "Also emit input_segment_ids and input_positions, and mask the "
                                 "target of each EOS (the next document is not visible)."};
    Field<int64_t> prefetch{this, "prefetch", 2,
                            "Batches prepared ahead by a background thread; 0 = synchronous."};
    Field<int64_t> process_index{this, "process_index", 0, "This process's index."};
    Field<int64_t> process_count{this, "process_count", 1,
                                 "Processes sharing each global batch (rows split evenly)."};
    Field<std::optional<int64_t>> max_eval_batches{
        this, "max_eval_batches", std::nullopt,
        "When not training: stop after at most this many batches (None: the whole pass)."};
  };
  AXLEARN_CONFIGURABLE(Input, "axlearn.data.text_input.Input")

  // Checks the fields, resolves the sources and loads the vocab; throws Error naming the field,
  // the pattern that matches nothing or the file that cannot be loaded. Tokenizes nothing yet.
  explicit Input(const Config& cfg);
  ~Input() override;

  // A new iterator at the start. The first call tokenizes the sources (shared by later iterators
  // of this Input); throws Error naming a file that cannot be read, or when the sources hold too
  // few tokens for one window.
  std::unique_ptr<InputIterator> make_iterator() const;

  const SentencePieceTokenizer& tokenizer() const { return tokenizer_; }
  // The files the sources matched, in reading order.
  const std::vector<std::string>& files() const { return files_; }
  // Rows of each batch this process receives: global_batch_size / process_count.
  int64_t per_process_batch_size() const;

 private:
  std::shared_ptr<const detail::TokenStream> token_stream() const;

  SentencePieceTokenizer tokenizer_;
  std::vector<std::string> files_;
  mutable std::mutex stream_mu_;
  mutable std::shared_ptr<const detail::TokenStream> stream_;
};

// Yields batches of one Input. Used from one thread; its prefetch thread is internal and is
// joined by the destructor. Batch k is a pure function of (config, corpus, k), so the state is k.
class InputIterator {
 public:
  ~InputIterator();
  InputIterator(const InputIterator&) = delete;
  InputIterator& operator=(const InputIterator&) = delete;

  // The next batch; nullopt after the last eval batch (never when training). An error raised
  // while preparing a batch (also on the prefetch thread) is thrown here.
  std::optional<NestedTensor> next();

  // JSON: the number of batches handed out by next() plus a fingerprint of the config and
  // corpus. Batches prefetched but not yet handed out do not count.
  std::string state() const;
  // Moves to the position `state_json` records, so that next() returns exactly the batches the
  // saved iterator would have. Throws Error naming the field when the JSON is malformed or was
  // saved by an input with another config or corpus; the position is then unchanged.
  void restore(const std::string& state_json);

  // Batches handed out so far (since the start, restores included).
  int64_t batches_read() const;
  // Batches in the eval pass (after max_eval_batches); nullopt when training.
  std::optional<int64_t> num_batches() const;
  // Windows per epoch (training: whole windows only; eval: the last one may be partial).
  int64_t num_windows() const;
  // Tokens in the packed stream, EOS included.
  int64_t num_tokens() const;
  int64_t vocab_size() const;
  int32_t pad_id() const;
  int32_t eos_id() const;

 private:
  friend class Input;
  friend struct InputIteratorTestPeer;  // tests: make preparing batch k throw
  struct Impl;
  explicit InputIterator(std::unique_ptr<Impl> impl);
  void inject_failure_for_testing(int64_t batch);
  std::unique_ptr<Impl> impl_;
};

}  // namespace axlearn::data
