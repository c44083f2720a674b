// The decoding loops and logit modifiers against independent references: greedy decoding and
// beam search on a tiny model against naive implementations that recompute the full forward pass
// for every hypothesis at every step (beam search with exhaustive bookkeeping, and against brute
// force over every sequence when the beam is as wide as the vocabulary); top-k / top-p on
// hand-made logits with ties at the boundary; sampling frequencies against softmax; EOS, stop
// sequences and the streaming callback.
#include "axlearn/infer/decoding.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "tiny_decoder.h"

namespace axlearn::infer {
namespace {

using layers::Decoder;
using layers::full_forward_last_logits;
using layers::TinyAttention;
using layers::TinySpec;

struct Tiny {
  std::unique_ptr<Decoder> decoder;
  NestedTensor params;
};

Tiny tiny(int64_t vocab = 16, uint64_t seed = 3,
          TinyAttention attention = TinyAttention::kGqaFused) {
  Tiny t;
  t.decoder = layers::tiny_decoder_config({.attention = attention, .vocab_size = vocab})
                  ->instantiate<Decoder>(nullptr);
  t.params = t.decoder->initialize_parameters_recursively(random::key(seed));
  return t;
}

const std::vector<std::vector<int32_t>> kPrompts = {{3, 9, 4, 1, 2}, {11, 5}, {7, 7, 14}};

// log_softmax in f64 of the full forward pass's next-token logits.
std::vector<double> ref_log_probs(Tiny& m, const std::vector<int32_t>& ids) {
  std::vector<float> l = full_forward_last_logits(*m.decoder, m.params, ids);
  double mx = -INFINITY, z = 0;
  for (float x : l) mx = std::max(mx, double(x));
  for (float x : l) z += std::exp(double(x) - mx);
  std::vector<double> out;
  for (float x : l) out.push_back(double(x) - mx - std::log(z));
  return out;
}

// ---- greedy ----

std::vector<int32_t> ref_greedy(Tiny& m, std::vector<int32_t> ids, int64_t max_new,
                                std::optional<int32_t> eos) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_new; ++i) {
    std::vector<float> l = full_forward_last_logits(*m.decoder, m.params, ids);
    const auto next = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(next);
    ids.push_back(next);
    if (eos && next == *eos) break;
  }
  return out;
}

TEST(GreedyDecodeTest, MatchesFullRecomputeForBatchedPromptsOfDifferentLengths) {
  Tiny m = tiny(32);
  DecodeOptions o;
  o.max_new_tokens = 8;
  auto got = greedy_decode(*m.decoder, m.params, kPrompts, o);
  ASSERT_EQ(got.size(), kPrompts.size());
  for (size_t r = 0; r < kPrompts.size(); ++r) {
    EXPECT_EQ(got[r].tokens, ref_greedy(m, kPrompts[r], 8, std::nullopt)) << "row " << r;
    EXPECT_EQ(got[r].stop_reason, StopReason::kMaxNewTokens);
  }
  // An EOS that row 0 produces at its fourth step stops that row there (and only that row
  // wherever it does not produce it).
  const int32_t eos = got[0].tokens[3];
  o.eos_id = eos;
  auto stopped = greedy_decode(*m.decoder, m.params, kPrompts, o);
  for (size_t r = 0; r < kPrompts.size(); ++r) {
    const std::vector<int32_t> want = ref_greedy(m, kPrompts[r], 8, eos);
    EXPECT_EQ(stopped[r].tokens, want) << "row " << r;
    EXPECT_EQ(stopped[r].stop_reason,
              want.back() == eos ? StopReason::kEos : StopReason::kMaxNewTokens);
  }
  EXPECT_LE(stopped[0].tokens.size(), 4u);
}

TEST(GreedyDecodeTest, SlidingWindowAttentionMatchesFullRecompute) {
  Tiny m = tiny(32, 4, TinyAttention::kSlidingWindow);
  DecodeOptions o;
  o.max_new_tokens = 9;
  auto got = greedy_decode(*m.decoder, m.params, kPrompts, o);
  for (size_t r = 0; r < kPrompts.size(); ++r) {
    EXPECT_EQ(got[r].tokens, ref_greedy(m, kPrompts[r], 9, std::nullopt)) << "row " << r;
  }
}

