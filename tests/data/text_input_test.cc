// The text input pipeline against a naive reference: the corpus is tokenized line by line here,
// concatenated with EOS after each document and cut into windows by plain loops; batches,
// segment ids, positions, shuffling, process sharding, eval padding and state restore are all
// checked against it. A small sentencepiece model is trained per test process.
#include "axlearn/data/text_input.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "axlearn/config/config.h"
#include "axlearn/core/error.h"
#include "axlearn/data/tokenizer.h"

namespace axlearn::data {

struct InputIteratorTestPeer {
  static void fail_at(InputIterator& it, int64_t batch) { it.inject_failure_for_testing(batch); }
};

namespace {

namespace fs = std::filesystem;
using Rows = std::vector<std::vector<int32_t>>;
constexpr int64_t kT = 16;

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected axlearn::Error";
  return "";
}

// Documents of 1..max_words words drawn by an LCG (fixed, so the corpus is the same everywhere).
std::vector<std::string> make_documents(uint64_t seed, int count, int max_words) {
  static const char* words[] = {"alpha", "beta", "gamma", "delta",  "epsilon", "zeta", "eta",
                                "theta", "iota", "kappa", "lambda", "mu",      "nu",   "xi",
                                "pi",    "rho",  "sigma", "tau",    "phi",     "chi",  "psi",
                                "omega", "the",  "of",    "and",    "to",      "in",   "a"};
  uint64_t s = seed;
  auto draw = [&](uint64_t n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (s >> 33) % n;
  };
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string text;
    const auto n = 1 + draw(uint64_t(max_words));
    for (uint64_t w = 0; w < n; ++w) {
      if (w) text += ' ';
      text += words[draw(std::size(words))];
    }
    docs.push_back(text);
  }
  return docs;
}

// One row of the reference: window k = stream[k*T : k*T + T + 1], padded past the end.
struct RefRow {
  std::vector<int32_t> input_ids, target_labels, segment_ids, positions;
};

class TextInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("axlearn_text_input_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    files_.clear();
    documents_.clear();
    stream_.clear();
    // Three files; b.txt has empty lines (skipped) and c.txt a CRLF line ending (stripped).
    const std::vector<std::pair<std::string, std::vector<std::string>>> files = {
        {"a.txt", make_documents(1, 30, 30)},
        {"b.txt", make_documents(2, 25, 12)},
        {"c.txt", make_documents(3, 20, 40)}};
    for (const auto& [name, docs] : files) {
      std::ofstream out(dir_ / name, std::ios::binary);
      for (size_t i = 0; i < docs.size(); ++i) {
        out << docs[i] << (name == "c.txt" && i == 4 ? "\r\n" : "\n");
        if (name == "b.txt" && i % 10 == 3) out << "\n";
        documents_.push_back(docs[i]);
      }
      files_.push_back((dir_ / name).string());
    }
    std::ofstream(dir_ / "not_a_model.txt") << "hello\n";
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + files_[0] + "," + files_[1] + "," + files_[2] +
        " --model_prefix=" + (dir_ / "spm").string() +
        " --vocab_size=80 --hard_vocab_limit=false --model_type=unigram --pad_id=0 --eos_id=1"
        " --unk_id=2 --bos_id=-1 --num_threads=1 --minloglevel=2");
    ASSERT_TRUE(status.ok()) << status.ToString();
    vocab_ = (dir_ / "spm.model").string();

    SentencePieceTokenizer tok(vocab_);
    eos_ = tok.eos_id();
    pad_ = tok.pad_id();
    for (const std::string& d : documents_) {
      const auto ids = tok.encode(d);
      stream_.insert(stream_.end(), ids.begin(), ids.end());
      stream_.push_back(eos_);
    }
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static ConfigPtr<Input::Config> config(bool is_training, int64_t batch_size) {
    auto cfg = Input::default_config();
    cfg->sources = files_;
    cfg->vocab = vocab_;
    cfg->max_len = kT;
    cfg->global_batch_size = batch_size;
    cfg->is_training = is_training;
    return cfg;
  }

  static int64_t full_windows() { return (int64_t(stream_.size()) - 1) / kT; }
  static int64_t all_windows() { return (int64_t(stream_.size()) - 1 + kT - 1) / kT; }

  static RefRow ref_row(int64_t k, bool with_segment_ids) {
    const auto n = int64_t(stream_.size());
    RefRow r;
    for (int64_t j = 0; j < kT; ++j) {
      const int64_t i = k * kT + j;
      r.input_ids.push_back(i < n ? stream_[size_t(i)] : pad_);
      r.target_labels.push_back(i + 1 < n ? stream_[size_t(i + 1)] : -1);
    }
    if (!with_segment_ids) return r;
    for (int64_t j = 0; j < kT; ++j) {
      if (k * kT + j >= n) {
        r.segment_ids.push_back(0);
        r.positions.push_back(0);
        continue;
      }
      int32_t eos_before = 0;
      int64_t start = 0;
      for (int64_t i = 0; i < j; ++i) {
        if (r.input_ids[size_t(i)] == eos_) {
          ++eos_before;
          start = i + 1;
        }
      }
      r.segment_ids.push_back(1 + eos_before);
      r.positions.push_back(int32_t(j - start));
      if (r.input_ids[size_t(j)] == eos_) r.target_labels[size_t(j)] = -1;
    }
    return r;
  }

  static fs::path dir_;
  static std::vector<std::string> files_, documents_;
  static std::string vocab_;
  static std::vector<int32_t> stream_;
  static int32_t eos_, pad_;
};
fs::path TextInputTest::dir_;
std::vector<std::string> TextInputTest::files_, TextInputTest::documents_;
std::string TextInputTest::vocab_;
std::vector<int32_t> TextInputTest::stream_;
int32_t TextInputTest::eos_ = 0, TextInputTest::pad_ = 0;

