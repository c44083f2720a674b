// Modules: a tree of named, stateless objects built from configs (AXLearn's module.py). What an
// invocation needs — the state (parameters), a PRNG key, is_training, and where summaries, state
// updates and module outputs go — travels in a thread-local stack of InvocationContexts that
// mirrors the module tree. `functional(...)` runs a method purely: same state, inputs and key
// give the same outputs, and everything the method adds comes back in an OutputCollection.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "axlearn/config/configurable.h"
#include "axlearn/core/nested.h"
#include "axlearn/core/tensor.h"
#include "axlearn/module/summary.h"

namespace axlearn {

class Module;

// The seed a child's PRNG key is folded with: md5(name) mod (2**31 - 1), as AXLearn derives it,
// so keys match AXLearn's for the same tree.
uint32_t seed_from_name(std::string_view name);
// Hex digest of MD5 (RFC 1321).
std::string md5_hex(std::string_view data);

// Names of modules, children and contexts: ^[a-z][a-z0-9_]*$. Throws Error naming `what`.
void validate_name(const std::string& name, const char* what);

// The implicit outputs of an invocation, one node per invocation context: summaries, state
// updates and module outputs added in that context, and the children's nodes by name.
class OutputCollection {
 public:
  OutputCollection() = default;
  OutputCollection(OutputCollection&&) noexcept = default;
  OutputCollection& operator=(OutputCollection&&) noexcept = default;

  // A new child node. A second child of the same name is an Error: calling one module twice
  // from one context needs distinct child_context names.
  OutputCollection& add_child(const std::string& name);
  const OutputCollection* find_child(const std::string& name) const;
  const std::map<std::string, std::unique_ptr<OutputCollection>>& children() const {
    return children_;
  }

  // A later summary or state update of the same name replaces the earlier one (as in AXLearn);
  // a second module output of one name is an Error.
  void add_summary(const std::string& name, Summary value);
  void add_state_update(const std::string& name, NestedTensor value);
  void add_module_output(const std::string& name, NestedTensor value);

  // This node's own entries.
  const std::map<std::string, Summary>& local_summaries() const { return summaries_; }
  const NestedTensor& local_state_updates() const { return state_updates_; }
  const NestedTensor& local_module_outputs() const { return module_outputs_; }

  // The whole subtree. Summaries by "/"-joined path ("decoder/linear/weight_norm"), sorted;
  // state updates and module outputs as trees keyed by child name (empty subtrees left out).
  std::vector<std::pair<std::string, Summary>> summaries() const;
  const Summary& summary(const std::string& path) const;  // Error listing the paths there are
  NestedTensor state_updates() const;
  NestedTensor module_outputs() const;

  // Moves everything in `other` into this node (names must not collide).
  void update(OutputCollection&& other);

 private:
  void check_free(const std::string& name, const char* what) const;

  std::map<std::string, Summary> summaries_;
  NestedTensor state_updates_;
  NestedTensor module_outputs_;
  std::map<std::string, std::unique_ptr<OutputCollection>> children_;
};

// What a child context may override; unset members take the defaults described in
// InvocationContext::add_child.
struct ChildContextOptions {
  Module* module = nullptr;
  const NestedTensor* state = nullptr;
  std::optional<Tensor> prng_key = std::nullopt;
  OutputCollection* output_collection = nullptr;
  std::optional<bool> is_training = std::nullopt;
};

class InvocationContext {
 public:
  InvocationContext(std::string name, InvocationContext* parent, Module* module,
                    const NestedTensor* state, bool is_training, std::optional<Tensor> prng_key,
                    OutputCollection* output_collection);

  const std::string& name() const { return name_; }
  InvocationContext* parent() const { return parent_; }
  Module& module() const { return *module_; }
  const NestedTensor& state() const { return *state_; }
  bool is_training() const { return is_training_; }
  const std::optional<Tensor>& prng_key() const { return prng_key_; }
  OutputCollection& output_collection() const { return *output_collection_; }
  // "root.decoder.linear".
  std::string path() const;

  // A child context named `name`. Defaults: module = this module's child `name`; state = this
  // state's entry for that child (empty when absent), or this state when the module is this
  // context's own; is_training inherited; prng_key = fold_in(key, seed_from_name(name)) when
  // there is a key; output_collection = a new child node `name` of this one.
  std::unique_ptr<InvocationContext> add_child(const std::string& name,
                                               const ChildContextOptions& options = {});

  void add_summary(const std::string& name, Summary value);
  void add_state_update(const std::string& name, NestedTensor value);
  void add_module_output(const std::string& name, NestedTensor value);

 private:
  std::string name_;
  InvocationContext* parent_;
  Module* module_;
  const NestedTensor* state_;
  bool is_training_;
  std::optional<Tensor> prng_key_;
  OutputCollection* output_collection_;
};

// The innermost context of this thread, or null outside any invocation.
InvocationContext* current_context();

// Contexts pushed on this thread's stack for as long as the scope lives (popped in reverse).
class ContextScope {
 public:
  ContextScope() = default;
  ContextScope(ContextScope&& other) noexcept : owned_(std::move(other.owned_)) {}
  ContextScope& operator=(ContextScope&&) = delete;
  ContextScope(const ContextScope&) = delete;
  ~ContextScope();
  // Pushes `context`, which must be a child of the current context (or a root when the stack is
  // empty or `allow_root`).
  void push(std::unique_ptr<InvocationContext> context);
  InvocationContext& innermost() const { return *owned_.back(); }