TEST(GreedyDecodeTest, StopSequencesEndARowAndTheCallbackStreamsEveryToken) {
  Tiny m = tiny(32);
  DecodeOptions o;
  o.max_new_tokens = 8;
  const std::vector<int32_t> full = greedy_decode(*m.decoder, m.params, kPrompts, o)[1].tokens;
  // Row 1 ends once it has produced its tokens 2..4; a sequence it never produces stops nothing.
  o.stop_sequences = {{full[2], full[3], full[4]}, {99, 98}};
  std::map<int64_t, std::vector<int32_t>> streamed;
  o.on_token = [&](int64_t row, int32_t token) { streamed[row].push_back(token); };
  auto got = greedy_decode(*m.decoder, m.params, kPrompts, o);
  // The earliest completion of the stop sequence (it may occur before position 2 too).
  size_t end = 0;
  for (size_t i = 2; i < full.size() && end == 0; ++i) {
    if (full[i - 2] == full[2] && full[i - 1] == full[3] && full[i] == full[4]) end = i + 1;
  }
  EXPECT_EQ(got[1].tokens, std::vector<int32_t>(full.begin(), full.begin() + std::ptrdiff_t(end)));
  EXPECT_EQ(got[1].stop_reason, StopReason::kStopSequence);
  for (size_t r = 0; r < got.size(); ++r) EXPECT_EQ(streamed[int64_t(r)], got[r].tokens) << r;
}

// ---- beam search ----

struct RefHyp {
  std::vector<int32_t> tokens;
  double log_prob, score;
};

// Beam search bookkeeping written out plainly: every live hypothesis's next-token
// log-probabilities recomputed from scratch; no early stop.
std::vector<RefHyp> ref_beam(Tiny& m, const std::vector<int32_t>& prompt, int64_t nb,
                             int64_t max_new, double alpha, std::optional<int32_t> eos) {
  auto bp = [&](size_t len) { return std::pow((5.0 + double(len)) / 6.0, alpha); };
  std::vector<RefHyp> live = {{{}, 0.0, 0.0}}, finished;
  auto by_score = [](const RefHyp& a, const RefHyp& b) { return a.score > b.score; };
  for (int64_t step = 0; step < max_new; ++step) {
    struct Cand {
      double lp;
      size_t beam;
      int32_t token;
    };
    std::vector<Cand> cands;
    for (size_t j = 0; j < live.size(); ++j) {
      std::vector<int32_t> ids = prompt;
      ids.insert(ids.end(), live[j].tokens.begin(), live[j].tokens.end());
      const std::vector<double> lp = ref_log_probs(m, ids);
      for (size_t v = 0; v < lp.size(); ++v) {
        const double s = live[j].log_prob + lp[v];
        if (eos && int32_t(v) == *eos) {
          RefHyp h{live[j].tokens, s, 0};
          h.tokens.push_back(int32_t(v));
          h.score = s / bp(h.tokens.size());
          finished.push_back(h);
        } else {
          cands.push_back({s, j, int32_t(v)});
        }
      }
    }
    std::stable_sort(finished.begin(), finished.end(), by_score);
    if (finished.size() > size_t(nb)) finished.resize(size_t(nb));
    std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
      if (a.lp != b.lp) return a.lp > b.lp;
      return a.beam != b.beam ? a.beam < b.beam : a.token < b.token;
    });
    std::vector<RefHyp> next;
    for (size_t i = 0; i < cands.size() && i < size_t(nb); ++i) {
      RefHyp h{live[cands[i].beam].tokens, cands[i].lp, 0};
      h.tokens.push_back(cands[i].token);
      next.push_back(h);
    }
    live = next;
  }
  for (RefHyp h : live) {
    h.score = h.log_prob / bp(h.tokens.size());
    finished.push_back(h);
  }
  std::stable_sort(finished.begin(), finished.end(), by_score);
  if (finished.size() > size_t(nb)) finished.resize(size_t(nb));
  return finished;
}