Rows rows(const NestedTensor& batch, const std::string& key) {
  const Tensor& t = batch.at(key).tensor();
  EXPECT_EQ(t.dtype(), int32);
  EXPECT_EQ(t.shape().size(), 2u);
  const auto v = t.to_vector<int32_t>();
  const int64_t cols = t.shape()[1];
  Rows out;
  for (int64_t r = 0; r < t.shape()[0]; ++r) {
    out.emplace_back(v.begin() + r * cols, v.begin() + (r + 1) * cols);
  }
  return out;
}

const std::vector<std::string> kAllKeys = {"input_ids", "target_labels", "input_segment_ids",
                                           "input_positions"};

// All leaves of `n` batches as host vectors, for bitwise comparison.
std::vector<std::map<std::string, Rows>> take(InputIterator& it, int n) {
  std::vector<std::map<std::string, Rows>> out;
  for (int i = 0; i < n; ++i) {
    auto b = it.next();
    if (!b) break;
    std::map<std::string, Rows> m;
    for (const auto& [k, leaf] : b->dict()) m[k] = rows(*b, k);
    out.push_back(std::move(m));
  }
  return out;
}

TEST_F(TextInputTest, EvalPacksDocumentsIntoOverlappingWindowsInFileOrder) {
  auto input = config(false, 4)->instantiate<Input>();
  auto it = input->make_iterator();
  ASSERT_EQ(it->num_tokens(), int64_t(stream_.size()));
  ASSERT_EQ(it->num_windows(), all_windows());
  ASSERT_GT(all_windows(), 40);
  const int64_t num_batches = (all_windows() + 3) / 4;
  ASSERT_EQ(it->num_batches(), num_batches);
  Rows inputs, targets;
  while (auto batch = it->next()) {
    std::set<std::string> keys;
    for (const auto& [k, leaf] : batch->dict()) keys.insert(k);
    EXPECT_EQ(keys, (std::set<std::string>{"input_ids", "target_labels"}));
    EXPECT_EQ(batch->at("input_ids").tensor().shape(), (Shape{4, kT}));
    for (auto& r : rows(*batch, "input_ids")) inputs.push_back(r);
    for (auto& r : rows(*batch, "target_labels")) targets.push_back(r);
  }
  EXPECT_FALSE(it->next().has_value()) << "the pass has ended";
  ASSERT_EQ(int64_t(inputs.size()), num_batches * 4);
  for (int64_t k = 0; k < int64_t(inputs.size()); ++k) {
    if (k < all_windows()) {
      const RefRow ref = ref_row(k, false);
      EXPECT_EQ(inputs[size_t(k)], ref.input_ids) << "row " << k;
      EXPECT_EQ(targets[size_t(k)], ref.target_labels) << "row " << k;
    } else {  // a padding row
      EXPECT_EQ(inputs[size_t(k)], std::vector<int32_t>(kT, pad_)) << "row " << k;
      EXPECT_EQ(targets[size_t(k)], std::vector<int32_t>(kT, -1)) << "row " << k;
    }
  }
  // Targets are the inputs shifted by one, across rows too (windows overlap by one token).
  for (int64_t k = 0; k + 1 < full_windows(); ++k) {
    for (int64_t j = 0; j + 1 < kT; ++j) {
      ASSERT_EQ(targets[size_t(k)][size_t(j)], inputs[size_t(k)][size_t(j + 1)]);
    }
    ASSERT_EQ(targets[size_t(k)][kT - 1], inputs[size_t(k + 1)][0]);
  }
  // Every document, EOS included, is in the rows exactly once.
  int64_t eos_count = 0;
  for (const auto& r : inputs) eos_count += std::count(r.begin(), r.end(), eos_);
  EXPECT_EQ(eos_count, int64_t(documents_.size()));
}

