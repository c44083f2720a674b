// Autoregressive decoding on a Decoder's KV cache (AXLearn's decoding.py and logit_modifiers.py):
// greedy, sampling with temperature / top-k / top-p logit modifiers, and beam search with the T5
// length penalty; batched prompts of different lengths, EOS and stop sequences, and a callback
// per new token for streaming. See docs/generation.md.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "axlearn/core/nested.h"
#include "axlearn/layers/decoder.h"

namespace axlearn::infer {

// ---- logit modifiers: logits (..., V) -> (..., V) ----

// What a removed logit becomes (finite, like AXLearn's NEG_INF, so nothing turns into NaN).
inline constexpr double kRemovedLogit = -1e30;

// logits / temperature. Error for temperature < 1e-4 (AXLearn's min_temperature).
Tensor scale_by(const Tensor& logits, double temperature);
// Keeps every logit >= the k-th largest of its row (ties at the boundary all stay, AXLearn's
// break_ties="all"); the rest become kRemovedLogit. Error for k < 1; k >= V keeps all.
Tensor top_k_logits(const Tensor& logits, int64_t k);
// Keeps the most probable logits whose probability mass first reaches p: with the row's
// probabilities sorted descending, the cutoff is the first whose cumulative sum is >= p, and
// every logit at least as probable as the cutoff stays (ties at the boundary all stay). Error for
// p outside (0, 1]; p = 1 keeps all.
Tensor top_p_logits(const Tensor& logits, double p);

struct SamplingOptions {
  double temperature = 1.0;                     // > 0 (>= 1e-4)
  std::optional<int64_t> top_k = std::nullopt;  // None: no top-k
  std::optional<double> top_p = std::nullopt;   // None: no top-p
};

// scale_by(temperature), then top_k_logits, then top_p_logits (those set), on f32 logits.
Tensor modify_logits(const Tensor& logits, const SamplingOptions& options);
// One token per row, int32 (B,), drawn from softmax(modify_logits(logits (B, V))) with the key:
// argmax(modified logits + Gumbel noise), as jax.random.categorical draws.
Tensor sample_tokens(const Tensor& logits, const SamplingOptions& options, const Tensor& prng_key);

// ---- decoding loops ----

enum class StopReason { kMaxNewTokens, kEos, kStopSequence };

struct DecodeOptions {
  int64_t max_new_tokens = 32;  // >= 1
  // A row stops once it produces this token (kept as its last token). None: no EOS.
  std::optional<int32_t> eos_id;
  // A row stops once its generated tokens end with one of these (kept in the output).
  std::vector<std::vector<int32_t>> stop_sequences = {};
  // Called with (row, token) for every new token, as it is produced (greedy, sampling), or for
  // the tokens of each row's best hypothesis once beam search is done.
  std::function<void(int64_t row, int32_t token)> on_token = nullptr;
};

// The generated tokens of one prompt (the prompt itself left out).
struct DecodedSequence {
  std::vector<int32_t> tokens;
  StopReason stop_reason = StopReason::kMaxNewTokens;
};

// The prompts (each non-empty, ids in [0, vocab_size)) are padded on the right with the
// decoder's pad_token_id and prefilled together; each row then generates at its own position
// until it stops or has max_new_tokens tokens. `params` is the decoder's parameter tree.
std::vector<DecodedSequence> greedy_decode(const layers::Decoder& decoder,
                                           const NestedTensor& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const DecodeOptions& options);
// Step i draws with fold_in(prng_key, i): the same key gives the same tokens.
std::vector<DecodedSequence> sample_decode(const layers::Decoder& decoder,
                                           const NestedTensor& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const DecodeOptions& options,
                                           const SamplingOptions& sampling, const Tensor& prng_key);

struct BeamSearchOptions {
  int64_t num_beams = 4;        // >= 1
  double length_penalty = 0.0;  // alpha of brevity_penalty; 0: raw log-probabilities
};

// T5's (and AXLearn's bp_type="t5") brevity penalty ((5 + length) / 6)^alpha.
double brevity_penalty(int64_t length, double alpha);

struct BeamHypothesis {
  std::vector<int32_t> tokens;  // generated tokens, the EOS / stop sequence included
  double log_prob = 0;          // sum of the tokens' log-probabilities
  double score = 0;             // log_prob / brevity_penalty(tokens.size(), length_penalty)
  StopReason stop_reason = StopReason::kMaxNewTokens;
};

// Beam search as AXLearn's / T5's beam_search_decode: each row keeps num_beams live hypotheses
// (raw log-probabilities). At every step, each live hypothesis extended by a token that ends it
// (EOS, or the last token of a stop sequence it then ends with) is a finished candidate scored
// log_prob / brevity_penalty(length); the best num_beams finished are kept. The other extensions
// compete for the num_beams live places (ties: lower beam, then lower token first). After
// max_new_tokens, the live hypotheses join the finished ones with the same scoring. A row stops
// early once no live hypothesis can beat its worst kept finished one (length_penalty >= 0).
// Returns per prompt num_beams hypotheses, best score first (fewer when the vocabulary is tiny).
std::vector<std::vector<BeamHypothesis>> beam_search_decode(
    const layers::Decoder& decoder, const NestedTensor& params,
    const std::vector<std::vector<int32_t>>& prompts, const DecodeOptions& options,
    const BeamSearchOptions& beam);

}  // namespace axlearn::infer