struct BeamCase {
  int64_t num_beams;
  double alpha;
  std::optional<int32_t> eos;
};

void PrintTo(const BeamCase& c, std::ostream* os) {
  *os << c.num_beams << " beams, alpha " << c.alpha << (c.eos ? ", EOS" : ", no EOS");
}

class BeamSearchTest : public ::testing::TestWithParam<BeamCase> {};

TEST_P(BeamSearchTest, MatchesNaiveBeamSearchWithFullRecompute) {
  const BeamCase c = GetParam();
  Tiny m = tiny(16);
  DecodeOptions o;
  o.max_new_tokens = 5;
  o.eos_id = c.eos;
  auto got = beam_search_decode(*m.decoder, m.params, kPrompts, o, {c.num_beams, c.alpha});
  ASSERT_EQ(got.size(), kPrompts.size());
  for (size_t r = 0; r < kPrompts.size(); ++r) {
    const std::vector<RefHyp> want = ref_beam(m, kPrompts[r], c.num_beams, 5, c.alpha, c.eos);
    ASSERT_EQ(got[r].size(), want.size()) << "row " << r;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[r][i].tokens, want[i].tokens) << "row " << r << " hypothesis " << i;
      EXPECT_NEAR(got[r][i].log_prob, want[i].log_prob, 1e-4) << "row " << r << " hyp " << i;
      EXPECT_NEAR(got[r][i].score, want[i].score, 1e-4) << "row " << r << " hyp " << i;
      const bool ends_in_eos = c.eos && got[r][i].tokens.back() == *c.eos;
      EXPECT_EQ(got[r][i].stop_reason, ends_in_eos ? StopReason::kEos : StopReason::kMaxNewTokens);
    }
  }
}

// EOS 1 is one of 16 tokens, so hypotheses finish at every step and rows stop early.
INSTANTIATE_TEST_SUITE_P(Cases, BeamSearchTest,
                         ::testing::Values(BeamCase{1, 0.0, std::nullopt},
                                           BeamCase{3, 0.0, std::nullopt}, BeamCase{3, 0.0, 1},
                                           BeamCase{4, 0.6, 1}, BeamCase{2, 2.0, 1}),
                         [](const auto& info) {
                           const BeamCase& c = info.param;
                           return "Beams" + std::to_string(c.num_beams) + "Alpha" +
                                  std::to_string(int(c.alpha * 10)) + (c.eos ? "Eos" : "NoEos");
                         });

TEST(BeamSearchExhaustiveTest, BeamAsWideAsTheVocabularyFindsTheBestSequences) {
  // Two steps with 16 beams over 16 tokens keep every first token, so the 16 hypotheses are the
  // 16 most likely of all 256 two-token continuations: checked by brute force.
  Tiny m = tiny(16, 9);
  const std::vector<int32_t> prompt = {5, 2, 8};
  DecodeOptions o;
  o.max_new_tokens = 2;
  auto got = beam_search_decode(*m.decoder, m.params, {prompt}, o, {16, 0.0})[0];
  std::vector<std::pair<double, std::vector<int32_t>>> all;
  const std::vector<double> first = ref_log_probs(m, prompt);
  for (int32_t a = 0; a < 16; ++a) {
    std::vector<int32_t> ids = prompt;
    ids.push_back(a);
    const std::vector<double> second = ref_log_probs(m, ids);
    for (int32_t b = 0; b < 16; ++b) all.push_back({first[size_t(a)] + second[size_t(b)], {a, b}});
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& x, const auto& y) { return x.first > y.first; });
  ASSERT_EQ(got.size(), 16u);
  for (size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(got[i].tokens, all[i].second) << i;
    EXPECT_NEAR(got[i].log_prob, all[i].first, 1e-4) << i;
  }
}