TEST_F(TextInputTest, SegmentIdsAndPositionsMatchNaiveLoop) {
  auto cfg = config(false, 5);
  cfg->with_segment_ids = true;
  auto it = cfg->instantiate<Input>()->make_iterator();
  int64_t k = 0, rows_with_several_documents = 0;
  while (auto batch = it->next()) {
    const Rows in = rows(*batch, "input_ids"), tgt = rows(*batch, "target_labels"),
               seg = rows(*batch, "input_segment_ids"), pos = rows(*batch, "input_positions");
    for (size_t r = 0; r < in.size(); ++r, ++k) {
      const RefRow ref = k < all_windows()
                             ? ref_row(k, true)
                             : RefRow{std::vector<int32_t>(kT, pad_), std::vector<int32_t>(kT, -1),
                                      std::vector<int32_t>(kT, 0), std::vector<int32_t>(kT, 0)};
      EXPECT_EQ(in[r], ref.input_ids) << "row " << k;
      EXPECT_EQ(tgt[r], ref.target_labels) << "row " << k;
      EXPECT_EQ(seg[r], ref.segment_ids) << "row " << k;
      EXPECT_EQ(pos[r], ref.positions) << "row " << k;
      if (*std::max_element(seg[r].begin(), seg[r].end()) >= 3) ++rows_with_several_documents;
    }
  }
  EXPECT_GT(rows_with_several_documents, 3) << "the corpus should pack short documents together";
}

TEST_F(TextInputTest, MaxEvalBatchesCapsThePass) {
  auto cfg = config(false, 4);
  auto full = take(*cfg->instantiate<Input>()->make_iterator(), 1000);
  cfg->max_eval_batches = int64_t{3};
  auto it = cfg->instantiate<Input>()->make_iterator();
  EXPECT_EQ(it->num_batches(), 3);
  auto capped = take(*it, 1000);
  ASSERT_EQ(capped.size(), 3u);
  EXPECT_TRUE(std::equal(capped.begin(), capped.end(), full.begin()));
  EXPECT_FALSE(it->next().has_value());
}

TEST_F(TextInputTest, TrainingVisitsEveryWindowOncePerEpochInSeededOrder) {
  const int64_t W = full_windows(), B = 6;
  // Windows are told apart by their inputs (the corpus makes them distinct).
  std::map<std::vector<int32_t>, int64_t> window_of;
  for (int64_t k = 0; k < W; ++k) window_of[ref_row(k, false).input_ids] = k;
  ASSERT_EQ(int64_t(window_of.size()), W);

  auto order = [&](int64_t seed, int64_t epochs) {
    auto cfg = config(true, B);
    cfg->seed = seed;
    auto it = cfg->instantiate<Input>()->make_iterator();
    EXPECT_EQ(it->num_windows(), W);
    EXPECT_FALSE(it->num_batches().has_value());
    std::vector<int64_t> ids;
    while (int64_t(ids.size()) < epochs * W) {
      auto batch = it->next();
      EXPECT_TRUE(batch.has_value()) << "training never ends";
      const Rows in = rows(*batch, "input_ids"), tgt = rows(*batch, "target_labels");
      for (size_t r = 0; r < in.size(); ++r) {
        auto found = window_of.find(in[r]);
        EXPECT_NE(found, window_of.end()) << "a row that is no window of the stream";
        if (found == window_of.end()) return ids;
        EXPECT_EQ(tgt[r], ref_row(found->second, false).target_labels);
        ids.push_back(found->second);
      }
    }
    return ids;
  };
  const std::vector<int64_t> a = order(7, 3);
  ASSERT_GE(int64_t(a.size()), 3 * W);
  std::vector<int64_t> identity(size_t(W), 0);
  std::iota(identity.begin(), identity.end(), 0);
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 3; ++e) {
    epochs.emplace_back(a.begin() + e * W, a.begin() + (e + 1) * W);
    std::vector<int64_t> sorted = epochs.back();
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity) << "epoch " << e << " is not a permutation of the windows";
    EXPECT_NE(epochs.back(), identity) << "epoch " << e << " is not shuffled";
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  EXPECT_EQ(order(7, 2), std::vector<int64_t>(a.begin(), a.begin() + 2 * W + (B - (2 * W) % B) % B))
      << "the same seed gives the same order";
  const std::vector<int64_t> other = order(8, 1);
  EXPECT_NE(std::vector<int64_t>(other.begin(), other.begin() + W), epochs[0]);
}

