// Checkpointer: bit-exact round trips for every dtype, commit-by-index semantics under simulated
// crashes (including SIGKILL mid-save), validation errors naming tensor and file, GC policy.
#include "axlearn/train/checkpointer.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn {
namespace {
namespace fs = std::filesystem;

ConfigPtr<Checkpointer::Config> make_checkpointer_config(const std::string& dir, int64_t keep_last_n,
                                                        int64_t keep_every_n_steps) {
  auto cfg = Checkpointer::default_config();
  cfg->dir = dir;
  cfg->keep_last_n = keep_last_n;
  cfg->keep_every_n_steps = keep_every_n_steps;
  return cfg;
}

class CheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_ckpt_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

// A tensor whose bytes are random (NaN payloads, -0 and denormals included); bools are 0/1.
Tensor random_tensor(const Shape& shape, Dtype dtype, std::mt19937& rng) {
  const size_t n = size_t(num_elements(shape)) * size_of(dtype);
  std::vector<unsigned char> bytes(n);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  if (dtype == Dtype::kBool) {
    for (auto& b : bytes) b &= 1;
  }
  return from_buffer(bytes.data(), shape, dtype);
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  Array a = contiguous(t.array());
  const auto* p = static_cast<const unsigned char*>(a.raw());
  return std::vector<unsigned char>(p, p + a.nbytes());
}

NestedTensor all_dtypes_tree(std::mt19937& rng) {
  NestedTensor tree;
  const Dtype dtypes[] = {float32, bfloat16, float16, float64, int32, int64, uint8, uint32, bool_};
  int i = 0;
  for (Dtype d : dtypes) {
    tree["by_dtype"][dtype_name(d)] = random_tensor({3, 5 + i++}, d, rng);
  }
  tree["decoder"]["emb"]["weight"] = random_tensor({7, 4}, float32, rng);
  tree["scalar"] = random_tensor({}, int64, rng);
  tree["empty"] = random_tensor({0, 3}, float32, rng);
  return tree;
}

// Leaves as placeholders: restore needs only shapes and dtypes.
NestedTensor like(const NestedTensor& tree) {
  return tree.map([](const Tensor& t) { return Tensor::placeholder(t.shape(), t.dtype()); });
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string file_of(const std::string& dir, int64_t step, const std::string& path) {
  std::ifstream in(checkpoint_step_dir(dir, step) + "/index.json");
  auto idx = nlohmann::json::parse(in);
  for (const auto& e : idx["tensors"]) {
    if (e["path"] == path) return e["file"];
  }
  return "";
}

TEST_F(CheckpointerTest, RoundTripIsBitExactForAllDtypes) {
  std::mt19937 rng(1);
  NestedTensor tree = all_dtypes_tree(rng);
  save_checkpoint(dir_, 42, tree, R"({"iterator": {"epoch": 3, "offset": 1234}})");
  ASSERT_EQ(latest_step(dir_), 42);
  EXPECT_TRUE(fs::is_directory(dir_ + "/checkpoints/step_00000042"));

  RestoredCheckpoint r = restore_checkpoint(dir_, 42, like(tree));
  EXPECT_EQ(r.step, 42);
  auto want = tree.flatten_with_paths();
  auto got = r.tree.flatten_with_paths();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(want[i].first);
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.dtype(), want[i].second.dtype());
    EXPECT_EQ(got[i].second.shape(), want[i].second.shape());
    EXPECT_EQ(bytes_of(got[i].second), bytes_of(want[i].second));
  }
  auto extra = nlohmann::json::parse(r.extra_json);
  EXPECT_EQ(extra["iterator"]["epoch"], 3);
  EXPECT_EQ(extra["iterator"]["offset"], 1234);
}

