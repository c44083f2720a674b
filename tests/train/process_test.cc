// The `axlearn train` process under signals: SIGKILL at random moments never leaves a step that
// looks committed but fails to restore, and a killed run resumes; SIGTERM saves and exits 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "axlearn/experiments/experiments.h"
#include "axlearn/train/trainer.h"

extern char** environ;

namespace axlearn::train {
namespace {
namespace fs = std::filesystem;

// Starts `axlearn args...` with stdout and stderr sent to `log`.
pid_t spawn_axlearn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv_s{AXLEARN_CLI};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, AXLEARN_CLI, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) ADD_FAILURE() << "cannot start " << AXLEARN_CLI << ": " << std::strerror(rc);
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("axlearn_process_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

// Restores `step` of the trainer dir the way a resuming run does (model, learner, PRNG key and
// input position), by a trainer whose max_step is that step.
void expect_restorable(const std::string& trainer_dir, int64_t step) {
  auto cfg = experiments::trainer_config("fuji-test");
  cfg->dir = trainer_dir;
  cfg->max_step = step;
  auto trainer = cfg->instantiate<SpmdTrainer>(nullptr);
  EXPECT_EQ(trainer->run().step, step);
}

TEST_F(ProcessTest, SigkillWhileSavingNeverLeavesABrokenCommittedStep) {
  const std::string trainer_dir = dir_ + "/run", log = dir_ + "/log.txt";
  const std::vector<std::string> args{"train",   "--config",  "fuji-test", "--trainer_dir",
                                      trainer_dir, "--max_step", "100000",  "--set",
                                      "checkpointer.save_policy.n=1", "--set",
                                      "log_every_n_steps=1000"};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> delay_ms(0, 400);
  int64_t previous = 0;
  for (int round = 0; round < 6; ++round) {
    const pid_t pid = spawn_axlearn(args, log);
    ASSERT_GT(pid, 0);
    // Once this run has committed a step of its own (however long start-up takes on a loaded
    // machine), kill it at a random moment: it saves every step, so mostly while saving.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline &&
           latest_step(trainer_dir).value_or(0) <= previous) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(pid, SIGKILL);
    EXPECT_EQ(wait_exit(pid), 128 + SIGKILL) << read_file(log);
    std::optional<int64_t> latest = latest_step(trainer_dir);
    if (!latest) continue;  // killed before the first save completed
    EXPECT_GE(*latest, previous) << "a committed step went missing";
    previous = *latest;
    expect_restorable(trainer_dir, *latest);
  }
  EXPECT_GT(previous, 0) << "no checkpoint was ever committed:\n" << read_file(log);
}

TEST_F(ProcessTest, SigtermSavesACheckpointAndExitsCleanly) {
  const std::string trainer_dir = dir_ + "/run", log = dir_ + "/log.txt";
  const pid_t pid = spawn_axlearn({"train", "--config", "fuji-test", "--trainer_dir", trainer_dir,
                                   "--max_step", "100000", "--set", "log_every_n_steps=1"},
                                  log);
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (count_lines(trainer_dir + "/metrics.jsonl") < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGTERM);
  const int status = wait_exit(pid);
  const std::string out = read_file(log);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("received SIGTERM"), std::string::npos) << out;
  std::optional<int64_t> latest = latest_step(trainer_dir);
  ASSERT_TRUE(latest.has_value()) << out;
  EXPECT_GE(*latest, 3);
  EXPECT_NE(out.find("received SIGTERM at step " + std::to_string(*latest)), std::string::npos)
      << out;
  expect_restorable(trainer_dir, *latest);
}

TEST_F(ProcessTest, WatchdogReportsASlowStep) {
  const std::string log = dir_ + "/log.txt";
  // The first step includes tracing and compiling the step: far longer than 10 ms.
  const pid_t pid = spawn_axlearn({"train", "--config", "fuji-test", "--trainer_dir", dir_ + "/run",
                                   "--max_step", "2", "--set", "watchdog_timeout_seconds=0.01"},
                                  log);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(wait_exit(pid), 0) << read_file(log);
  EXPECT_NE(read_file(log).find("watchdog: no step has finished for"), std::string::npos)
      << read_file(log);
}

}  // namespace
}  // namespace axlearn::train
