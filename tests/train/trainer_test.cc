// SpmdTrainer end to end on fuji-test (the built-in corpus, written by scripts/setup): the loss
// falls, resume is bitwise exact, NaN stops with the last good checkpoint kept, corrupted
// checkpoints are named, metrics.jsonl and TensorBoard files are written, and evaluation works.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "axlearn/core/ops.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/train/trainer.h"

namespace axlearn::train {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::json;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_trainer_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // fuji-test logging every step.
  ConfigPtr<SpmdTrainer::Config> config(const std::string& dir) const {
    auto cfg = experiments::trainer_config("fuji-test");
    cfg->dir = dir;
    cfg->log_every_n_steps = 1;
    return cfg;
  }
  static std::vector<Json> read_jsonl(const std::string& path) {
    std::vector<Json> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) out.push_back(Json::parse(line));
    return out;
  }
  // step -> loss of the training records.
  static std::map<int64_t, double> losses(const std::string& dir) {
    std::map<int64_t, double> out;
    for (const Json& j : read_jsonl(dir + "/metrics.jsonl")) {
      if (j.contains("loss")) out[j["step"].get<int64_t>()] = j["loss"].get<double>();
    }
    return out;
  }
  std::string dir_;
};

void expect_bitwise_equal(const NestedTensor& a, const NestedTensor& b) {
  auto fa = a.flatten_with_paths(), fb = b.flatten_with_paths();
  ASSERT_EQ(fa.size(), fb.size());
  for (size_t i = 0; i < fa.size(); ++i) {
    ASSERT_EQ(fa[i].first, fb[i].first);
    std::vector<float> va = astype(fa[i].second, float32).to_vector<float>();
    std::vector<float> vb = astype(fb[i].second, float32).to_vector<float>();
    ASSERT_EQ(va.size(), vb.size()) << fa[i].first;
    EXPECT_EQ(std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)), 0) << fa[i].first;
  }
}

TEST_F(TrainerTest, FujiTestLossFallsOverThirtySteps) {
  auto trainer = config(dir_)->instantiate<SpmdTrainer>(nullptr);
  TrainResult r = trainer->run();
  EXPECT_EQ(r.step, 30);
  auto l = losses(dir_);
  ASSERT_EQ(l.size(), 30u);
  double first = 0, last = 0;
  for (int s = 1; s <= 5; ++s) first += l[s] / 5;
  for (int s = 26; s <= 30; ++s) last += l[s] / 5;
  // Uniform guessing over 4096 tokens is ln(4096) = 8.32 nats; 30 steps must clearly learn.
  EXPECT_NEAR(first, std::log(4096.0), 0.5);
  EXPECT_LT(last, first - 1.0) << "first " << first << " last " << last;
  // The final evaluation ran and is finite and consistent.
  ASSERT_TRUE(r.last_eval.count("validation"));
  const EvalMetrics& m = r.last_eval.at("validation");
  EXPECT_TRUE(std::isfinite(m.at("loss")));
  EXPECT_NEAR(m.at("perplexity"), std::exp(m.at("cross_entropy")), 1e-6 * m.at("perplexity"));
  EXPECT_GT(m.at("num_tokens"), 0);
  // Records carry the documented fields; TensorBoard files exist for train and eval.
  auto records = read_jsonl(dir_ + "/metrics.jsonl");
  for (const char* key : {"step", "loss", "learning_rate", "grad_norm", "tokens_per_s"}) {
    EXPECT_TRUE(records.front().contains(key)) << key;
  }
  bool has_eval = false;
  for (const Json& j : records) has_eval = has_eval || j.contains("eval");
  EXPECT_TRUE(has_eval);
  for (const char* sub : {"/summaries/train", "/summaries/eval_validation"}) {
    ASSERT_TRUE(fs::exists(dir_ + sub)) << sub;
    EXPECT_FALSE(fs::is_empty(dir_ + sub)) << sub;
  }
  EXPECT_TRUE(fs::exists(dir_ + "/trainer_config.json"));
  EXPECT_EQ(latest_step(dir_), 30);
}