TEST_F(CheckpointerTest, StridedTensorIsSavedInLogicalOrder) {
  Tensor t = array(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  NestedTensor tree{{"w", transpose(t)}};
  save_checkpoint(dir_, 1, tree);
  auto r = restore_checkpoint(dir_, 1, like(tree));
  EXPECT_EQ(r.tree.at("w").tensor().shape(), (Shape{3, 2}));
  EXPECT_EQ(r.tree.at("w").tensor().to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(r.extra_json, "null");
}

TEST_F(CheckpointerTest, StepWithoutIndexIsIgnored) {
  std::mt19937 rng(2);
  NestedTensor tree{{"a", random_tensor({4}, float32, rng)}};
  save_checkpoint(dir_, 1, tree);
  save_checkpoint(dir_, 2, tree);
  // A crash before the index rename: tensor files and the temp index, no index.json.
  fs::remove(checkpoint_step_dir(dir_, 2) + "/index.json");
  fs::create_directories(checkpoint_step_dir(dir_, 3));
  std::ofstream(checkpoint_step_dir(dir_, 3) + "/index.json.tmp") << "{\"trunc";
  EXPECT_EQ(latest_step(dir_), 1);
  EXPECT_EQ(committed_steps(dir_), (std::vector<int64_t>{1}));
  std::string err = error_of([&] { restore_checkpoint(dir_, 2, like(tree)); });
  EXPECT_NE(err.find("not committed"), std::string::npos) << err;
  EXPECT_NO_THROW(restore_checkpoint(dir_, 1, like(tree)));
}

TEST_F(CheckpointerTest, NoCheckpointsMeansNoLatestStep) {
  EXPECT_EQ(latest_step(dir_), std::nullopt);
  Checkpointer ckpt(*make_checkpointer_config(dir_, 2, 0));
  EXPECT_EQ(ckpt.restore_latest(NestedTensor{}), std::nullopt);
}

TEST_F(CheckpointerTest, CorruptedByteIsDetectedAndNamed) {
  std::mt19937 rng(3);
  NestedTensor tree{{"decoder", {{"w", random_tensor({16, 8}, float32, rng)}}},
                    {"other", random_tensor({3}, int32, rng)}};
  save_checkpoint(dir_, 5, tree);
  const std::string file = file_of(dir_, 5, "decoder/w");
  ASSERT_FALSE(file.empty());
  const std::string full = checkpoint_step_dir(dir_, 5) + "/" + file;
  {
    std::fstream f(full, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.get(c);
    f.seekp(100);
    f.put(char(c ^ 0x10));
  }
  std::string err = error_of([&] { restore_checkpoint(dir_, 5, like(tree)); });
  EXPECT_NE(err.find("'decoder/w'"), std::string::npos) << err;
  EXPECT_NE(err.find(file), std::string::npos) << err;
  EXPECT_NE(err.find("checksum"), std::string::npos) << err;
}

TEST_F(CheckpointerTest, TruncatedFileIsDetectedAndNamed) {
  std::mt19937 rng(4);
  NestedTensor tree{{"w", random_tensor({10}, float64, rng)}};
  save_checkpoint(dir_, 7, tree);
  const std::string full = checkpoint_step_dir(dir_, 7) + "/" + file_of(dir_, 7, "w");
  fs::resize_file(full, 33);
  std::string err = error_of([&] { restore_checkpoint(dir_, 7, like(tree)); });
  EXPECT_NE(err.find("'w'"), std::string::npos) << err;
  EXPECT_NE(err.find(full), std::string::npos) << err;
  EXPECT_NE(err.find("truncated: 33 of 80 bytes"), std::string::npos) << err;
  fs::remove(full);
  err = error_of([&] { restore_checkpoint(dir_, 7, like(tree)); });
  EXPECT_NE(err.find(full), std::string::npos) << err;
}

TEST_F(CheckpointerTest, MissingAndUnexpectedTensorsAreNamed) {
  std::mt19937 rng(5);
  NestedTensor tree{{"a", random_tensor({2}, float32, rng)},
                    {"b", random_tensor({2}, float32, rng)}};
  save_checkpoint(dir_, 1, tree);
  NestedTensor more = like(tree);
  more["c"]["d"] = Tensor::placeholder({2}, float32);
  std::string err = error_of([&] { restore_checkpoint(dir_, 1, more); });
  EXPECT_NE(err.find("lacks tensors 'c/d'"), std::string::npos) << err;
  NestedTensor fewer{{"a", Tensor::placeholder({2}, float32)}};
  err = error_of([&] { restore_checkpoint(dir_, 1, fewer); });
  EXPECT_NE(err.find("not in the model: 'b'"), std::string::npos) << err;
}

TEST_F(CheckpointerTest, ShapeAndDtypeMismatchesAreNamed) {
  std::mt19937 rng(6);
  NestedTensor tree{{"layer", {{"w", random_tensor({2, 3}, float32, rng)}}}};
  save_checkpoint(dir_, 1, tree);
  NestedTensor wrong_shape{{"layer", {{"w", Tensor::placeholder({3, 2}, float32)}}}};
  std::string err = error_of([&] { restore_checkpoint(dir_, 1, wrong_shape); });
  EXPECT_NE(err.find("'layer/w'"), std::string::npos) << err;
  EXPECT_NE(err.find("shape (2, 3) but the model expects (3, 2)"), std::string::npos) << err;
  NestedTensor wrong_dtype{{"layer", {{"w", Tensor::placeholder({2, 3}, bfloat16)}}}};
  err = error_of([&] { restore_checkpoint(dir_, 1, wrong_dtype); });
  EXPECT_NE(err.find("dtype float32 but the model expects bfloat16"), std::string::npos) << err;
}

TEST_F(CheckpointerTest, GarbageCollectionKeepsLastNAndEveryN) {
  std::mt19937 rng(7);
  NestedTensor tree{{"a", random_tensor({2}, float32, rng)}};
  Checkpointer ckpt(*make_checkpointer_config(dir_, /*keep_last_n=*/2, /*keep_every_n_steps=*/4));
  for (int64_t s = 0; s <= 10; ++s) ckpt.save(s, tree);
  // Reference: keep a step if it is among the 2 newest or a multiple of 4.
  std::vector<int64_t> want;
  for (int64_t s = 0; s <= 10; ++s) {
    if (s >= 9 || s % 4 == 0) want.push_back(s);
  }
  EXPECT_EQ(committed_steps(dir_), want);
  size_t folders = 0;
  for (const auto& e : fs::directory_iterator(dir_ + "/checkpoints")) folders += e.is_directory();
  EXPECT_EQ(folders, want.size());
  EXPECT_EQ(ckpt.restore_latest(like(tree))->step, 10);
}

TEST_F(CheckpointerTest, GarbageCollectionRemovesOldIncompleteSteps) {
  std::mt19937 rng(8);
  NestedTensor tree{{"a", random_tensor({2}, float32, rng)}};
  save_checkpoint(dir_, 3, tree);
  fs::create_directories(checkpoint_step_dir(dir_, 1));  // an interrupted older save
  save_checkpoint(dir_, 5, tree);
  auto removed = garbage_collect_checkpoints(dir_, 1);
  EXPECT_EQ(removed, (std::vector<int64_t>{1, 3}));
  EXPECT_FALSE(fs::exists(checkpoint_step_dir(dir_, 1)));
  EXPECT_EQ(committed_steps(dir_), (std::vector<int64_t>{5}));
}

TEST_F(CheckpointerTest, ResavingAStepReplacesIt) {
  NestedTensor first{{"a", array(std::vector<float>{1, 2}, {2})}, {"old", zeros({1})}};
  NestedTensor second{{"a", array(std::vector<float>{3, 4}, {2})}};
  save_checkpoint(dir_, 1, first);
  save_checkpoint(dir_, 1, second);
  auto r = restore_checkpoint(dir_, 1, like(second));
  EXPECT_EQ(r.tree.at("a").tensor().to_vector<float>(), (std::vector<float>{3, 4}));
}

TEST_F(CheckpointerTest, BadInputsThrowErrorsNotCrashes) {
  NestedTensor tree{{"a", zeros({2})}};
  EXPECT_THROW(save_checkpoint(dir_, 1, tree, "{not json"), Error);
  EXPECT_THROW(save_checkpoint(dir_, -1, tree), Error);
  EXPECT_THROW(restore_checkpoint(dir_, 9, like(tree)), Error);
  EXPECT_THROW(Checkpointer(*make_checkpointer_config(dir_, 0, 0)), Error);
  EXPECT_THROW(Checkpointer(*make_checkpointer_config("", 1, 0)), Error);
  EXPECT_THROW(garbage_collect_checkpoints(dir_, 1, -2), Error);

  save_checkpoint(dir_, 2, tree);
  const std::string index = checkpoint_step_dir(dir_, 2) + "/index.json";
  auto write_index = [&](const std::string& text) { std::ofstream(index) << text; };
  const char* bad_indexes[] = {
      "garbage",
      "[]",
      R"({"format": "axlearn-checkpoint-v1", "tensors": 3})",
      R"({"format": "axlearn-checkpoint-v1", "tensors": [{"path": "a"}]})",
      R"({"format": "axlearn-checkpoint-v1", "tensors": [{"path": "a", "file": "../../x",
          "shape": [2], "dtype": "float32", "nbytes": 8, "crc32c": "0"}]})",
      R"({"format": "axlearn-checkpoint-v1", "tensors": [{"path": "a", "file": "t_000000.bin",
          "shape": [2], "dtype": "complex64", "nbytes": 8, "crc32c": "0"}]})",
      R"({"format": "axlearn-checkpoint-v1", "tensors": [{"path": "a", "file": "t_000000.bin",
          "shape": [2], "dtype": "float32", "nbytes": 12, "crc32c": "0"}]})",
      R"({"format": "axlearn-checkpoint-v1", "tensors": [{"path": "a", "file": "t_000000.bin",
          "shape": [-2], "dtype": "float32", "nbytes": 8, "crc32c": "0"}]})",
  };
  for (const char* text : bad_indexes) {
    SCOPED_TRACE(text);
    write_index(text);
    std::string err = error_of([&] { restore_checkpoint(dir_, 2, like(tree)); });
    EXPECT_NE(err.find("checkpoint:"), std::string::npos) << err;
  }
}