TEST_F(TextInputTest, ProcessShardsPartitionTheGlobalBatch) {
  for (bool is_training : {true, false}) {
    auto single_cfg = config(is_training, 6);
    single_cfg->with_segment_ids = true;
    const auto single = take(*single_cfg->instantiate<Input>()->make_iterator(), 12);
    std::vector<std::vector<std::map<std::string, Rows>>> shards;
    for (int64_t p = 0; p < 3; ++p) {
      auto cfg = single_cfg.clone();
      cfg->process_count = 3;
      cfg->process_index = p;
      auto input = cfg->instantiate<Input>();
      EXPECT_EQ(input->per_process_batch_size(), 2);
      shards.push_back(take(*input->make_iterator(), 12));
      ASSERT_EQ(shards.back().size(), single.size());
    }
    for (size_t b = 0; b < single.size(); ++b) {
      for (const std::string& key : kAllKeys) {
        Rows joined;
        for (const auto& shard : shards) {
          EXPECT_EQ(shard[b].at(key).size(), 2u);
          joined.insert(joined.end(), shard[b].at(key).begin(), shard[b].at(key).end());
        }
        EXPECT_EQ(joined, single[b].at(key)) << "batch " << b << " " << key;
      }
    }
  }
}

TEST_F(TextInputTest, EvalLastBatchIsPaddedAndThePassEnds) {
  // Pick a batch size that leaves a partial last batch.
  int64_t B = 7;
  while (all_windows() % B == 0) ++B;
  auto cfg = config(false, B);
  cfg->with_segment_ids = true;
  auto it = cfg->instantiate<Input>()->make_iterator();
  const auto batches = take(*it, 1000);
  ASSERT_EQ(int64_t(batches.size()), (all_windows() + B - 1) / B);
  const auto& last = batches.back();
  const int64_t real_rows = all_windows() - (int64_t(batches.size()) - 1) * B;
  for (int64_t r = real_rows; r < B; ++r) {
    EXPECT_EQ(last.at("input_ids")[size_t(r)], std::vector<int32_t>(kT, pad_));
    EXPECT_EQ(last.at("target_labels")[size_t(r)], std::vector<int32_t>(kT, -1));
    EXPECT_EQ(last.at("input_segment_ids")[size_t(r)], std::vector<int32_t>(kT, 0));
  }
  EXPECT_NE(last.at("input_ids")[size_t(real_rows - 1)], std::vector<int32_t>(kT, pad_));
  EXPECT_FALSE(it->next().has_value());
  EXPECT_FALSE(it->next().has_value());
  EXPECT_EQ(it->batches_read(), int64_t(batches.size()));
}

class TextInputRestoreTest : public TextInputTest,
                             public ::testing::WithParamInterface<std::tuple<int, int, bool>> {};

