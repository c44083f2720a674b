// Checkpoints: a NestedTensor plus a JSON blob of extra state (e.g. the input iterator) under
// <dir>/checkpoints/step_%08d/, one file per tensor and an index.json written last and
// atomically, so a step exists only once complete; restore with validation; garbage collection.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/core/nested.h"
#include "axlearn/train/policy.h"

namespace axlearn {

// "<dir>/checkpoints/step_00000042".
std::string checkpoint_step_dir(const std::string& dir, int64_t step);

// Writes `tree` and `extra_json` (a JSON document as text, "null" for none) as step `step` under
// `dir`. Tensor files are written and fsynced first; the index last, via a temp file, fsync,
// rename and an fsync of the step folder. An existing step of that number is replaced.
// A tree with tensors sharded over a multi-device mesh is saved by every device of the mesh
// together (all must call it): each writes the blocks it is first to hold, the first device
// writes the replicated tensors and commits the index, which lists each sharded tensor's
// blocks with their offsets; an error on any device fails the call on all of them.
void save_checkpoint(const std::string& dir, int64_t step, const NestedTensor& tree,
                     const std::string& extra_json = "null");

// Steps that are committed (their index exists), ascending. Folders without an index are ignored.
std::vector<int64_t> committed_steps(const std::string& dir);
// The newest committed step, or nullopt when there is none (or no checkpoints folder).
std::optional<int64_t> latest_step(const std::string& dir);

struct RestoredCheckpoint {
  int64_t step = 0;
  NestedTensor tree;       // same structure as the `like` tree
  std::string extra_json;  // as saved
};

// Reads step `step`, checking it against `like_tree` (leaves may be placeholders: only their
// shapes and dtypes are used). Where a `like` leaf is sharded, this device reads only its block
// (from whichever saved blocks overlap it), so a checkpoint restores onto any mesh. Throws Error naming the tensor path and file on a missing or
// unexpected tensor, a shape or dtype mismatch, a truncated or oversized file, or a checksum
// failure.
RestoredCheckpoint restore_checkpoint(const std::string& dir, int64_t step,
                                      const NestedTensor& like_tree);

// Deletes committed steps except the newest `keep_last_n` and those divisible by
// `keep_every_n_steps` (when > 0), plus incomplete step folders older than the newest committed
// step (leftovers of interrupted saves). A step is uncommitted (index removed) before its files.
// Returns the steps deleted.
std::vector<int64_t> garbage_collect_checkpoints(const std::string& dir, int keep_last_n,
                                                 int64_t keep_every_n_steps = 0);

// The trainer's checkpointer (AXLearn's checkpointer.Checkpointer): saves when its save_policy
// says so, then collects garbage by keep_last_n / keep_every_n_steps.
class Checkpointer : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> dir{this, "dir", REQUIRED,
                           "The trainer dir (filled in); steps go under dir/checkpoints."};
    Field<int64_t> keep_last_n{this, "keep_last_n", 3, "Newest committed steps kept (>= 1)."};
    Field<int64_t> keep_every_n_steps{this, "keep_every_n_steps", 0,
                                      "Also keep steps divisible by this; 0: none."};
    Field<ConfigPtr<train::StepPolicyConfig>> save_policy{
        this, "save_policy", nullptr,
        "Steps to save at; None: only when the trainer stops (end, signal)."};
  };
  AXLEARN_CONFIGURABLE(Checkpointer, "axlearn.common.checkpointer.Checkpointer")
  explicit Checkpointer(const Config& cfg);

  // Whether the save policy asks for a checkpoint at `step`.
  bool should_save(int64_t step) const { return policy_ && policy_(step); }
  void save(int64_t step, const NestedTensor& tree, const std::string& extra_json = "null");
  std::optional<int64_t> latest_step() const { return axlearn::latest_step(dir_); }
  RestoredCheckpoint restore(int64_t step, const NestedTensor& like_tree) const {
    return restore_checkpoint(dir_, step, like_tree);
  }
  // Restores the newest committed step, or returns nullopt when there is none.
  std::optional<RestoredCheckpoint> restore_latest(const NestedTensor& like_tree) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  int keep_last_n_;
  int64_t keep_every_n_steps_;
  train::StepPolicy policy_;
};

}  // namespace axlearn