TEST(BrevityPenaltyTest, IsT5s) {
  EXPECT_DOUBLE_EQ(brevity_penalty(1, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(brevity_penalty(7, 1.0), 2.0);
  EXPECT_NEAR(brevity_penalty(10, 0.6), std::pow(2.5, 0.6), 1e-15);
}

// ---- logit modifiers ----

// Indices whose logits survived (were not replaced by kRemovedLogit) per row; survivors must
// keep their value.
std::vector<std::vector<int>> survivors(const Tensor& modified, const std::vector<float>& logits,
                                        int64_t v) {
  std::vector<float> m = modified.to_vector<float>();
  std::vector<std::vector<int>> out(m.size() / size_t(v));
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i] == float(kRemovedLogit)) continue;
    EXPECT_EQ(m[i], logits[i]) << "a kept logit changed at " << i;
    out[i / size_t(v)].push_back(int(i % size_t(v)));
  }
  return out;
}

TEST(LogitModifierTest, TopKKeepsTheKLargestAndEveryTieAtTheBoundary) {
  const std::vector<float> l = {1, 3, 2, 3, 0,    // two tied maxima
                                5, 4, 4, 4, -1};  // a three-way tie at rank 2
  const Tensor x = array(l, {2, 5});
  using R = std::vector<std::vector<int>>;
  EXPECT_EQ(survivors(top_k_logits(x, 1), l, 5), (R{{1, 3}, {0}}));
  EXPECT_EQ(survivors(top_k_logits(x, 2), l, 5), (R{{1, 3}, {0, 1, 2, 3}}));
  EXPECT_EQ(survivors(top_k_logits(x, 3), l, 5), (R{{1, 2, 3}, {0, 1, 2, 3}}));
  EXPECT_EQ(survivors(top_k_logits(x, 4), l, 5), (R{{0, 1, 2, 3}, {0, 1, 2, 3}}));
  EXPECT_EQ(survivors(top_k_logits(x, 9), l, 5), (R{{0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}}));
  EXPECT_THROW(top_k_logits(x, 0), Error);
}

TEST(LogitModifierTest, TopPKeepsTheSmallestMassReachingPAndTiesAtTheBoundary) {
  // Probabilities 0.125, 0.5, 0.125, 0.25 (shuffled): sorted cumulative mass 0.5, 0.75, 0.875, 1.
  const std::vector<float> l = {std::log(0.125f), std::log(0.5f), std::log(0.125f),
                                std::log(0.25f)};
  const Tensor x = array(l, {1, 4});
  using R = std::vector<std::vector<int>>;
  EXPECT_EQ(survivors(top_p_logits(x, 0.3), l, 4), (R{{1}}));
  EXPECT_EQ(survivors(top_p_logits(x, 0.6), l, 4), (R{{1, 3}}));
  EXPECT_EQ(survivors(top_p_logits(x, 0.7), l, 4), (R{{1, 3}}));
  // The cutoff (0.125) is tied: both tokens of that probability stay.
  EXPECT_EQ(survivors(top_p_logits(x, 0.8), l, 4), (R{{0, 1, 2, 3}}));
  EXPECT_EQ(survivors(top_p_logits(x, 1.0), l, 4), (R{{0, 1, 2, 3}}));
  // Equal logits: any p keeps them all.
  const std::vector<float> flat = {2, 2, 2};
  EXPECT_EQ(survivors(top_p_logits(array(flat, {1, 3}), 0.1), flat, 3), (R{{0, 1, 2}}));
  EXPECT_THROW(top_p_logits(x, 0.0), Error);
  EXPECT_THROW(top_p_logits(x, 1.5), Error);
}

TEST(LogitModifierTest, TemperatureDividesAndTooSmallIsAnError) {
  const std::vector<float> l = {1, -2, 0.5};
  auto got = scale_by(array(l, {1, 3}), 0.5).to_vector<float>();
  EXPECT_EQ(got, (std::vector<float>{2, -4, 1}));
  EXPECT_THROW(scale_by(array(l, {1, 3}), 0.0), Error);
}

// ---- sampling ----

std::vector<double> frequencies(const Tensor& tokens, int64_t v) {
  std::vector<double> f(size_t(v), 0.0);
  const std::vector<int32_t> t = tokens.to_vector<int32_t>();
  for (int32_t x : t) f[size_t(x)] += 1.0 / double(t.size());
  return f;
}

