// Transforms over the lazy graph: eval, reverse-mode autodiff (vjp, grad, value_and_grad over
// vectors and NestedTensor trees). Gradients are graphs themselves, so they can be differentiated
// again. compile() lives in compile.h.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "axlearn/core/nested.h"
#include "axlearn/core/tensor.h"

namespace axlearn {

// Materialises the tensors (and everything they depend on that is not yet evaluated).
void eval(const std::vector<Tensor>& tensors);
void eval(const NestedTensor& tree);
template <typename... Ts>
void eval(const Tensor& t, const Ts&... ts) {
  eval(std::vector<Tensor>{t, ts...});
}

// Nodes of the unevaluated graph below `outputs`, inputs before users (a topological order).
std::vector<Tensor> topological_order(const std::vector<Tensor>& outputs);

using VectorFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
using ScalarFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct VjpResult {
  std::vector<Tensor> outputs;
  std::vector<Tensor> cotangents;  // one per primal, same shape and dtype as the primal
};
// Evaluates fn at `primals` and pulls `cotangents` (one per output) back to the primals.
VjpResult vjp(const VectorFn& fn, const std::vector<Tensor>& primals,
              const std::vector<Tensor>& cotangents);

// Gradient of a scalar-valued fn with respect to the arguments listed in argnums (all if empty).
std::function<std::vector<Tensor>(const std::vector<Tensor>&)> grad(ScalarFn fn,
                                                                    std::vector<int> argnums = {});

struct ValueAndGrad {
  Tensor value;
  std::vector<Tensor> grads;
};
ValueAndGrad value_and_grad(const ScalarFn& fn, const std::vector<Tensor>& args,
                            std::vector<int> argnums = {});

// Tree versions: fn maps a parameter tree to a scalar loss (plus auxiliary outputs).
struct NestedValueAndGrad {
  Tensor value;
  NestedTensor grads;
  NestedTensor aux;
};
NestedValueAndGrad value_and_grad(const std::function<Tensor(const NestedTensor&)>& fn,
                                  const NestedTensor& params);
NestedValueAndGrad value_and_grad_with_aux(
    const std::function<std::pair<Tensor, NestedTensor>(const NestedTensor&)>& fn,
    const NestedTensor& params);
NestedTensor grad(const std::function<Tensor(const NestedTensor&)>& fn, const NestedTensor& params);

}  // namespace axlearn