TEST_F(TrainerTest, ResumeIsBitwiseExact) {
  // Uninterrupted 20 steps.
  const std::string straight = dir_ + "/straight", resumed = dir_ + "/resumed";
  auto cfg = config(straight);
  cfg->max_step = 20;
  auto a = cfg->instantiate<SpmdTrainer>(nullptr);
  a->run();
  // 10 steps, a fresh trainer (as a new process would build), then on to 20.
  auto cfg10 = config(resumed);
  cfg10->max_step = 10;
  cfg10->instantiate<SpmdTrainer>(nullptr)->run();
  EXPECT_EQ(latest_step(resumed), 10);
  auto cfg20 = config(resumed);
  cfg20->max_step = 20;
  auto b = cfg20->instantiate<SpmdTrainer>(nullptr);
  b->run();

  auto la = losses(straight), lb = losses(resumed);
  ASSERT_EQ(la.size(), 20u);
  ASSERT_EQ(lb.size(), 20u);
  for (int s = 1; s <= 20; ++s) EXPECT_EQ(la[s], lb[s]) << "step " << s;
  expect_bitwise_equal(a->params(), b->params());
}

TEST_F(TrainerTest, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  auto cfg = config(dir_);
  cfg->checkpointer->save_policy->set("n", 1);
  // A learning rate this large sends the weights to infinity within a few steps.
  apply_override(*cfg, "learner.optimizer.args[1].learning_rate=1e30");
  apply_override(*cfg, "learner.optimizer.args[0].max_norm=None");
  auto trainer = cfg->instantiate<SpmdTrainer>(nullptr);
  std::string err;
  try {
    trainer->run();
  } catch (const Error& e) {
    err = e.what();
  }
  ASSERT_NE(err.find("the loss is"), std::string::npos) << err;
  std::optional<int64_t> good = latest_step(dir_);
  ASSERT_TRUE(good.has_value()) << err;
  EXPECT_NE(err.find("last good checkpoint is step " + std::to_string(*good)), std::string::npos)
      << err;
  // The last good step restores and holds finite parameters.
  auto restore_cfg = config(dir_);
  restore_cfg->max_step = *good;
  auto restored = restore_cfg->instantiate<SpmdTrainer>(nullptr);
  EXPECT_EQ(restored->run().step, *good);
  for (const Tensor& t : restored->params().leaves()) {
    EXPECT_TRUE(all(isfinite(t)).item<bool>());
  }
}

TEST_F(TrainerTest, CorruptedTensorFileIsNamedOnResume) {
  auto cfg = config(dir_);
  cfg->max_step = 3;
  cfg->instantiate<SpmdTrainer>(nullptr)->run();
  // Flip one byte in the middle of the largest tensor file of the last step.
  fs::path victim;
  uintmax_t biggest = 0;
  for (const auto& e : fs::directory_iterator(checkpoint_step_dir(dir_, 3))) {
    if (e.path().filename() != "index.json" && e.file_size() > biggest) {
      biggest = e.file_size();
      victim = e.path();
    }
  }
  ASSERT_GT(biggest, 0u);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(biggest / 2));
    char c = 0;
    f.seekg(static_cast<std::streamoff>(biggest / 2));
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(static_cast<std::streamoff>(biggest / 2));
    f.write(&c, 1);
  }
  auto again = config(dir_);
  again->max_step = 5;
  std::string err;
  try {
    again->instantiate<SpmdTrainer>(nullptr)->run();
  } catch (const Error& e) {
    err = e.what();
  }
  EXPECT_NE(err.find(victim.filename().string()), std::string::npos) << err;
  EXPECT_NE(err.find("checksum"), std::string::npos) << err;
}

TEST_F(TrainerTest, EvaluateRestoresTheLatestCheckpoint) {
  auto cfg = config(dir_);
  cfg->max_step = 5;
  TrainResult r = cfg->instantiate<SpmdTrainer>(nullptr)->run();
  ASSERT_TRUE(r.last_eval.count("validation"));
  // A fresh trainer evaluating step 5 sees exactly the numbers of the end of training.
  auto evals = config(dir_)->instantiate<SpmdTrainer>(nullptr)->evaluate();
  EXPECT_EQ(evals.at("validation").at("loss"), r.last_eval.at("validation").at("loss"));
  EXPECT_EQ(evals.at("validation").at("num_tokens"), r.last_eval.at("validation").at("num_tokens"));
}

TEST_F(TrainerTest, BadConfigsAreErrorsNamingTheField) {
  auto cfg = config(dir_);
  cfg->mesh_shape = std::vector<int64_t>{1, 1, 1, 2, 1, 1};
  EXPECT_THROW(cfg->instantiate<SpmdTrainer>(nullptr), Error);
  auto missing = experiments::trainer_config("fuji-test");  // no dir
  try {
    missing->instantiate<SpmdTrainer>(nullptr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dir"), std::string::npos) << e.what();
  }
  EXPECT_THROW(experiments::trainer_config("fuji-tset"), Error);
}

}  // namespace
}  // namespace axlearn::train
