// compile(fn): traces fn once per input signature (shapes, dtypes, tree structure) into a plan —
// common subexpressions merged, chains of elementwise ops fused into one loop, intermediates
// released after their last use so the caching allocator reuses their memory — and runs that
// plan on every later call with the same signature. Results equal the uncompiled fn bit for bit.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "axlearn/core/nested.h"
#include "axlearn/core/primitive.h"
#include "axlearn/core/primitives.h"
#include "axlearn/core/tensor.h"
#include "axlearn/core/transforms.h"

namespace axlearn {

// What the last trace produced; for tests and for printing.
struct PlanStats {
  int nodes_traced = 0;     // primitive applications in the traced graph
  int nodes_after_cse = 0;  // after merging common subexpressions
  int fused_groups = 0;     // FusedElementwise kernels (each replaces >= 2 nodes)
  int fused_nodes = 0;      // nodes that went into those kernels
  int kernels = 0;          // steps the plan runs per call
};

// Compiled form of a VectorFn. Copies share one plan cache, so a copy stored in a std::function
// keeps the plans traced through another copy.
//
// fn must be pure: it runs only when a new signature is traced (as with jax.jit), on abstract
// inputs, so side effects inside it happen at trace time only and reading a traced value
// (item(), to_vector(), eval()) throws Error. Tensors fn captures from outside are evaluated
// once at trace time and kept as constants of the plan.
//
// When called on tensors that are themselves being traced (inside vjp/grad, or inside another
// compiled function) it calls fn directly, so the outer transform sees fn's graph.
class CompiledFunction {
 public:
  explicit CompiledFunction(VectorFn fn);
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs) const;

  int num_traces() const;             // signatures traced so far
  PlanStats last_plan_stats() const;  // of the most recent trace
  // The most recent plan, one step per line ("%7 = exp(%3)"), for debugging and docs.
  std::string last_plan_string() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

using CompiledFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
using NestedFn = std::function<NestedTensor(const NestedTensor&)>;

CompiledFn compile(VectorFn fn);
// Tree version: the signature also includes the input tree's structure (its paths).
NestedFn compile(NestedFn fn);

// A group of elementwise ops (Unary, Binary, Select, Convert) over one shape, run as a single
// loop over chunks of cpu::kChunk elements held in typed registers. External inputs are loaded
// through strided / broadcast views; each op rounds through its output dtype exactly as its
// eager kernel does, so results are bitwise equal to running the ops one by one.
class FusedElementwise : public Primitive {
 public:
  // Value ids: 0 .. num_inputs-1 are the external inputs, then one id per instruction in order.
  struct Input {
    Dtype dtype = float32;  // storage dtype of the array passed in
    // broadcast_in_dim views applied in order before loading (absorbed producer nodes), as
    // (shape, dims) of each.
    std::vector<std::pair<Shape, std::vector<int>>> broadcasts;
  };
  enum class Kind : uint8_t { kUnary, kBinary, kSelect, kConvert };
  struct Instr {
    Kind kind = Kind::kUnary;
    uint8_t op = 0;         // UnaryOp / BinaryOp
    std::vector<int> args;  // value ids
    Dtype dtype = float32;  // output storage dtype
  };

  FusedElementwise(Shape shape, std::vector<Input> inputs, std::vector<Instr> instrs,
                   std::vector<int> outputs);
  const char* name() const override { return "fused_elementwise"; }
  OutputSpec infer(const std::vector<Tensor>& in) const override;
  // Single-output form (the first output).
  void eval_cpu(const std::vector<Array>& in, Array& out) const override;
  // All outputs. An output passed in already defined (dense, of the output's shape and dtype) is
  // written in place; the executor passes the buffers of dead inputs this way.
  void eval_cpu_multi(const std::vector<Array>& in, std::vector<Array>& out) const;
  bool equals(const Primitive& o) const override;
  size_t hash() const override;
  void print(std::ostream& os) const override;

  const Shape& shape() const { return shape_; }
  const std::vector<Input>& inputs() const { return inputs_; }
  const std::vector<Instr>& instrs() const { return instrs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  Dtype value_dtype(int id) const;  // storage dtype of a value id

  // True when the fused kernel can run this elementwise primitive for these input dtypes.
  static bool supports(const Primitive& p, const std::vector<Dtype>& input_dtypes);

 private:
  Shape shape_;
  std::vector<Input> inputs_;
  std::vector<Instr> instrs_;
  std::vector<int> outputs_;
  // Register plan: each value lives in one register of kChunk 8-byte slots; registers are reused
  // once a value's last reader has run.
  std::vector<int> reg_of_;
  int num_regs_ = 0;
  std::vector<std::vector<int>> loads_before_;  // per instruction: inputs first read there
};

}  // namespace axlearn
