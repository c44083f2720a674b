// KV-cache decoding through the layers (init_states / prefill / extend_step) against the full
// forward pass: for MHA, GQA (fused and separate projections) and sliding-window attention in
// stacked and repeated stacks, a batch of prompts of different lengths is prefilled and extended
// token by token, and every row's logits at every step must equal those of Decoder::forward over
// that row's whole prefix.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "tiny_decoder.h"

namespace axlearn::layers {
namespace {

constexpr double kTol = 1e-5;

void expect_close(const float* got, const std::vector<float>& want, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::abs(double(got[i]) - double(want[i])) <= kTol) && bad++ < 3) {
      ADD_FAILURE() << what << " logit " << i << ": cached " << got[i] << " vs full " << want[i];
    }
  }
}

class KvCacheTest : public ::testing::TestWithParam<TinySpec> {};

TEST_P(KvCacheTest, EveryStepMatchesTheFullForwardPass) {
  const TinySpec spec = GetParam();
  auto decoder = tiny_decoder_config(spec)->instantiate<Decoder>(nullptr);
  const NestedTensor params = decoder->initialize_parameters_recursively(random::key(5));
  const int64_t v = spec.vocab_size;
  // Three right-padded prompts of lengths 5, 2 and 7 (longer than a window of 3 + 1 slots).
  std::vector<std::vector<int32_t>> rows = {{3, 9, 4, 17, 2}, {11, 5}, {7, 7, 30, 1, 12, 6, 25}};
  const int64_t b = 3, t = 7, steps = 6;
  std::vector<int32_t> ids(size_t(b * t), 0), lengths;
  for (int64_t r = 0; r < b; ++r) {
    std::copy(rows[size_t(r)].begin(), rows[size_t(r)].end(), ids.begin() + r * t);
    lengths.push_back(int32_t(rows[size_t(r)].size()));
  }
  auto run = [&](auto fn) {
    return functional_call(*decoder, params, std::nullopt, false, fn).outputs;
  };
  NestedTensor states = decoder->init_states(b, t + steps);
  DecoderStepOutput out = run([&] {
    return decoder->prefill(states, array(ids, {b, t}), array(lengths, {b}));
  });
  EXPECT_EQ(out.states.at("time_step").tensor().to_vector<int32_t>(), lengths);
  // Prefill: every valid position of every row.
  const std::vector<float> prefill_logits = out.logits.to_vector<float>();
  for (int64_t r = 0; r < b; ++r) {
    for (int32_t p = 1; p <= lengths[size_t(r)]; ++p) {
      std::vector<int32_t> prefix(rows[size_t(r)].begin(), rows[size_t(r)].begin() + p);
      expect_close(prefill_logits.data() + (r * t + p - 1) * v,
                   full_forward_last_logits(*decoder, params, prefix),
                   "prefill row " + std::to_string(r) + " position " + std::to_string(p - 1));
    }
  }
  // Extend: one token per row at each row's own position.
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> next;
    for (int64_t r = 0; r < b; ++r) {
      next.push_back(int32_t((5 * r + 3 * s + 1) % v));
      rows[size_t(r)].push_back(next.back());
    }
    out = run([&] { return decoder->extend_step(out.states, array(next, {b, 1})); });
    ASSERT_EQ(shape_str(out.logits.shape()), "(3, 1, " + std::to_string(v) + ")");
    const std::vector<float> logits = out.logits.to_vector<float>();
    for (int64_t r = 0; r < b; ++r) {
      expect_close(logits.data() + r * v,
                   full_forward_last_logits(*decoder, params, rows[size_t(r)]),
                   "step " + std::to_string(s) + " row " + std::to_string(r));
    }
    const std::vector<int32_t> ts = out.states.at("time_step").tensor().to_vector<int32_t>();
    for (int64_t r = 0; r < b; ++r) EXPECT_EQ(ts[size_t(r)], int32_t(rows[size_t(r)].size()));
  }
}

std::vector<TinySpec> all_specs() {
  std::vector<TinySpec> specs;
  for (TinyAttention a : {TinyAttention::kMha, TinyAttention::kGqaFused,
                          TinyAttention::kGqaSeparate, TinyAttention::kSlidingWindow}) {
    for (bool stacked : {false, true}) specs.push_back({.attention = a, .stacked = stacked});
  }
  return specs;
}

INSTANTIATE_TEST_SUITE_P(Layers, KvCacheTest, ::testing::ValuesIn(all_specs()),
                         [](const auto& info) { return tiny_name(info.param); });

