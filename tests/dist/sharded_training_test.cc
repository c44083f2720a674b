// Global-view training on virtual devices: fuji-test trained under data parallelism, FSDP, tensor
// parallelism, sequence parallelism and their mixes, by mesh_shape alone, gives the losses and
// parameters of the single-device run; FSDP stores 1/N of the state per device; a checkpoint
// saved on one mesh restores on another.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "axlearn/core/ops.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/sharding.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/train/checkpointer.h"
#include "axlearn/train/trainer.h"

namespace axlearn::train {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int64_t kSteps = 10;

class ShardedTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = (fs::temp_directory_path() /
             ("axlearn_sharded_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(base_);
  }
  void TearDown() override { fs::remove_all(base_); }

  ConfigPtr<SpmdTrainer::Config> config(const std::string& dir,
                                        const std::vector<int64_t>& mesh) const {
    auto cfg = experiments::trainer_config("fuji-test");
    cfg->dir = dir;
    cfg->max_step = kSteps;
    cfg->log_every_n_steps = 1;
    cfg->evalers = {};
    cfg->mesh_shape = mesh;
    return cfg;
  }

  // Trains on `devices` virtual devices (one device: no mesh).
  void train(const SpmdTrainer::Config& cfg, int64_t devices) {
    std::mutex mu;
    dist::run_spmd(devices, [&](int64_t) {
      std::unique_ptr<SpmdTrainer> t;
      {
        std::lock_guard<std::mutex> lock(mu);
        t = cfg.instantiate<SpmdTrainer>(nullptr);
      }
      t->run();
    });
  }

  static std::map<int64_t, double> losses(const std::string& dir) {
    std::map<int64_t, double> out;
    std::ifstream in(dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      Json j = Json::parse(line);
      if (j.contains("loss")) out[j["step"].get<int64_t>()] = j["loss"].get<double>();
    }
    return out;
  }

  static NestedTensor final_state(const std::string& dir, const SpmdTrainer::Config& cfg) {
    auto single = cfg.clone();
    single->mesh_shape = std::vector<int64_t>(cfg.mesh_shape.get().size(), 1);
    auto t = single->instantiate<SpmdTrainer>(nullptr);
    auto ckpt = Checkpointer::default_config();
    ckpt->dir = dir;
    auto c = ckpt->instantiate<Checkpointer>();
    return c->restore(kSteps, t->init_state()).tree;
  }

  std::string base_;
};

struct Strategy {
  const char* name;
  std::vector<int64_t> mesh;  // (pipeline, data, expert, fsdp, seq, model)
};

TEST_F(ShardedTrainingTest, EveryStrategyMatchesOneDevice) {
  const std::string ref_dir = base_ + "/single";
  auto ref_cfg = config(ref_dir, {1, 1, 1, 1, 1, 1});
  train(*ref_cfg, 1);
  const auto ref_losses = losses(ref_dir);
  ASSERT_EQ(ref_losses.size(), size_t(kSteps));
  const NestedTensor ref_state = final_state(ref_dir, *ref_cfg);

  const std::vector<Strategy> strategies = {
      {"data", {1, 4, 1, 1, 1, 1}},       {"fsdp", {1, 1, 1, 4, 1, 1}},
      {"model", {1, 1, 1, 1, 1, 2}},      {"data_fsdp", {1, 2, 1, 2, 1, 1}},
      {"data_model", {1, 2, 1, 1, 1, 2}}, {"fsdp_model", {1, 1, 1, 2, 1, 2}},
      {"data_seq", {1, 2, 1, 1, 2, 1}},
  };
  for (const Strategy& s : strategies) {
    SCOPED_TRACE(s.name);
    const std::string dir = base_ + "/" + s.name;
    auto cfg = config(dir, s.mesh);
    int64_t devices = 1;
    for (int64_t d : s.mesh) devices *= d;
    train(*cfg, devices);
    const auto l = losses(dir);
    ASSERT_EQ(l.size(), size_t(kSteps));
    for (const auto& [step, loss] : l) {
      EXPECT_NEAR(loss, ref_losses.at(step), 1e-5 * std::abs(ref_losses.at(step)))
          << "step " << step;
    }
    const NestedTensor state = final_state(dir, *cfg);
    auto a = state.at("model").flatten_with_paths();
    auto b = ref_state.at("model").flatten_with_paths();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      // Adam divides by the gradient's own scale, so compare against the tensor's scale.
      std::vector<float> va = a[i].second.to_vector<float>(), vb = b[i].second.to_vector<float>();
      double diff = 0, scale = 0;
      for (size_t k = 0; k < va.size(); ++k) {
        diff = std::max(diff, double(std::abs(va[k] - vb[k])));
        scale = std::max(scale, double(std::abs(vb[k])));
      }
      EXPECT_LT(diff, 1e-3 * scale) << a[i].first;
    }
  }
}

