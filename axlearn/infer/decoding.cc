#include "axlearn/infer/decoding.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"

namespace axlearn::infer {

// ---- logit modifiers ----

Tensor scale_by(const Tensor& logits, double temperature) {
  if (!(temperature >= 1e-4)) {
    fail("scale_by: temperature must be at least 1e-4, got ", temperature);
  }
  return logits / temperature;
}

Tensor top_k_logits(const Tensor& logits, int64_t k) {
  if (k < 1) fail("top_k_logits: k must be at least 1, got ", k);
  const int64_t v = logits.shape(-1);
  if (k >= v) return logits;
  Tensor cutoff = slice_axis(top_k(logits, int(k)).values, -1, k - 1, k);  // (..., 1)
  return where(greater_equal(logits, cutoff), logits, full_like(logits, kRemovedLogit));
}

Tensor top_p_logits(const Tensor& logits, double p) {
  if (!(p > 0 && p <= 1)) fail("top_p_logits: p must be in (0, 1], got ", p);
  if (p == 1) return logits;
  const int64_t v = logits.shape(-1);
  Tensor probs = softmax(astype(logits, float32), -1);
  Tensor sorted = negative(sort(negative(probs), -1));  // descending
  Tensor cum = cumsum(sorted, -1);
  // Index of the first cumulative sum >= p (clamped: rounding may leave the total below p).
  Tensor first = sum(astype(less(cum, scalar(p, float32)), int32), {-1}, true);
  first = minimum(first, scalar(double(v - 1), int32));
  Tensor cutoff = take_along_axis(sorted, first, -1);  // (..., 1)
  return where(greater_equal(probs, cutoff), logits, full_like(logits, kRemovedLogit));
}

Tensor modify_logits(const Tensor& logits, const SamplingOptions& o) {
  Tensor l = scale_by(astype(logits, float32), o.temperature);
  if (o.top_k) l = top_k_logits(l, *o.top_k);
  if (o.top_p) l = top_p_logits(l, *o.top_p);
  return l;
}

Tensor sample_tokens(const Tensor& logits, const SamplingOptions& o, const Tensor& prng_key) {
  if (logits.ndim() != 2) {
    fail("sample_tokens: logits must be (B, V), got ", shape_str(logits.shape()));
  }
  Tensor l = modify_logits(logits, o);
  // Gumbel(0, 1) noise as jax.random.gumbel: -log(-log(u)), u uniform in [tiny, 1).
  Tensor u =
      random::uniform(prng_key, l.shape(), float32, double(std::numeric_limits<float>::min()), 1.0);
  Tensor g = negative(log(negative(log(u))));
  return astype(argmax(l + g, -1), int32);
}

double brevity_penalty(int64_t length, double alpha) {
  return std::pow((5.0 + double(length)) / 6.0, alpha);
}

// ---- decoding loops ----

namespace {

// Runs the decoder's decoding methods functionally on its parameters (eval mode, no key).
class Runner {
 public:
  Runner(const layers::Decoder& decoder, const NestedTensor& params)
      : decoder_(decoder), params_(params) {}
  const layers::Decoder& decoder() const { return decoder_; }

  layers::DecoderStepOutput prefill(const NestedTensor& states, const Tensor& ids,
                                    const Tensor& lengths) const {
    return run([&] { return decoder_.prefill(states, ids, lengths); });
  }
  layers::DecoderStepOutput extend_step(const NestedTensor& states, const Tensor& ids) const {
    return run([&] { return decoder_.extend_step(states, ids); });
  }