 private:
  std::vector<std::unique_ptr<InvocationContext>> owned_;
};

// Enters a child of the current context (AXLearn's child_context): to call a module twice from
// one method, give each call its own name:
//   { auto s = child_context("layer0", {.module = &layer}); layer.forward(x); }
[[nodiscard]] ContextScope child_context(const std::string& name,
                                         const ChildContextOptions& options = {});

class Module : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<std::string> name{this, "name", REQUIRED, "Name of this module."};
    Field<std::optional<int64_t>> vlog{this, "vlog", std::nullopt,
                                       "Maximum vlog level; None disables vlog."};
  };
  // Modules are built with their parent (null for a root).
  using Factory = std::function<std::unique_ptr<Module>(const ConfigBase&, Module* parent)>;
  AXLEARN_CONFIGURABLE(Module, "axlearn.common.module.Module")

  Module(const Config& cfg, Module* parent);

  const std::string& name() const { return name_; }
  Module* parent() const { return parent_; }
  // "model.decoder.linear".
  std::string path() const;

  // Children in the order they were added.
  std::vector<Module*> children() const;
  bool has_child(const std::string& name) const;
  // Throws Error listing the children when there is no such child.
  Module& child(const std::string& name) const;
  // Names of the modules from this one down to `descendant` (Error when it is not one).
  std::vector<std::string> path_to_descendant(const Module& descendant) const;

  // Instantiates a child from a copy of `cfg` (whose name, if set, must equal `name`).
  // REQUIRED-field errors name the child's full path.
  template <typename T = Module>
  T& add_child(const std::string& name, const ConfigBase& cfg) {
    Module& m = add_child_module(name, cfg);
    T* typed = dynamic_cast<T*>(&m);
    if (!typed) fail(m.path(), " is not a ", detail::config_type_name<T>());
    return *typed;
  }
  template <typename T = Module, typename C>
  T& add_child(const std::string& name, const ConfigPtr<C>& cfg) {
    if (!cfg) fail(path(), ": the config of child '", name, "' is None");
    return add_child<T>(name, static_cast<const ConfigBase&>(*cfg));
  }
  template <typename T = Module, typename C>
  T& add_child(const std::string& name, const Field<ConfigPtr<C>>& cfg) {
    return add_child<T>(name, cfg.get());
  }

  // ---- invocation ----
  // Enters this module's invocation context from the current one (a parent's or an ancestor's),
  // creating the child contexts along the way; a no-op when already in it or outside any
  // context. Module methods start with it — AXLearn wraps methods so automatically:
  //   Tensor Linear::forward(const Tensor& x) const { auto scope = enter_context(); ... }
  [[nodiscard]] ContextScope enter_context() const;
  // This module's context; Error when the current context belongs to another module.
  InvocationContext& invocation_context() const;
  bool is_training() const;
  // Error when the invocation has no PRNG key.
  const Tensor& prng_key() const;
  const NestedTensor& state() const;
  void add_summary(const std::string& name, Summary value) const;
  // A one-element tensor becomes a scalar summary, anything else a tensor summary.
  void add_summary(const std::string& name, const Tensor& value) const;
  void add_state_update(const std::string& name, NestedTensor value) const;
  void add_module_output(const std::string& name, NestedTensor value) const;

  // ---- sharing ----
  // Lets descendants find `module` (a descendant of this one) by `shared_name`.
  void share_with_descendants(const Module& module, const std::string& shared_name);
  struct SharedModule {
    Module* module;
    const NestedTensor* state;
  };
  // The module shared under `shared_name` by the nearest ancestor context, with its state.
  SharedModule get_shared_module(const std::string& shared_name) const;

  // ---- methods by name, for functional() ----
  using Method = std::function<NestedTensor(const NestedTensor& inputs)>;
  // Calls the method registered as `method`; Error listing the registered ones otherwise.
  NestedTensor invoke(const std::string& method, const NestedTensor& inputs) const;
  std::vector<std::string> method_names() const;

  bool vlog_is_on(int level) const;
  // Prints "@path msg" to stderr when level <= config vlog.
  void vlog(int level, const std::string& msg) const;

 protected:
  void register_method(const std::string& name, Method method);

 private:
  Module& add_child_module(const std::string& name, const ConfigBase& cfg);

  std::string name_;
  Module* parent_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  std::map<std::string, std::vector<std::string>> shared_paths_;
  std::map<std::string, Method> methods_;
};

template <typename T>
struct FunctionalOutput {
  T outputs;
  OutputCollection output_collection;
};

namespace detail {
// Pushes a root context for `module` (stack must be empty, or the call nested in a method).
ContextScope root_context(Module& module, const NestedTensor* state, std::optional<Tensor> prng_key,
                          bool is_training, OutputCollection* collection);
}  // namespace detail

// Runs module.invoke(method, inputs) in a fresh root context with this state, key and mode.
// Nothing outside the arguments is read or changed; the outputs and the collected summaries,
// state updates and module outputs are returned.
FunctionalOutput<NestedTensor> functional(Module& module, const NestedTensor& state,
                                          const NestedTensor& inputs,
                                          const std::optional<Tensor>& prng_key, bool is_training,
                                          const std::string& method = "forward");

// The same for a typed call: functional_call(layer, state, key, true, [&] { return
// layer.forward(x); }) returns {forward's result, collection}.
template <typename Fn>
auto functional_call(Module& module, const NestedTensor& state,
                     const std::optional<Tensor>& prng_key, bool is_training, Fn&& fn)
    -> FunctionalOutput<std::invoke_result_t<Fn&>> {
  FunctionalOutput<std::invoke_result_t<Fn&>> out{};
  const NestedTensor state_copy = state;
  {
    ContextScope scope =
        detail::root_context(module, &state_copy, prng_key, is_training, &out.output_collection);
    out.outputs = fn();
  }
  return out;
}

}  // namespace axlearn