TEST(KvCacheLayoutTest, StateMirrorsTheStackWithTheBatchOnAxisZero) {
  auto decoder =
      tiny_decoder_config({.attention = TinyAttention::kGqaFused})->instantiate<Decoder>(nullptr);
  NestedTensor states = decoder->init_states(3, 10);
  std::vector<std::string> paths;
  for (const auto& [path, t] : states.flatten_with_paths()) {
    paths.push_back(path + " " + shape_str(t.shape()));
    EXPECT_EQ(t.shape(0), 3) << path;
  }
  const std::vector<std::string> want = {
      "time_step (3,)",
      "transformer/layer0/self_attention/attention/key (3, 10, 2, 4)",
      "transformer/layer0/self_attention/attention/time_step (3,)",
      "transformer/layer0/self_attention/attention/value (3, 10, 2, 4)",
      "transformer/layer1/self_attention/attention/key (3, 10, 2, 4)",
      "transformer/layer1/self_attention/attention/time_step (3,)",
      "transformer/layer1/self_attention/attention/value (3, 10, 2, 4)"};
  EXPECT_EQ(paths, want);
}

TEST(KvCacheLayoutTest, SlidingWindowCacheHoldsOnlyTheWindow) {
  auto decoder =
      tiny_decoder_config({.attention = TinyAttention::kSlidingWindow, .sliding_window = 3})
          ->instantiate<Decoder>(nullptr);
  const auto key = [](const NestedTensor& s) {
    return s.at_path("transformer/layer0/self_attention/attention/key").tensor().shape();
  };
  EXPECT_EQ(shape_str(key(decoder->init_states(2, 100))), "(2, 4, 2, 4)");  // window + 1 slots
  EXPECT_EQ(shape_str(key(decoder->init_states(2, 3))), "(2, 3, 2, 4)");    // max_len is less
}

TEST(KvCacheLayoutTest, SlidingWindowRingRunsFarPastItsLength) {
  // 40 positions through a ring of 4 slots, against the full forward pass at the end.
  const TinySpec spec{.attention = TinyAttention::kSlidingWindow};
  auto decoder = tiny_decoder_config(spec)->instantiate<Decoder>(nullptr);
  const NestedTensor params = decoder->initialize_parameters_recursively(random::key(8));
  std::vector<int32_t> ids = {4, 8, 15};
  auto run = [&](auto fn) {
    return functional_call(*decoder, params, std::nullopt, false, fn).outputs;
  };
  DecoderStepOutput out = run([&] {
    return decoder->prefill(decoder->init_states(1, 64), array(ids, {1, 3}),
                            array(std::vector<int32_t>{3}, {1}));
  });
  for (int i = 0; i < 37; ++i) {
    ids.push_back(int32_t((7 * i + 2) % spec.vocab_size));
    out = run([&] {
      return decoder->extend_step(out.states, array(std::vector<int32_t>{ids.back()}, {1, 1}));
    });
    eval(out.states);
  }
  expect_close(out.logits.to_vector<float>().data(),
               full_forward_last_logits(*decoder, params, ids), "position 39");
}

TEST(KvCacheErrorTest, MisuseIsAnErrorNamingTheLayer) {
  auto decoder =
      tiny_decoder_config({.attention = TinyAttention::kGqaFused})->instantiate<Decoder>(nullptr);
  const NestedTensor params = decoder->initialize_parameters_recursively(random::key(1));
  auto run = [&](auto fn) {
    return functional_call(*decoder, params, std::nullopt, false, fn).outputs;
  };
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; wanted one containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const Tensor lengths = array(std::vector<int32_t>{2}, {1});
  // A prompt longer than the cache.
  expect_error(
      [&] {
        run([&] {
          return decoder->prefill(decoder->init_states(1, 2), zeros({1, 3}, int32), lengths);
        });
      },
      "does not fit the cache of 2");
  // Extending a full cache.
  expect_error(
      [&] {
        DecoderStepOutput out = run([&] {
          return decoder->prefill(decoder->init_states(1, 2), zeros({1, 2}, int32), lengths);
        });
        run([&] { return decoder->extend_step(out.states, zeros({1, 1}, int32)); });
      },
      "time_step 2 is past the cache of 2");
  // Lengths outside [1, T].
  expect_error(
      [&] {
        run([&] {
          return decoder->prefill(decoder->init_states(1, 4), zeros({1, 3}, int32),
                                  array(std::vector<int32_t>{4}, {1}));
        });
      },
      "prompt lengths must be in [1, 3], got 4");
  // Two tokens in one step.
  expect_error(
      [&] {
        run([&] { return decoder->extend_step(decoder->init_states(1, 4), zeros({1, 2}, int32)); });
      },
      "one token per row");
  // A state that did not come from init_states.
  expect_error(
      [&] { run([&] {
              return decoder->extend_step(NestedTensor(), zeros({1, 1}, int32));
            }); },
      "init_states");
}

}  // namespace
}  // namespace axlearn::layers