TEST_P(TextInputRestoreTest, RestoredIteratorReturnsTheSameNextBatches) {
  const auto [saving_prefetch, restoring_prefetch, is_training] = GetParam();
  auto cfg = config(is_training, 4);
  cfg->with_segment_ids = true;
  cfg->seed = 3;
  cfg->prefetch = saving_prefetch;
  auto it = cfg->instantiate<Input>()->make_iterator();
  take(*it, 5);
  // Let the prefetch thread run ahead: what it prepared must not count as read.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string state = it->state();
  EXPECT_EQ(Json::parse(state)["batches_read"], 5);
  const auto expected = take(*it, 30);  // past the end of an epoch and of the eval pass
  ASSERT_GT(expected.size(), 3u);

  auto other = cfg.clone();
  other->prefetch = restoring_prefetch;
  auto restored = other->instantiate<Input>()->make_iterator();
  take(*restored, 2);
  restored->restore(state);
  EXPECT_EQ(restored->batches_read(), 5);
  EXPECT_EQ(take(*restored, 30), expected);
  EXPECT_EQ(restored->state(), it->state());
  // Restoring the original iterator goes back as well.
  it->restore(state);
  EXPECT_EQ(take(*it, 30), expected);
}

INSTANTIATE_TEST_SUITE_P(PrefetchOnAndOff, TextInputRestoreTest,
                         ::testing::Values(std::make_tuple(0, 0, true), std::make_tuple(3, 3, true),
                                           std::make_tuple(3, 0, true), std::make_tuple(0, 2, true),
                                           std::make_tuple(2, 2, false),
                                           std::make_tuple(0, 1, false)));

TEST_F(TextInputTest, RestoreRejectsMalformedOrForeignState) {
  auto it = config(true, 4)->instantiate<Input>()->make_iterator();
  take(*it, 2);
  const std::string good = it->state();
  const auto expected = take(*it, 1);
  it->restore(good);

  auto edited = [&](const std::function<void(Json&)>& edit) {
    Json j = Json::parse(good);
    edit(j);
    return j.dump();
  };
  auto error_of = [&](const std::string& state) {
    return expect_error([&] { it->restore(state); });
  };
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(edited([](Json& j) { j.erase("batches_read"); })).find("'batches_read'"),
            std::string::npos);
  EXPECT_NE(error_of(edited([](Json& j) { j["batches_read"] = -3; })).find("'batches_read'"),
            std::string::npos);
  EXPECT_NE(error_of(edited([](Json& j) { j["batches_read"] = "x"; })).find("'batches_read'"),
            std::string::npos);
  EXPECT_NE(error_of(edited([](Json& j) { j["klass"] = "Other"; })).find("'klass'"),
            std::string::npos);
  EXPECT_NE(error_of(edited([](Json& j) { j["version"] = 99; })).find("'version'"),
            std::string::npos);
  EXPECT_NE(
      error_of(edited([](Json& j) { j.erase("corpus_fingerprint"); })).find("'corpus_fingerprint'"),
      std::string::npos);

  // States of inputs with another config or corpus.
  auto foreign_state = [&](const std::function<void(Input::Config&)>& change) {
    auto cfg = config(true, 4);
    change(*cfg);
    auto other = cfg->instantiate<Input>()->make_iterator();
    other->next();
    return other->state();
  };
  const std::string seed_msg = error_of(foreign_state([](Input::Config& c) { c.seed = 1; }));
  EXPECT_NE(seed_msg.find("'seed' is 1 but this input's is 0"), std::string::npos) << seed_msg;
  EXPECT_NE(error_of(foreign_state([](Input::Config& c) { c.max_len = 8; })).find("'max_len'"),
            std::string::npos);
  EXPECT_NE(error_of(foreign_state([](Input::Config& c) {
              c.global_batch_size = 8;
            })).find("'global_batch_size'"),
            std::string::npos);
  EXPECT_NE(error_of(foreign_state([](Input::Config& c) {
              c.with_segment_ids = true;
            })).find("'with_segment_ids'"),
            std::string::npos);
  const std::string corpus_msg = error_of(foreign_state([&](Input::Config& c) {
    c.sources = std::vector<std::string>{files_[2], files_[1], files_[0]};
  }));
  EXPECT_NE(corpus_msg.find("'corpus_fingerprint'"), std::string::npos) << corpus_msg;

  // The failed restores left the position alone.
  EXPECT_EQ(it->batches_read(), 2);
  EXPECT_EQ(take(*it, 1), expected);
  // The process layout is not part of the state: another process count resumes the same data.
  auto cfg = config(true, 4);
  cfg->process_count = 2;
  cfg->process_index = 1;
  auto shard = cfg->instantiate<Input>()->make_iterator();
  shard->restore(good);
  const auto rows_of_shard = take(*shard, 1);
  EXPECT_EQ(rows_of_shard[0].at("input_ids")[0], expected[0].at("input_ids")[2]);
}