 private:
  template <typename Fn>
  layers::DecoderStepOutput run(Fn&& fn) const {
    auto& module = const_cast<layers::Decoder&>(decoder_);  // modules are stateless
    return functional_call(module, params_, std::nullopt, /*is_training=*/false, fn).outputs;
  }
  const layers::Decoder& decoder_;
  const NestedTensor& params_;
};

// Right-padded prompts (B, T) int32 and their lengths.
struct PromptBatch {
  Tensor ids;
  Tensor lengths;
  int64_t max_len = 0;  // T
};

PromptBatch pad_prompts(const layers::Decoder& decoder,
                        const std::vector<std::vector<int32_t>>& prompts) {
  const auto& cfg = decoder.config();
  const int64_t vocab = cfg.vocab_size;
  if (prompts.empty()) fail("decode: no prompts");
  PromptBatch b;
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) fail("decode: prompt ", r, " is empty");
    for (int32_t id : prompts[r]) {
      if (id < 0 || id >= vocab) {
        fail("decode: prompt ", r, " has token ", id, " outside the vocabulary [0, ", vocab, ")");
      }
    }
    b.max_len = std::max<int64_t>(b.max_len, int64_t(prompts[r].size()));
  }
  const auto rows = int64_t(prompts.size());
  std::vector<int32_t> ids(size_t(rows * b.max_len), int32_t(cfg.pad_token_id.get()));
  std::vector<int32_t> lengths;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& p = prompts[size_t(r)];
    std::copy(p.begin(), p.end(), ids.begin() + r * b.max_len);
    lengths.push_back(int32_t(p.size()));
  }
  b.ids = array(ids, {rows, b.max_len});
  b.lengths = array(lengths, {rows});
  return b;
}

void check_options(const DecodeOptions& o) {
  if (o.max_new_tokens < 1)
    fail("decode: max_new_tokens must be at least 1, got ", o.max_new_tokens);
  for (const auto& s : o.stop_sequences) {
    if (s.empty()) fail("decode: a stop sequence is empty");
  }
}

// Whether `tokens` followed by `next` ends the sequence, and why.
std::optional<StopReason> stops(const std::vector<int32_t>& tokens, int32_t next,
                                const DecodeOptions& o) {
  if (o.eos_id && next == *o.eos_id) return StopReason::kEos;
  for (const auto& s : o.stop_sequences) {
    if (s.back() != next || s.size() > tokens.size() + 1) continue;
    if (std::equal(s.begin(), s.end() - 1, tokens.end() - std::ptrdiff_t(s.size() - 1))) {
      return StopReason::kStopSequence;
    }
  }
  return std::nullopt;
}

// Each row's next-token logits after prefill: position lengths - 1. (B, V).
Tensor last_logits(const Tensor& logits, const Tensor& lengths) {
  const int64_t b = logits.shape(0), v = logits.shape(2);
  Tensor idx = reshape(lengths - scalar(1, int32), {b, 1, 1});
  return reshape(take_along_axis(logits, idx, 1), {b, v});
}

void eval_step(const layers::DecoderStepOutput& out, const Tensor& logits) {
  std::vector<Tensor> all = out.states.leaves();
  all.push_back(logits);
  eval(all);
}

// The greedy / sampling loop; choose(logits (B, V), step) -> one token per row.
std::vector<DecodedSequence> decode_loop(
    const Runner& runner, const std::vector<std::vector<int32_t>>& prompts, const DecodeOptions& o,
    const std::function<Tensor(const Tensor&, int64_t)>& choose) {
  check_options(o);
  const PromptBatch batch = pad_prompts(runner.decoder(), prompts);
  const auto rows = int64_t(prompts.size());
  NestedTensor states = runner.decoder().init_states(rows, batch.max_len + o.max_new_tokens);
  layers::DecoderStepOutput out = runner.prefill(states, batch.ids, batch.lengths);
  Tensor logits = last_logits(out.logits, batch.lengths);
  eval_step(out, logits);

  std::vector<DecodedSequence> result(static_cast<size_t>(rows));
  std::vector<bool> done(static_cast<size_t>(rows), false);
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const std::vector<int32_t> tokens = choose(logits, step).to_vector<int32_t>();
    bool all_done = true;
    for (size_t r = 0; r < size_t(rows); ++r) {
      if (done[r]) continue;
      const std::optional<StopReason> stop = stops(result[r].tokens, tokens[r], o);
      result[r].tokens.push_back(tokens[r]);
      if (o.on_token) o.on_token(int64_t(r), tokens[r]);
      if (stop) {
        result[r].stop_reason = *stop;
        done[r] = true;
      }
      all_done = all_done && done[r];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    // Finished rows keep stepping (on their last token); their outputs are ignored.
    out = runner.extend_step(out.states, array(tokens, {rows, 1}));
    logits = reshape(out.logits, {rows, out.logits.shape(2)});
    eval_step(out, logits);
  }
  return result;
}

}  // namespace