// A child process saves steps in a loop and is SIGKILLed at a random moment; whatever it left
// behind, the newest committed step must restore, and every committed step must be intact.
TEST_F(CheckpointerTest, SigkillDuringSaveNeverLeavesABrokenCommittedStep) {
  std::mt19937 rng(9);
  NestedTensor tree;
  for (char c = '0'; c < '8'; ++c)
    tree[std::string("p") + c] = random_tensor({64, 64}, float32, rng);
  for (const auto& [p, t] : tree.flatten_with_paths()) t.eval();
  save_checkpoint(dir_, 0, tree);  // the committed step a killed save must fall back to
  int64_t next_step = 1;
  int64_t newest = 0;
  for (int round = 0; round < 8; ++round) {
    const int64_t first = next_step;
    next_step += 1000;
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        for (int64_t s = first;; ++s) save_checkpoint(dir_, s, tree, R"({"s": 1})");
      } catch (...) {
      }
      ::_exit(1);
    }
    ::usleep(useconds_t(1000 + rng() % 150000));  // saves take tens of ms: hit any phase
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child exited on its own";
    for (int64_t s : committed_steps(dir_)) {
      SCOPED_TRACE(s);
      auto r = restore_checkpoint(dir_, s, like(tree));
      EXPECT_EQ(bytes_of(r.tree.at("p7").tensor()), bytes_of(tree.at("p7").tensor()));
    }
    auto latest = latest_step(dir_);
    ASSERT_TRUE(latest.has_value());
    EXPECT_GE(*latest, newest);
    newest = *latest;
    garbage_collect_checkpoints(dir_, 2);
  }
}

}  // namespace
}  // namespace axlearn
