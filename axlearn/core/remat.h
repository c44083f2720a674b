// checkpoint(fn): rematerialization (jax.checkpoint / jax.remat). The wrapped function computes
// the same values as fn, but the graph holds it as one opaque node, so fn's intermediates are
// freed as soon as its outputs exist; its VJP recomputes them from the saved inputs inside the
// backward node, trading one extra forward of fn for the memory of its activations.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "axlearn/core/primitive.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

// Returns a function with fn's values whose backward recomputes fn instead of keeping its
// intermediates (everything is recomputed: jax's policy=None, nothing_saveable).
//
// Each call traces fn once on abstract inputs (so fn must be pure, as for compile(): reading a
// value inside it throws Error) and records one node whose inputs are the call's inputs plus the
// tensors fn captures from outside (closure conversion: gradients flow to captured tracers as
// they would without checkpoint). Evaluating the node replays the traced graph on the inputs'
// data; its VJP replays fn's VJP on the saved inputs, itself as a checkpointed node, so
// gradients of any order work and every backward node frees its recomputed activations when it
// finishes. PRNG keys are ordinary inputs, so random draws inside fn repeat exactly when replayed.
//
// Under compile() the node is one step of the plan: compile does not fuse across it or inside
// it. A fn with several outputs runs once per evaluation, and one backward node pulls back the
// cotangents of all its outputs together.
VectorFn checkpoint(VectorFn fn);

namespace detail {

// A traced function as a flat program: values 0 .. num_inputs-1 are the inputs, then the
// constants, then one value per op in order.
struct RematGraph {
  struct Op {
    std::shared_ptr<const Primitive> primitive;
    std::vector<int> args;
  };
  std::vector<OutputSpec> input_specs;
  std::vector<Array> constants;
  std::vector<Op> ops;
  std::vector<int> outputs;  // value ids
  std::vector<OutputSpec> output_specs;

  int num_inputs() const { return int(input_specs.size()); }
  // Rebuilds the graph on `inputs` (lazily, as new nodes), returning the outputs.
  std::vector<Tensor> replay(const std::vector<Tensor>& inputs) const;
};

// The checkpointed call. Inputs: the graph's inputs. Output: the only output of a one-output
// graph. With several outputs, a one-byte token whose storage owns a RematResults; each output is
// a RematOutput node that takes its array from there, so a consumer evaluated late pins only its
// own output, not the call's inputs or its siblings.
class RematCall : public Primitive {
 public:
  explicit RematCall(std::shared_ptr<const RematGraph> graph) : graph_(std::move(graph)) {}
  const char* name() const override { return "checkpoint"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  // ct: the output's cotangent, or for a token the sum of the RematCotangent carriers of the
  // outputs that received one; all of them are pulled back by one checkpointed backward.
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;

  const std::shared_ptr<const RematGraph>& graph() const { return graph_; }

 private:
  std::shared_ptr<const RematGraph> graph_;
};

// The arrays one evaluation of a several-output call produced, each until its RematOutput takes it.
struct RematResults {
  std::mutex mu;
  std::vector<Array> outputs;
  char token = 0;  // the byte the token array points at
};

// Output `index` of a several-output RematCall. Input: the call's token. Its VJP hands its
// cotangent to the call as a RematCotangent carrier (of the token's shape and dtype).
class RematOutput : public Primitive {
 public:
  RematOutput(std::shared_ptr<const RematGraph> graph, int index)
      : graph_(std::move(graph)), index_(index) {}
  const char* name() const override { return "checkpoint_output"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  std::vector<Tensor> vjp(const std::vector<Tensor>& in, const Tensor& out,
                          const Tensor& ct) const override;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;

 private:
  std::shared_ptr<const RematGraph> graph_;
  int index_;
};

// Carries the cotangent of output `index` (its input) to the token of a several-output call. The
// autodiff walk sums the carriers of one token with add(); RematCall::vjp reads the sum's graph
// back into (index, cotangent) pairs, so the carriers are never evaluated.
class RematCotangent : public Primitive {
 public:
  explicit RematCotangent(int index) : index_(index) {}
  const char* name() const override { return "checkpoint_cotangent"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  bool equals(const Primitive& o) const override;
  void print(std::ostream& os) const override { os << "checkpoint_cotangent[" << index_ << "]"; }
  int index() const { return index_; }

 private:
  int index_;
};

}  // namespace detail
}  // namespace axlearn