std::vector<DecodedSequence> greedy_decode(const layers::Decoder& decoder,
                                           const NestedTensor& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const DecodeOptions& options) {
  return decode_loop(Runner(decoder, params), prompts, options, [](const Tensor& logits, int64_t) {
    return astype(argmax(logits, -1), int32);
  });
}

std::vector<DecodedSequence> sample_decode(const layers::Decoder& decoder,
                                           const NestedTensor& params,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const DecodeOptions& options,
                                           const SamplingOptions& sampling,
                                           const Tensor& prng_key) {
  // Fails on bad sampling options before any work is done.
  modify_logits(zeros({1, 2}), sampling);
  return decode_loop(
      Runner(decoder, params), prompts, options, [&](const Tensor& logits, int64_t step) {
        return sample_tokens(logits, sampling, random::fold_in(prng_key, uint32_t(step)));
      });
}

// ---- beam search ----

namespace {

struct Candidate {
  double log_prob;
  int64_t beam;
  int32_t token;
};

// Higher log-probability first; ties: lower beam, then lower token.
bool better(const Candidate& a, const Candidate& b) {
  if (a.log_prob != b.log_prob) return a.log_prob > b.log_prob;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

struct Live {
  std::vector<int32_t> tokens;
  double log_prob = -std::numeric_limits<double>::infinity();  // -inf: an empty place
};

struct RowState {
  std::vector<Live> live;
  std::vector<BeamHypothesis> finished;  // best first, at most num_beams
  bool done = false;
};

void keep_best(std::vector<BeamHypothesis>& hyps, size_t n) {
  std::stable_sort(hyps.begin(), hyps.end(), [](const BeamHypothesis& a, const BeamHypothesis& b) {
    return a.score > b.score;
  });
  if (hyps.size() > n) hyps.resize(n);
}

// One row's beam update from the log-probabilities of its live beams (nb, V) flattened.
// Returns, for each new live place, the beam it extends (its token is in row.live).
std::vector<int64_t> advance_row(RowState& row, const float* logp, int64_t vocab, int64_t step,
                                 const DecodeOptions& o, const BeamSearchOptions& bs) {
  const auto nb = size_t(bs.num_beams);
  const int64_t length = step + 1;
  const double bp = brevity_penalty(length, bs.length_penalty);
  std::vector<Candidate> live;
  for (size_t j = 0; j < nb; ++j) {
    const Live& beam = row.live[j];
    if (std::isinf(beam.log_prob)) continue;
    for (int64_t v = 0; v < vocab; ++v) {
      const double lp = beam.log_prob + double(logp[j * size_t(vocab) + size_t(v)]);
      if (auto reason = stops(beam.tokens, int32_t(v), o)) {
        BeamHypothesis h{beam.tokens, lp, lp / bp, *reason};
        h.tokens.push_back(int32_t(v));
        row.finished.push_back(std::move(h));
      } else {
        live.push_back({lp, int64_t(j), int32_t(v)});
      }
    }
  }
  keep_best(row.finished, nb);
  const size_t n = std::min(nb, live.size());
  std::partial_sort(live.begin(), live.begin() + std::ptrdiff_t(n), live.end(), better);
  std::vector<Live> next(nb);
  std::vector<int64_t> source(nb, 0);
  for (size_t i = 0; i < n; ++i) {
    next[i].tokens = row.live[size_t(live[i].beam)].tokens;
    next[i].tokens.push_back(live[i].token);
    next[i].log_prob = live[i].log_prob;
    source[i] = live[i].beam;
  }
  row.live = std::move(next);
  // No live hypothesis can still beat the worst kept finished one: scores only fall, and with
  // alpha >= 0 the penalty is largest at the longest length.
  const double best_live = n > 0 ? row.live[0].log_prob : -std::numeric_limits<double>::infinity();
  const double bound = best_live / brevity_penalty(o.max_new_tokens, bs.length_penalty);
  if (n == 0 ||
      (bs.length_penalty >= 0 && row.finished.size() == nb && row.finished.back().score > bound)) {
    row.done = true;
  }
  return source;
}

}  // namespace

std::vector<std::vector<BeamHypothesis>> beam_search_decode(
    const layers::Decoder& decoder, const NestedTensor& params,
    const std::vector<std::vector<int32_t>>& prompts, const DecodeOptions& o,
    const BeamSearchOptions& bs) {
  check_options(o);
  if (bs.num_beams < 1)
    fail("beam_search_decode: num_beams must be at least 1, got ", bs.num_beams);
  const Runner runner(decoder, params);
  const PromptBatch batch = pad_prompts(decoder, prompts);
  const auto rows = int64_t(prompts.size());
  const int64_t nb = bs.num_beams;
  NestedTensor states = decoder.init_states(rows, batch.max_len + o.max_new_tokens);
  layers::DecoderStepOutput out = runner.prefill(states, batch.ids, batch.lengths);
  Tensor logits = last_logits(out.logits, batch.lengths);
  // Row r's beams are rows r * nb .. r * nb + nb - 1; they start as copies of the prompt's row.
  auto take_rows = [](const NestedTensor& tree, const std::vector<int32_t>& rows_to_take) {
    const Tensor idx = array(rows_to_take, {int64_t(rows_to_take.size())});
    return tree.map([&](const Tensor& t) { return take(t, idx, 0); });
  };
  std::vector<int32_t> expand;
  for (int64_t r = 0; r < rows; ++r) expand.insert(expand.end(), size_t(nb), int32_t(r));
  out.states = take_rows(out.states, expand);
  logits = take(logits, array(expand, {rows * nb}), 0);

  std::vector<RowState> row_states(static_cast<size_t>(rows));
  for (RowState& rs : row_states) {
    rs.live.resize(size_t(nb));
    rs.live[0].log_prob = 0;  // one live beam to start, so no hypothesis appears twice
  }
  const int64_t vocab = logits.shape(1);
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const std::vector<float> logp = log_softmax(astype(logits, float32), -1).to_vector<float>();
    std::vector<int32_t> source(size_t(rows * nb)), tokens(size_t(rows * nb), 0);
    bool all_done = true;
    for (int64_t r = 0; r < rows; ++r) {
      RowState& rs = row_states[size_t(r)];
      std::vector<int64_t> from(static_cast<size_t>(nb));
      for (int64_t j = 0; j < nb; ++j) from[size_t(j)] = j;
      if (!rs.done) {
        from = advance_row(rs, logp.data() + r * nb * vocab, vocab, step, o, bs);
      }
      for (int64_t j = 0; j < nb; ++j) {
        const size_t i = size_t(r * nb + j);
        source[i] = int32_t(r * nb + from[size_t(j)]);
        const auto& t = rs.live[size_t(j)].tokens;
        tokens[i] = t.empty() ? 0 : t.back();
      }
      all_done = all_done && rs.done;
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    out = runner.extend_step(take_rows(out.states, source), array(tokens, {rows * nb, 1}));
    logits = reshape(out.logits, {rows * nb, vocab});
    eval_step(out, logits);
  }

  std::vector<std::vector<BeamHypothesis>> result;
  for (int64_t r = 0; r < rows; ++r) {
    RowState& rs = row_states[size_t(r)];
    if (!rs.done) {
      for (const Live& l : rs.live) {
        if (std::isinf(l.log_prob)) continue;
        const double bp = brevity_penalty(int64_t(l.tokens.size()), bs.length_penalty);
        rs.finished.push_back({l.tokens, l.log_prob, l.log_prob / bp, StopReason::kMaxNewTokens});
      }
      keep_best(rs.finished, size_t(nb));
    }
    if (o.on_token && !rs.finished.empty()) {
      for (int32_t t : rs.finished[0].tokens) o.on_token(r, t);
    }
    result.push_back(std::move(rs.finished));
  }
  return result;
}

}  // namespace axlearn::infer
