#include "axlearn/module/module.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "axlearn/core/error.h"
#include "axlearn/core/random.h"

namespace axlearn {

// ---- names and seeds ----

namespace {

// MD5 (RFC 1321) of `data`.
std::array<uint8_t, 16> md5(std::string_view data) {
  static const std::array<uint32_t, 64> k = [] {
    std::array<uint32_t, 64> t{};
    for (int i = 0; i < 64; ++i)
      t[i] = uint32_t(std::floor(std::fabs(std::sin(i + 1.0)) * 4294967296.0));
    return t;
  }();
  static constexpr int shifts[4][4] = {
      {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
  std::string msg(data);
  const uint64_t bit_len = uint64_t(data.size()) * 8;
  msg += char(0x80);
  while (msg.size() % 64 != 56) msg += char(0);
  for (int i = 0; i < 8; ++i) msg += char((bit_len >> (8 * i)) & 0xff);

  uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
  for (size_t chunk = 0; chunk < msg.size(); chunk += 64) {
    uint32_t m[16];
    for (int i = 0; i < 16; ++i) {
      m[i] = 0;
      for (int b = 0; b < 4; ++b) m[i] |= uint32_t(uint8_t(msg[chunk + 4 * i + b])) << (8 * b);
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; ++i) {
      uint32_t f;
      int g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) % 16;
      }
      f += a + k[size_t(i)] + m[g];
      a = d;
      d = c;
      c = b;
      const int s = shifts[i / 16][i % 4];
      b += (f << s) | (f >> (32 - s));
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
  }
  std::array<uint8_t, 16> out{};
  for (int i = 0; i < 16; ++i) out[size_t(i)] = uint8_t(h[i / 4] >> (8 * (i % 4)));
  return out;
}

}  // namespace

std::string md5_hex(std::string_view data) {
  std::string out;
  char buf[3];
  for (uint8_t byte : md5(data)) {
    std::snprintf(buf, sizeof(buf), "%02x", byte);
    out += buf;
  }
  return out;
}

uint32_t seed_from_name(std::string_view name) {
  // int(md5(name).hexdigest(), 16) % (2**31 - 1), reduced byte by byte.
  constexpr uint64_t kModulus = (uint64_t(1) << 31) - 1;
  uint64_t r = 0;
  for (uint8_t byte : md5(name)) r = (r * 256 + byte) % kModulus;
  return uint32_t(r);
}

void validate_name(const std::string& name, const char* what) {
  if (!is_valid_name(name)) fail("invalid ", what, " '", name, "' (must match ^[a-z][a-z0-9_]*$)");
}

// ---- OutputCollection ----

void OutputCollection::check_free(const std::string& name, const char* what) const {
  if (children_.count(name)) {
    fail("output collection: ", what, " '", name, "' collides with a child context of that name");
  }
}

OutputCollection& OutputCollection::add_child(const std::string& name) {
  validate_name(name, "output collection child name");
  if (children_.count(name) || summaries_.count(name) || state_updates_.contains(name) ||
      module_outputs_.contains(name)) {
    fail("output collection: '", name,
         "' is already present. To call the same module multiple times, create child contexts "
         "with distinct names with child_context()");
  }
  return *children_.emplace(name, std::make_unique<OutputCollection>()).first->second;
}

const OutputCollection* OutputCollection::find_child(const std::string& name) const {
  auto it = children_.find(name);
  return it == children_.end() ? nullptr : it->second.get();
}

void OutputCollection::add_summary(const std::string& name, Summary value) {
  check_free(name, "summary");
  summaries_.insert_or_assign(name, std::move(value));
}

void OutputCollection::add_state_update(const std::string& name, NestedTensor value) {
  check_free(name, "state update");
  state_updates_[name] = std::move(value);
}

void OutputCollection::add_module_output(const std::string& name, NestedTensor value) {
  check_free(name, "module output");
  if (module_outputs_.contains(name))
    fail("output collection: outputs of name '", name, "' already exist");
  module_outputs_[name] = std::move(value);
}

namespace {

void collect_summaries(const OutputCollection& node, const std::string& prefix,
                       std::vector<std::pair<std::string, Summary>>& out) {
  for (const auto& [name, s] : node.local_summaries()) out.emplace_back(prefix + name, s);
  for (const auto& [name, child] : node.children())
    collect_summaries(*child, prefix + name + "/", out);
}

bool tree_empty(const NestedTensor& t) { return !t.is_leaf() && t.dict().empty(); }

NestedTensor merged(const OutputCollection& node,
                    const std::function<const NestedTensor&(const OutputCollection&)>& local) {
  NestedTensor out = local(node);
  for (const auto& [name, child] : node.children()) {
    NestedTensor sub = merged(*child, local);
    if (!tree_empty(sub)) out[name] = std::move(sub);
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, Summary>> OutputCollection::summaries() const {
  std::vector<std::pair<std::string, Summary>> out;
  collect_summaries(*this, "", out);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

const Summary& OutputCollection::summary(const std::string& path) const {
  const OutputCollection* node = this;
  std::string rest = path;
  // Descend through child nodes while the next "/"-segment names one; the rest is the name.
  for (size_t slash; (slash = rest.find('/')) != std::string::npos;) {
    const OutputCollection* next = node->find_child(rest.substr(0, slash));
    if (!next) break;
    node = next;
    rest = rest.substr(slash + 1);
  }
  auto it = node->summaries_.find(rest);
  if (it == node->summaries_.end()) {
    std::string have;
    for (const auto& [p, s] : summaries()) have += (have.empty() ? "" : ", ") + p;
    fail("no summary at '", path, "' (summaries: ", have.empty() ? "none" : have, ")");
  }
  return it->second;
}

NestedTensor OutputCollection::state_updates() const {
  return merged(*this,
                [](const OutputCollection& n) -> const NestedTensor& { return n.state_updates_; });
}

NestedTensor OutputCollection::module_outputs() const {
  return merged(*this,
                [](const OutputCollection& n) -> const NestedTensor& { return n.module_outputs_; });
}

void OutputCollection::update(OutputCollection&& other) {
  for (auto& [name, s] : other.summaries_) add_summary(name, std::move(s));
  if (!other.state_updates_.is_leaf()) {
    for (auto& [name, v] : other.state_updates_.dict()) add_state_update(name, std::move(v));
  }
  if (!other.module_outputs_.is_leaf()) {
    for (auto& [name, v] : other.module_outputs_.dict()) add_module_output(name, std::move(v));
  }
  for (auto& [name, child] : other.children_) {
    auto it = children_.find(name);
    if (it == children_.end()) {
      check_free(name, "child");
      children_.emplace(name, std::move(child));
    } else {
      it->second->update(std::move(*child));
    }
  }
  other = OutputCollection();
}

// ---- contexts ----

namespace {
thread_local std::vector<InvocationContext*> g_stack;
const NestedTensor& empty_state() {
  static const NestedTensor empty;
  return empty;
}
}  // namespace

InvocationContext* current_context() { return g_stack.empty() ? nullptr : g_stack.back(); }

InvocationContext::InvocationContext(std::string name, InvocationContext* parent, Module* module,
                                     const NestedTensor* state, bool is_training,
                                     std::optional<Tensor> prng_key,
                                     OutputCollection* output_collection)
    : name_(std::move(name)),
      parent_(parent),
      module_(module),
      state_(state ? state : &empty_state()),
      is_training_(is_training),
      prng_key_(std::move(prng_key)),
      output_collection_(output_collection) {
  AXLEARN_CHECK(module_ && output_collection_);
}

std::string InvocationContext::path() const {
  return parent_ ? parent_->path() + "." + name_ : name_;
}

std::unique_ptr<InvocationContext> InvocationContext::add_child(
    const std::string& name, const ChildContextOptions& options) {
  validate_name(name, "context name");
  Module* module = options.module ? options.module : &module_->child(name);
  const NestedTensor* state = options.state;
  if (!state) {
    if (module == module_) {
      state = state_;
    } else if (module->parent() == module_) {
      state = (!state_->is_leaf() && state_->contains(module->name())) ? &state_->at(module->name())
                                                                       : &empty_state();
    } else {
      fail("the state must be given explicitly for module ", module->path(),
           " when creating a child context of ", path(), " (module ", module_->path(), ")");
    }
  }
  OutputCollection* collection =
      options.output_collection ? options.output_collection : &output_collection_->add_child(name);
  auto child = std::make_unique<InvocationContext>(name, this, module, state,
                                                   options.is_training.value_or(is_training_),
                                                   std::nullopt, collection);
  if (options.prng_key) {
    child->prng_key_.emplace(*options.prng_key);
  } else if (prng_key_) {
    child->prng_key_.emplace(random::fold_in(*prng_key_, seed_from_name(name)));
  }
  return child;
}

void InvocationContext::add_summary(const std::string& name, Summary value) {
  output_collection_->add_summary(name, std::move(value));
}

void InvocationContext::add_state_update(const std::string& name, NestedTensor value) {
  output_collection_->add_state_update(name, std::move(value));
}

void InvocationContext::add_module_output(const std::string& name, NestedTensor value) {
  try {
    output_collection_->add_module_output(name, std::move(value));
  } catch (const Error& e) {
    fail(path(), ": ", e.what());
  }
}

void ContextScope::push(std::unique_ptr<InvocationContext> context) {
  InvocationContext* parent = context->parent();
  if (parent) {
    if (g_stack.empty() || g_stack.back() != parent) {
      fail("context ", context->path(), ": its parent must be the current context (",
           g_stack.empty() ? std::string("none") : g_stack.back()->path(),
           "); create contexts with child_context()");
    }
  }
  g_stack.push_back(context.get());
  owned_.push_back(std::move(context));
}

ContextScope::~ContextScope() {
  for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) {
    auto pos = std::find(g_stack.rbegin(), g_stack.rend(), it->get());
    if (pos != g_stack.rend()) g_stack.erase(std::next(pos).base());
  }
}

ContextScope child_context(const std::string& name, const ChildContextOptions& options) {
  InvocationContext* ctx = current_context();
  if (!ctx) fail("child_context('", name, "'): no current invocation context");
  ContextScope scope;
  scope.push(ctx->add_child(name, options));
  return scope;
}

namespace detail {
ContextScope root_context(Module& module, const NestedTensor* state, std::optional<Tensor> prng_key,
                          bool is_training, OutputCollection* collection) {
  ContextScope scope;
  scope.push(std::make_unique<InvocationContext>("root", nullptr, &module, state, is_training,
                                                 std::move(prng_key), collection));
  return scope;
}
}  // namespace detail

// ---- Module ----

Module::Module(const Config& cfg, Module* parent)
    : Configurable(cfg), name_(cfg.name.get()), parent_(parent) {
  validate_name(name_, "module name");
}

std::string Module::path() const { return parent_ ? parent_->path() + "." + name_ : name_; }

std::vector<Module*> Module::children() const {
  std::vector<Module*> out;
  for (const auto& [n, c] : children_) out.push_back(c.get());
  return out;
}

bool Module::has_child(const std::string& name) const {
  return std::any_of(children_.begin(), children_.end(),
                     [&](const auto& c) { return c.first == name; });
}

Module& Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_) {
    if (n == name) return *c;
  }
  std::string names;
  for (const auto& [n, c] : children_) names += (names.empty() ? "" : ", ") + n;
  fail(path(), " has no child '", name, "' (children: ", names.empty() ? "none" : names, ")");
}

std::vector<std::string> Module::path_to_descendant(const Module& descendant) const {
  std::vector<std::string> out;
  const Module* m = &descendant;
  while (m && m != this) {
    out.push_back(m->name());
    m = m->parent();
  }
  if (!m) fail(descendant.path(), " is not a descendant of ", path());
  std::reverse(out.begin(), out.end());
  return out;
}

Module& Module::add_child_module(const std::string& name, const ConfigBase& cfg) {
  validate_name(name, "child name");
  if (has_child(name)) fail(path(), ": child '", name, "' already exists");
  if (!dynamic_cast<const Module::Config*>(&cfg)) {
    fail(path(), ": add_child('", name, "') expects a Module config, given the ", cfg.describe());
  }
  ConfigPtr<Module::Config> copy(static_cast<Module::Config*>(cfg.clone_base().release()));
  if (copy->name.is_set() && copy->name.get() != name) {
    fail(path(), ": the config of child '", name, "' already has a different name: '",
         copy->name.get(), "'");
  }
  copy->name = name;
  std::unique_ptr<Module> child;
  {
    auto scope = InstantiationScope::at(path() + "." + name);
    child = copy->instantiate<Module>(this);
  }
  children_.emplace_back(name, std::move(child));
  return *children_.back().second;
}

ContextScope Module::enter_context() const {
  ContextScope scope;
  InvocationContext* ctx = current_context();
  if (!ctx || &ctx->module() == this) return scope;
  for (const std::string& part : ctx->module().path_to_descendant(*this)) {
    scope.push(current_context()->add_child(part));
  }
  return scope;
}

InvocationContext& Module::invocation_context() const {
  InvocationContext* ctx = current_context();
  if (!ctx) {
    fail(path(), ": no invocation context. Did you invoke the module inside functional(...)?");
  }
  if (&ctx->module() != this) {
    fail(path(), ": the current invocation context (", ctx->path(), ") belongs to ",
         ctx->module().path(), ". Does the method start with `auto scope = enter_context();`?");
  }
  return *ctx;
}

bool Module::is_training() const { return invocation_context().is_training(); }

const Tensor& Module::prng_key() const {
  const auto& key = invocation_context().prng_key();
  if (!key) fail(path(), ": this invocation has no PRNG key (functional was called without one)");
  return *key;
}

const NestedTensor& Module::state() const { return invocation_context().state(); }

void Module::add_summary(const std::string& name, Summary value) const {
  invocation_context().add_summary(name, std::move(value));
}

void Module::add_summary(const std::string& name, const Tensor& value) const {
  add_summary(name, value.size() == 1 ? Summary::scalar(value) : Summary::tensor(value));
}

void Module::add_state_update(const std::string& name, NestedTensor value) const {
  invocation_context().add_state_update(name, std::move(value));
}

void Module::add_module_output(const std::string& name, NestedTensor value) const {
  invocation_context().add_module_output(name, std::move(value));
}

void Module::share_with_descendants(const Module& module, const std::string& shared_name) {
  std::vector<std::string> rel = path_to_descendant(module);
  if (shared_paths_.count(shared_name)) {
    fail(path(), ": a module is already shared as '", shared_name, "'");
  }
  shared_paths_.emplace(shared_name, std::move(rel));
}

Module::SharedModule Module::get_shared_module(const std::string& shared_name) const {
  const InvocationContext* ctx = &invocation_context();
  while (ctx && !ctx->module().shared_paths_.count(shared_name)) ctx = ctx->parent();
  if (!ctx) fail(path(), " has no ancestor that shares '", shared_name, "'");
  Module* target = &ctx->module();
  const NestedTensor* state = &ctx->state();
  for (const std::string& part : ctx->module().shared_paths_.at(shared_name)) {
    target = &target->child(part);
    if (state->is_leaf() || !state->contains(part)) {
      fail(path(), ": the state of ", ctx->module().path(), " has no '", part,
           "' on the way to shared module '", shared_name, "'");
    }
    state = &state->at(part);
  }
  return {target, state};
}

void Module::register_method(const std::string& name, Method method) {
  methods_[name] = std::move(method);
}

NestedTensor Module::invoke(const std::string& method, const NestedTensor& inputs) const {
  auto it = methods_.find(method);
  if (it == methods_.end()) {
    std::string names;
    for (const auto& [n, m] : methods_) names += (names.empty() ? "" : ", ") + n;
    fail(path(), " has no method '", method, "' (registered: ", names.empty() ? "none" : names,
         ")");
  }
  return it->second(inputs);
}

std::vector<std::string> Module::method_names() const {
  std::vector<std::string> out;
  for (const auto& [n, m] : methods_) out.push_back(n);
  return out;
}

bool Module::vlog_is_on(int level) const {
  const auto& v = config().vlog.get();
  return v && level <= *v;
}

void Module::vlog(int level, const std::string& msg) const {
  if (vlog_is_on(level)) std::cerr << "@" << path() << " " << msg << "\n";
}

FunctionalOutput<NestedTensor> functional(Module& module, const NestedTensor& state,
                                          const NestedTensor& inputs,
                                          const std::optional<Tensor>& prng_key, bool is_training,
                                          const std::string& method) {
  return functional_call(module, state, prng_key, is_training,
                         [&] { return module.invoke(method, inputs); });
}

}  // namespace axlearn