std::vector<double> softmax_ref(const std::vector<double>& l, double temperature) {
  std::vector<double> p;
  double z = 0;
  for (double x : l) z += std::exp(x / temperature);
  for (double x : l) p.push_back(std::exp(x / temperature) / z);
  return p;
}

TEST(SamplingTest, FrequenciesFollowTheTemperedSoftmax) {
  const std::vector<double> l = {0.0, 1.0, 2.0, -1.0};
  const int64_t n = 20000;
  const Tensor logits = broadcast_to(array(std::vector<float>(l.begin(), l.end()), {1, 4}), {n, 4});
  for (double temperature : {0.7, 1.0, 2.5}) {
    const Tensor tokens = sample_tokens(logits, {.temperature = temperature}, random::key(42));
    const std::vector<double> f = frequencies(tokens, 4), p = softmax_ref(l, temperature);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_NEAR(f[i], p[i], 0.015) << "temperature " << temperature << " token " << i;
    }
  }
  // With top_k = 2 only the two largest appear, in the renormalised proportion.
  const std::vector<double> f = frequencies(sample_tokens(logits, {.top_k = 2}, random::key(7)), 4);
  EXPECT_EQ(f[0] + f[3], 0.0);
  EXPECT_NEAR(f[2], std::exp(2.0) / (std::exp(1.0) + std::exp(2.0)), 0.015);
}

TEST(SamplingTest, TheKeyDecidesTheDraw) {
  const Tensor logits = zeros({64, 8});
  const auto a = sample_tokens(logits, {}, random::key(1)).to_vector<int32_t>();
  EXPECT_EQ(sample_tokens(logits, {}, random::key(1)).to_vector<int32_t>(), a);
  EXPECT_NE(sample_tokens(logits, {}, random::key(2)).to_vector<int32_t>(), a);
}

TEST(SampleDecodeTest, TopKOneIsGreedyAndAKeyRepeatsItsSamples) {
  Tiny m = tiny(32);
  DecodeOptions o;
  o.max_new_tokens = 6;
  auto greedy = greedy_decode(*m.decoder, m.params, kPrompts, o);
  auto top1 = sample_decode(*m.decoder, m.params, kPrompts, o, {.top_k = 1}, random::key(3));
  for (size_t r = 0; r < kPrompts.size(); ++r) EXPECT_EQ(top1[r].tokens, greedy[r].tokens) << r;
  auto s1 = sample_decode(*m.decoder, m.params, kPrompts, o, {.temperature = 1.5}, random::key(11));
  auto s2 = sample_decode(*m.decoder, m.params, kPrompts, o, {.temperature = 1.5}, random::key(11));
  auto s3 = sample_decode(*m.decoder, m.params, kPrompts, o, {.temperature = 1.5}, random::key(12));
  bool differs = false;
  for (size_t r = 0; r < kPrompts.size(); ++r) {
    EXPECT_EQ(s1[r].tokens, s2[r].tokens) << r;
    differs = differs || s1[r].tokens != s3[r].tokens;
  }
  EXPECT_TRUE(differs) << "another key drew the same 18 tokens";
  EXPECT_THROW(
      sample_decode(*m.decoder, m.params, kPrompts, o, {.temperature = 0.0}, random::key(1)),
      Error);
}

TEST(DecodeErrorTest, BadPromptsAndOptionsAreErrors) {
  Tiny m = tiny(16);
  DecodeOptions o;
  EXPECT_THROW(greedy_decode(*m.decoder, m.params, {{}}, o), Error);
  EXPECT_THROW(greedy_decode(*m.decoder, m.params, {{3, 16}}, o), Error);
  o.max_new_tokens = 0;
  EXPECT_THROW(greedy_decode(*m.decoder, m.params, {{3}}, o), Error);
  o.max_new_tokens = 2;
  EXPECT_THROW(beam_search_decode(*m.decoder, m.params, {{3}}, o, {0, 0.0}), Error);
}

}  // namespace
}  // namespace axlearn::infer
