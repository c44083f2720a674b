// Checkpoints of sharded trees: every device writes its own blocks, the index lists them with
// their offsets, and any mesh (or one device) restores exactly the saved values; damaged or
// missing blocks are named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/sharding.h"
#include "axlearn/train/checkpointer.h"

namespace axlearn {
namespace {
namespace fs = std::filesystem;
using Json = nlohmann::json;

class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_sharded_ckpt_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The full values every test saves.
  static NestedTensor full_tree() {
    NestedTensor t;
    t["w"] = random::normal(random::key(1), {8, 6});
    t["b"] = random::normal(random::key(2), {6});
    t["step"] = scalar(7.0, int32);
    return t;
  }
  // The same tree placed on `mesh`: w split (data, model), b split over model, step replicated.
  static NestedTensor placed(const Mesh& mesh) {
    NestedTensor f = full_tree();
    NestedTensor t;
    t["w"] =
        dist::device_put(f.at("w").tensor(), dist::named_sharding(mesh, {{"data"}, {"model"}}, 2));
    t["b"] = dist::device_put(f.at("b").tensor(), dist::named_sharding(mesh, {{"model"}}, 1));
    t["step"] = f.at("step").tensor();
    return t;
  }
  void save_on_four_devices() {
    const Mesh mesh{{2, 2}, {"data", "model"}};
    dist::run_spmd(4, [&](int64_t) { save_checkpoint(dir_, 3, placed(mesh), "{\"k\": 1}"); });
  }
  std::string index_path() const { return checkpoint_step_dir(dir_, 3) + "/index.json"; }
  std::string dir_;
};

std::vector<float> values(const Tensor& t) { return astype(t, float32).to_vector<float>(); }

TEST_F(ShardedCheckpointTest, EachDeviceWritesItsBlocksAndTheIndexListsThem) {
  save_on_four_devices();
  std::ifstream in(index_path());
  Json idx = Json::parse(in);
  std::map<std::string, Json> by_path;
  for (const Json& e : idx["tensors"]) by_path[e["path"]] = e;
  ASSERT_EQ(by_path["w"]["shards"].size(), 4u);  // 2 x 2 blocks of (4, 3)
  ASSERT_EQ(by_path["b"]["shards"].size(), 2u);  // devices differing only in 'data' share one
  EXPECT_TRUE(by_path["step"].contains("file"));
  std::set<std::vector<int64_t>> starts;
  for (const Json& b : by_path["w"]["shards"]) {
    EXPECT_EQ(b["shape"].get<std::vector<int64_t>>(), (std::vector<int64_t>{4, 3}));
    starts.insert(b["start"].get<std::vector<int64_t>>());
  }
  EXPECT_EQ(starts, (std::set<std::vector<int64_t>>{{0, 0}, {0, 3}, {4, 0}, {4, 3}}));
  EXPECT_EQ(idx["extra"]["k"], 1);
  EXPECT_EQ(latest_step(dir_), 3);
}

TEST_F(ShardedCheckpointTest, RestoresOnAnotherMeshAndOnOneDevice) {
  save_on_four_devices();
  const NestedTensor want = full_tree();
  // One device, no mesh: the blocks are assembled.
  RestoredCheckpoint one = restore_checkpoint(dir_, 3, want);
  for (const char* k : {"w", "b", "step"}) {
    EXPECT_EQ(values(one.tree.at(k).tensor()), values(want.at(k).tensor())) << k;
  }
  // Two devices split the other way: each reads the parts of the saved blocks it needs.
  const Mesh two{{2}, {"model"}};
  std::atomic<int> bad{0};
  dist::run_spmd(2, [&](int64_t) {
    NestedTensor like;
    like["w"] = dist::device_put(zeros({8, 6}), dist::named_sharding(two, {{}, {"model"}}, 2));
    like["b"] = dist::device_put(zeros({6}), dist::named_sharding(two, {{"model"}}, 1));
    like["step"] = scalar(0.0, int32);
    RestoredCheckpoint r = restore_checkpoint(dir_, 3, like);
    if (r.tree.at("w").tensor().local().shape() != Shape{8, 3}) ++bad;
    for (const char* k : {"w", "b", "step"}) {
      if (values(r.tree.at(k).tensor()) != values(want.at(k).tensor())) ++bad;
    }
  });
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(ShardedCheckpointTest, DamagedOrMissingBlocksAreNamed) {
  save_on_four_devices();
  std::ifstream in(index_path());
  Json idx = Json::parse(in);
  in.close();
  Json w;
  for (const Json& e : idx["tensors"]) {
    if (e["path"] == "w") w = e;
  }
  // Flip a byte of one block.
  const std::string block = w["shards"][1]["file"];
  const std::string file = checkpoint_step_dir(dir_, 3) + "/" + block;
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    char c;
    f.seekg(5);
    f.get(c);
    f.seekp(5);
    f.put(char(c ^ 0x40));
  }
  try {
    restore_checkpoint(dir_, 3, full_tree());
    FAIL() << "expected a checksum error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(block), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  // Drop a block from the index.
  for (Json& e : idx["tensors"]) {
    if (e["path"] == "w") e["shards"].erase(1);
  }
  std::ofstream(index_path()) << idx.dump();
  try {
    restore_checkpoint(dir_, 3, full_tree());
    FAIL() << "expected a coverage error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cover"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace axlearn