TEST_F(ShardedTrainingTest, FsdpStoresOneNthOfTheStatePerDevice) {
  auto cfg = config(base_ + "/unused", {1, 1, 1, 4, 1, 1});
  std::atomic<int64_t> total{0};
  std::vector<int64_t> per_device(4, 0);
  std::mutex mu;
  dist::run_spmd(4, [&](int64_t rank) {
    std::unique_ptr<SpmdTrainer> t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = cfg->instantiate<SpmdTrainer>(nullptr);
    }
    NestedTensor state = t->init_state();
    int64_t mine = 0, all = 0;
    for (const char* key : {"model", "learner"}) {
      for (const Tensor& x : state.at(key).leaves()) {
        mine += int64_t(x.local().nbytes());
        all += int64_t(x.nbytes());
      }
    }
    per_device[size_t(rank)] = mine;
    if (rank == 0) {
      for (const auto& [path, x] : state.flatten_with_paths()) {
        if (x.size() >= 1024 && x.local().size() == x.size()) ADD_FAILURE() << path << " is whole";
      }
    }
    if (rank == 0) total = all;
  });
  for (int64_t b : per_device) {
    EXPECT_NEAR(double(b), double(total) / 4, 0.03 * double(total) / 4)
        << "device holds " << b << " of " << total.load() << " bytes";
  }
}

TEST_F(ShardedTrainingTest, CheckpointFromOneMeshRestoresOnAnother) {
  const std::string dir = base_ + "/run";
  auto fsdp = config(dir, {1, 1, 1, 4, 1, 1});
  train(*fsdp, 4);
  const NestedTensor saved = final_state(dir, *fsdp);
  // The same run restored under 2-way tensor parallelism: nothing left to train, the restored
  // (sharded) parameters gathered back must equal what was saved, bit for bit.
  auto tp = config(dir, {1, 1, 1, 1, 1, 2});
  std::atomic<int> bad{0};
  std::mutex mu;
  dist::run_spmd(2, [&](int64_t) {
    std::unique_ptr<SpmdTrainer> t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = tp->instantiate<SpmdTrainer>(nullptr);
    }
    t->run();
    auto got = t->params().flatten_with_paths();
    auto want = saved.at("model").flatten_with_paths();
    for (size_t i = 0; i < got.size(); ++i) {
      std::vector<float> a = got[i].second.to_vector<float>(),
                         b = want[i].second.to_vector<float>();
      if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) {
        ++bad;
      }
    }
    const auto& wq = t->param_shardings();
    if (wq.empty()) ++bad;
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(ShardedTrainingTest, MeshThatDoesNotFitTheDevicesIsAnError) {
  auto cfg = config(base_ + "/bad", {1, 2, 1, 2, 1, 1});
  try {
    dist::run_spmd(2, [&](int64_t) { cfg->instantiate<SpmdTrainer>(nullptr); });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 4 devices"), std::string::npos) << e.what();
  }
}

TEST_F(ShardedTrainingTest, MeshRulesPickTheLayoutBySelector) {
  auto cfg = config(base_ + "/rules", {1, 1, 1, 1, 1, 1});
  EXPECT_EQ(apply_mesh_rules(*cfg, "cpu"), std::optional<std::string>("cpu(-.*)?"));
  EXPECT_EQ(cfg->mesh_shape.get(), (std::vector<int64_t>{1, 1, 1, -1, 1, 1}));
  EXPECT_TRUE(apply_mesh_rules(*cfg, "gpu-p5.48xlarge-256").has_value());
  EXPECT_EQ(cfg->mesh_shape.get(), (std::vector<int64_t>{1, -1, 1, 8, 1, 1}));
  // No rule: nothing changes. A selector must match whole.
  EXPECT_FALSE(apply_mesh_rules(*cfg, "tpu-v5litepod-32").has_value());
  EXPECT_FALSE(apply_mesh_rules(*cfg, "xcpu").has_value());
  EXPECT_EQ(cfg->mesh_shape.get(), (std::vector<int64_t>{1, -1, 1, 8, 1, 1}));
  cfg->mesh_rules = OrderedDict<std::vector<std::string>>{{"gpu-(", {"mesh_shape=[1]"}}};
  EXPECT_THROW(apply_mesh_rules(*cfg, "gpu"), Error);
  cfg->mesh_rules = OrderedDict<std::vector<std::string>>{{"cpu", {"mesh_shap=[1]"}}};
  try {
    apply_mesh_rules(*cfg, "cpu");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mesh_rules['cpu']"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace axlearn::train