TEST_F(TextInputTest, EvalRestorePastTheEndIsAnError) {
  auto it = config(false, 4)->instantiate<Input>()->make_iterator();
  Json j = Json::parse(it->state());
  j["batches_read"] = *it->num_batches() + 1;
  const std::string msg = expect_error([&] { it->restore(j.dump()); });
  EXPECT_NE(msg.find("'batches_read'"), std::string::npos) << msg;
  j["batches_read"] = *it->num_batches();
  it->restore(j.dump());
  EXPECT_FALSE(it->next().has_value());
}

TEST_F(TextInputTest, MissingSourcesAndBadVocabErrorsNameThePath) {
  const std::string pattern = (dir_ / "nothing_*.txt").string();
  auto cfg = config(true, 4);
  cfg->sources = std::vector<std::string>{files_[0], pattern};
  std::string msg = expect_error([&] { cfg->instantiate<Input>(); });
  EXPECT_NE(msg.find("sources[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find(pattern), std::string::npos) << msg;
  EXPECT_NE(msg.find("matches no file"), std::string::npos) << msg;

  cfg->sources = std::vector<std::string>{"{data_dir}/no_such_dir/train.txt"};
  msg = expect_error([&] { cfg->instantiate<Input>(); });
  EXPECT_NE(msg.find("{data_dir}/no_such_dir/train.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find(data_dir() + "/no_such_dir/train.txt"), std::string::npos) << msg;

  cfg = config(true, 4);
  const std::string missing = (dir_ / "missing.model").string();
  cfg->vocab = missing;
  msg = expect_error([&] { cfg->instantiate<Input>(); });
  EXPECT_NE(msg.find("vocab"), std::string::npos) << msg;
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  const std::string not_model = (dir_ / "not_a_model.txt").string();
  cfg->vocab = not_model;
  msg = expect_error([&] { cfg->instantiate<Input>(); });
  EXPECT_NE(msg.find(not_model), std::string::npos) << msg;
}

TEST_F(TextInputTest, InvalidFieldsAreErrorsNamingTheField) {
  auto error_for = [&](const std::function<void(Input::Config&)>& change) {
    auto cfg = config(true, 6);
    change(*cfg);
    return expect_error([&] { cfg->instantiate<Input>(); });
  };
  EXPECT_NE(error_for([](Input::Config& c) {
              c.process_count = 4;
            }).find("global_batch_size 6 is not divisible by process_count 4"),
            std::string::npos);
  EXPECT_NE(error_for([](Input::Config& c) {
              c.process_count = 3;
              c.process_index = 3;
            }).find("process_index"),
            std::string::npos);
  EXPECT_NE(error_for([](Input::Config& c) { c.max_len = 0; }).find("max_len must be >= 1"),
            std::string::npos);
  EXPECT_NE(error_for([](Input::Config& c) { c.prefetch = -1; }).find("prefetch"),
            std::string::npos);
  EXPECT_NE(error_for([](Input::Config& c) {
              c.sources = std::vector<std::string>{};
            }).find("sources is empty"),
            std::string::npos);
  // REQUIRED fields are named by instantiate().
  auto cfg = Input::default_config();
  cfg->sources = files_;
  EXPECT_NE(expect_error([&] { cfg->instantiate<Input>(); }).find("vocab"), std::string::npos);
}

TEST_F(TextInputTest, CorpusShorterThanOneWindowIsAnError) {
  auto cfg = config(true, 2);
  cfg->max_len = int64_t(stream_.size());
  auto input = cfg->instantiate<Input>();
  const std::string msg = expect_error([&] { input->make_iterator(); });
  EXPECT_NE(msg.find(std::to_string(stream_.size()) + " tokens"), std::string::npos) << msg;
  // Eval still reads it, as one padded window.
  cfg->is_training = false;
  auto it = cfg->instantiate<Input>()->make_iterator();
  EXPECT_EQ(it->num_windows(), 1);
  EXPECT_EQ(take(*it, 10).size(), 1u);
}

TEST_F(TextInputTest, GlobPatternsMatchFilesInSortedOrderAndDataDirIsExpanded) {
  const char* old = std::getenv("AXLEARN_DATA_DIR");
  const std::string saved = old ? old : "";
  setenv("AXLEARN_DATA_DIR", dir_.c_str(), 1);
  auto cfg = config(false, 4);
  cfg->sources = std::vector<std::string>{"{data_dir}/[abc].txt"};
  auto input = cfg->instantiate<Input>();
  if (old) {
    setenv("AXLEARN_DATA_DIR", saved.c_str(), 1);
  } else {
    unsetenv("AXLEARN_DATA_DIR");
  }
  EXPECT_EQ(input->files(), files_);
  EXPECT_EQ(take(*input->make_iterator(), 3),
            take(*config(false, 4)->instantiate<Input>()->make_iterator(), 3));
}

TEST_F(TextInputTest, ErrorInPrefetchThreadSurfacesOnNext) {
  for (int64_t prefetch : {0, 2}) {
    auto cfg = config(true, 4);
    cfg->prefetch = prefetch;
    auto it = cfg->instantiate<Input>()->make_iterator();
    InputIteratorTestPeer::fail_at(*it, 3);
    EXPECT_EQ(take(*it, 3).size(), 3u);
    for (int attempt = 0; attempt < 2; ++attempt) {
      const std::string msg = expect_error([&] { it->next(); });
      EXPECT_NE(msg.find("injected failure at batch 3"), std::string::npos) << msg;
    }
    EXPECT_EQ(it->batches_read(), 3);
    // A restore clears the error and restarts the thread.
    InputIteratorTestPeer::fail_at(*it, -1);
    Json j = Json::parse(it->state());
    it->restore(j.dump());
    EXPECT_EQ(take(*it, 2).size(), 2u);
  }
}

TEST_F(TextInputTest, DestroyingAnIteratorJoinsItsThreadPromptly) {
  auto cfg = config(true, 4);
  cfg->prefetch = 8;
  auto input = cfg->instantiate<Input>();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    auto it = input->make_iterator();
    if (i % 2) it->next();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(TextInputTest, ConfigRoundTripsThroughJsonAndInstantiates) {
  auto cfg = config(true, 4);
  cfg->seed = 11;
  cfg->with_segment_ids = true;
  const std::string debug = cfg->debug_string();
  EXPECT_NE(debug.find("klass: 'axlearn.data.text_input.Input'"), std::string::npos) << debug;
  EXPECT_NE(debug.find("max_len: 16"), std::string::npos) << debug;
  auto loaded = config_from_json_as<Input::Config>(cfg->to_json());
  EXPECT_TRUE(*loaded == *cfg);
  EXPECT_EQ(take(*loaded->instantiate<Input>()->make_iterator(), 2),
            take(*cfg->instantiate<Input>()->make_iterator(), 2));
}

// The corpus scripts/make_corpus builds (skipped when it has not been run for this build dir).
TEST(BuiltInCorpusTest, KjvEvalSplitPacksChapters) {
  const std::string eval_path = expand_data_path("{data_dir}/kjv/eval.txt");
  if (!fs::exists(eval_path)) GTEST_SKIP() << eval_path << " not built (run scripts/make_corpus)";
  auto cfg = Input::default_config();
  cfg->sources = std::vector<std::string>{"{data_dir}/kjv/eval.txt"};
  cfg->vocab = "{data_dir}/kjv/spm.model";
  cfg->max_len = 64;
  cfg->global_batch_size = 8;
  cfg->is_training = false;
  auto input = cfg->instantiate<Input>();
  const auto start = std::chrono::steady_clock::now();
  auto it = input->make_iterator();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ifstream in(eval_path);
  std::string first_chapter;
  std::getline(in, first_chapter);
  std::vector<std::string> chapters{first_chapter};
  for (std::string line; std::getline(in, line);) chapters.push_back(line);
  EXPECT_EQ(chapters.size(), 23u) << "every 50th of the 1189 chapters";
  std::cout << "[ KJV eval ] " << it->num_tokens() << " tokens in " << seconds << " s\n";
  EXPECT_GT(it->num_tokens(), 10000);
  const auto batch = it->next();
  const Rows ids = rows(*batch, "input_ids");
  std::vector<int32_t> first_rows;
  for (const auto& r : ids) first_rows.insert(first_rows.end(), r.begin(), r.end());
  const std::string text = input->tokenizer().decode(first_rows);
  EXPECT_EQ(text, first_chapter.substr(0, text.size()));
  EXPECT_GT(text.size(), 1000u);
}

}  // namespace
}  // namespace axlearn::data
