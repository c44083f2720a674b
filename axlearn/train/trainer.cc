#include "axlearn/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "axlearn/core/compile.h"
#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/sharding.h"

namespace axlearn::train {
namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// ---- signals: the first SIGINT/SIGTERM asks the loop to save and stop ----
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    // A second signal: the user insists; stop without waiting for the checkpoint.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

class SignalScope {
 public:
  SignalScope() {
    g_stop_signal = 0;
    old_int_ = std::signal(SIGINT, on_stop_signal);
    old_term_ = std::signal(SIGTERM, on_stop_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

// ---- watchdog: reports on stderr when no step finishes within the timeout ----
class Watchdog {
 public:
  explicit Watchdog(std::optional<double> timeout_s) {
    if (!timeout_s) return;
    timeout_ = std::chrono::duration<double>(*timeout_s);
    thread_ = std::thread([this] { loop(); });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void progress(int64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    step_ = step;
    last_ = Clock::now();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    last_ = Clock::now();
    while (!done_) {
      const auto deadline = last_ + std::chrono::duration_cast<Clock::duration>(timeout_);
      if (cv_.wait_until(lock, deadline, [&] { return done_; })) break;
      if (Clock::now() >= last_ + std::chrono::duration_cast<Clock::duration>(timeout_)) {
        const double waited = std::chrono::duration<double>(Clock::now() - last_).count();
        std::fprintf(stderr, "watchdog: no step has finished for %.0f s (last finished: %lld)\n",
                     waited, static_cast<long long>(step_));
        last_ = Clock::now();  // report again after another timeout
      }
    }
  }
  std::chrono::duration<double> timeout_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  int64_t step_ = 0;
  Clock::time_point last_ = Clock::now();
  std::thread thread_;
};

// Nested tree from "a/b/c"-style summary names (NestedTensor keys must not contain '/').
void put_path(NestedTensor& tree, const std::string& path, const Tensor& value) {
  NestedTensor* node = &tree;
  size_t begin = 0;
  while (true) {
    const size_t slash = path.find('/', begin);
    if (slash == std::string::npos) {
      (*node)[path.substr(begin)] = value;
      return;
    }
    node = &(*node)[path.substr(begin, slash - begin)];
    begin = slash + 1;
  }
}

// Scalar summaries of a collection as a tree of f32 scalars.
NestedTensor scalar_summaries(const std::vector<std::pair<std::string, Summary>>& summaries) {
  NestedTensor out;
  for (const auto& [path, s] : summaries) {
    if (s.kind() == Summary::Kind::kScalar) put_path(out, path, astype(s.value(), float32));
  }
  return out;
}

double scalar_of(const Tensor& t) { return astype(t, float64).item<double>(); }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  }
  return buf;
}

// NaN and infinities are not JSON numbers; they are written as null.
Json json_number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

NestedTensor cast_floating(const NestedTensor& tree, std::optional<Dtype> dtype) {
  if (!dtype) return tree;
  return tree.map([&](const Tensor& t) {
    return is_floating(t.dtype()) && t.dtype() != *dtype ? astype(t, *dtype) : t;
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SpmdEvaler

SpmdEvaler::SpmdEvaler(const Config& cfg) : Configurable(cfg), name_(cfg.name.get()) {
  validate_name(name_, "evaler name");
  {
    auto scope = InstantiationScope::child("eval_policy");
    policy_ = cfg.eval_policy.get()->instantiate();
  }
  {
    auto scope = InstantiationScope::child("input");
    input_ = cfg.input.get()->instantiate<data::Input>();
  }
  // Devices other than the first compute the same metrics; only the first writes them.
  if (current_device_rank() == 0) {
    auto scope = InstantiationScope::child("summary_writer");
    summary_writer_ = cfg.summary_writer.get()->instantiate<SummaryWriter>();
  }
}

EvalMetrics SpmdEvaler::evaluate(int64_t step, const NestedTensor& params, const BatchFn& fn) {
  const auto& cfg = static_cast<const Config&>(config_base());
  const NestedTensor eval_params = cast_floating(params, cfg.eval_dtype.get());
  std::unique_ptr<data::InputIterator> it = input_->make_iterator();
  double tokens = 0, loss = 0, ce = 0, acc = 0;
  int64_t batches = 0;
  while (std::optional<NestedTensor> batch = it->next()) {
    const NestedTensor out = fn(eval_params, *batch);
    const double n = scalar_of(out.at("num_tokens").tensor());
    ++batches;
    if (n <= 0) continue;  // an all-padding batch
    tokens += n;
    loss += n * scalar_of(out.at("loss").tensor());
    ce += n * scalar_of(out.at("cross_entropy").tensor());
    acc += n * scalar_of(out.at("accuracy").tensor());
  }
  if (tokens <= 0)
    fail("evaler '", name_, "': the input has no target tokens (", batches, " batches)");
  EvalMetrics m{{"loss", loss / tokens},
                {"cross_entropy", ce / tokens},
                {"accuracy", acc / tokens},
                {"perplexity", std::exp(ce / tokens)},
                {"num_tokens", tokens}};
  if (summary_writer_) {
    for (const auto& [k, v] : m) summary_writer_->add_scalar(k, v, step);
    summary_writer_->flush();
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// SpmdTrainer

SpmdTrainer::SpmdTrainer(const Config& cfg, Module* parent) : Module(cfg, parent) {
  // The mesh over the devices of this run (virtual devices or MPI ranks; one otherwise).
  const dist::Communicator* comm = dist::current_communicator();
  const int64_t devices = comm ? comm->size() : 1;
  Mesh mesh;
  try {
    mesh = dist::make_mesh(cfg.mesh_shape.get(), cfg.mesh_axis_names.get(), devices);
  } catch (const Error& e) {
    fail(InstantiationScope::current_path(), e.what());
  }
  for (const std::string& name : cfg.batch_axis_names.get()) {
    if (mesh.axis_index(name) < 0) {
      fail("batch_axis_names: '", name, "' is not one of mesh_axis_names");
    }
  }
  if (mesh.size() > 1) mesh_ = mesh;
  if (cfg.max_step.get() < 1) fail("max_step must be at least 1, got ", cfg.max_step.get());
  if (cfg.log_every_n_steps.get() < 1) {
    fail("log_every_n_steps must be at least 1, got ", cfg.log_every_n_steps.get());
  }

  model_ = &add_child<layers::Model>("model", cfg.model);
  auto learner_cfg = cfg.learner.get()->clone();
  if (!learner_cfg->train_dtype.get() && cfg.train_dtype.get()) {
    learner_cfg->train_dtype = *cfg.train_dtype.get();
  }
  learner_ = &add_child<optim::Learner>("learner", *learner_cfg);
  param_specs_ = model_->create_parameter_specs_recursively();
  if (mesh_) {
    for (const auto& [path, spec] : param_specs_.flatten_with_paths()) {
      dist::PartitionSpec ps;
      if (spec.mesh_axes) {
        for (const MeshAxis& a : *spec.mesh_axes) {
          if (const auto* one = std::get_if<std::string>(&a)) {
            ps.push_back({*one});
          } else if (const auto* many = std::get_if<std::vector<std::string>>(&a)) {
            ps.push_back(*many);
          } else {
            ps.push_back({});
          }
        }
      }
      try {
        param_shardings_.emplace(path, dist::named_sharding(*mesh_, ps, int(spec.shape.size())));
        param_shardings_.at(path).local_shape(spec.shape);
      } catch (const Error& e) {
        fail("model parameter ", path, " of shape ", shape_str(spec.shape), ": ", e.what());
      }
    }
    for (const std::string& name : cfg.batch_axis_names.get()) {
      const int a = mesh_->axis_index(name);
      if (mesh_->shape[size_t(a)] > 1) batch_axes_.push_back(a);
    }
    for (const std::string& name : cfg.seq_axis_names.get()) {
      const int a = mesh_->axis_index(name);
      if (a < 0) fail("seq_axis_names: '", name, "' is not one of mesh_axis_names");
      if (std::find(batch_axes_.begin(), batch_axes_.end(), a) != batch_axes_.end()) {
        fail("seq_axis_names: '", name, "' is also a batch axis");
      }
      if (mesh_->shape[size_t(a)] > 1) seq_axes_.push_back(a);
    }
  }
}

bool SpmdTrainer::is_leader() const { return current_device_rank() == 0; }

int64_t SpmdTrainer::batch_shards() const {
  return mesh_ ? dist::group_size(*mesh_, batch_axes_) : 1;
}

ConfigPtr<data::Input::Config> SpmdTrainer::device_input_config(
    const data::Input::Config& cfg) const {
  auto c = cfg.clone();
  if (mesh_) {
    // Devices holding the same rows of the batch (they differ only along other axes) read the
    // same part of the input.
    c->process_index = dist::block_index(*mesh_, batch_axes_);
    c->process_count = batch_shards();
  }
  return c;
}

Sharding SpmdTrainer::batch_sharding(int ndim) const {
  Sharding s = Sharding::replicated(*mesh_, ndim);
  if (ndim >= 1) s.dims[0] = batch_axes_;
  if (ndim >= 2) s.dims[1] = seq_axes_;
  return s;
}

NestedTensor SpmdTrainer::shard_batch(const NestedTensor& batch) const {
  if (!mesh_) return batch;
  return batch.map([&](const Tensor& t) {
    Sharding rows = Sharding::replicated(*mesh_, t.ndim());
    rows.dims[0] = batch_axes_;
    Shape global = t.shape();
    global[0] *= batch_shards();
    Tensor g = dist::from_local(t, global, rows);
    // Sequence parallelism: each device then keeps its slice of the positions (a local slice).
    const Sharding full = batch_sharding(t.ndim());
    return full == rows ? g : dist::with_sharding_constraint(g, full);
  });
}

NestedTensor SpmdTrainer::place_global_batch(const NestedTensor& batch) const {
  if (!mesh_) return batch;
  return batch.map([&](const Tensor& t) { return dist::device_put(t, batch_sharding(t.ndim())); });
}

NestedTensor SpmdTrainer::shard_state(const NestedTensor& state) const {
  if (!mesh_) return state;
  // A parameter, or optimizer state of one ("optimizer/.../mu/<param path>") of its shape, is
  // split as the parameter; everything else is replicated.
  auto sharding_of = [&](const std::string& path, const Tensor& t) {
    for (size_t at = 0;;) {
      const std::string suffix = path.substr(at);
      auto it = param_shardings_.find(suffix);
      if (it != param_shardings_.end() && param_specs_.at_path(suffix).shape == t.shape()) {
        return it->second;
      }
      const size_t slash = path.find('/', at);
      if (slash == std::string::npos) return Sharding::replicated(*mesh_, t.ndim());
      at = slash + 1;
    }
  };
  NestedTensor out;
  for (const char* key : {"model", "learner", "prng_key"}) {
    if (!state.contains(key)) continue;
    const NestedTensor& sub = state.at(key);
    if (sub.is_leaf()) {
      out[key] = dist::device_put(sub.tensor(), sharding_of(key, sub.tensor()));
      continue;
    }
    out[key] = sub.map_with_path([&](const std::string& path, const Tensor& t) {
      return dist::device_put(t, sharding_of(path, t));
    });
  }
  return out;
}

SpmdTrainer::~SpmdTrainer() = default;

double SpmdTrainer::flops_per_token() const {
  const auto& dcfg = *config().model.get()->decoder.get();
  const int64_t dim = dcfg.dim.get();
  double weight_uses = 0;  // multiply-adds per token in the forward pass
  for (const auto& [path, spec] : param_specs_.flatten_with_paths()) {
    if (spec.shape.size() < 2) continue;  // norms, biases
    double n = 1;
    for (int64_t d : spec.shape) n *= static_cast<double>(d);
    // The token embedding is a lookup, not a matmul; tied heads reuse it as one.
    if (path.find("token_emb") != std::string::npos) {
      if (dcfg.lm_head.get()) continue;
    }
    weight_uses += n;
  }
  const auto& tcfg = *dcfg.transformer.get();
  const double layers = static_cast<double>(tcfg.num_layers.get());
  const double seq = static_cast<double>(config().input.get()->max_len.get());
  // Forward: 2 FLOPs per weight use and 2 * 2 * T * dim for QK^T and AV per layer; backward
  // twice the forward.
  return 3.0 * (2.0 * weight_uses + 4.0 * layers * seq * static_cast<double>(dim));
}

void SpmdTrainer::append_metrics(const std::string& json_line) {
  if (!is_leader()) return;
  const std::string path = config().dir.get() + "/metrics.jsonl";
  std::ofstream out(path, std::ios::app);
  out << json_line << '\n';
  out.flush();
  if (!out) fail("cannot append to ", path);
}

int64_t SpmdTrainer::init_or_restore(data::InputIterator* iterator) {
  state_ = init_state();
  std::optional<int64_t> latest = checkpointer_->latest_step();
  if (!latest) {
    eval(state_.leaves());
    return 0;
  }
  // Each device reads the parts of the saved blocks its own blocks need: any mesh restores a
  // checkpoint saved on any other.
  RestoredCheckpoint r = checkpointer_->restore(*latest, state_);
  state_ = std::move(r.tree);
  eval(state_.leaves());
  Json extra;
  try {
    extra = Json::parse(r.extra_json);
  } catch (const std::exception& e) {
    fail(checkpoint_step_dir(config().dir.get(), *latest),
         "/index.json: extra state is not JSON: ", e.what());
  }
  if (!extra.is_object() || !extra.contains("step") || !extra["step"].is_number_integer() ||
      extra["step"].get<int64_t>() != *latest) {
    fail(checkpoint_step_dir(config().dir.get(), *latest),
         ": the checkpoint's trainer state does not record step ", *latest);
  }
  if (iterator && config().save_input_iterator.get()) {
    if (extra.contains("input_iterator") && extra["input_iterator"].is_string()) {
      iterator->restore(extra["input_iterator"].get<std::string>());
    } else {
      // Saved with save_input_iterator False, or converted from another format.
      std::printf("step %lld has no input position; the input starts from its beginning\n",
                  static_cast<long long>(*latest));
    }
  }
  return *latest;
}

void SpmdTrainer::save(int64_t step, data::InputIterator* iterator) {
  Json extra{{"step", step}};
  if (iterator && config().save_input_iterator.get()) extra["input_iterator"] = iterator->state();
  // Under a mesh every device writes its own blocks (see save_checkpoint).
  checkpointer_->save(step, state_, extra.dump());
}

std::map<std::string, EvalMetrics> SpmdTrainer::run_evalers(int64_t step, bool force) {
  std::map<std::string, EvalMetrics> results;
  for (auto& ev : evalers_) {
    if (!force && !ev->should_eval(step)) continue;
    const auto t0 = Clock::now();
    EvalMetrics m = ev->evaluate(step, state_.at("model"), eval_step_);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (is_leader()) {
      std::printf(
          "eval %-10s step %lld  loss %.4f  accuracy %.4f  perplexity %.2f  (%.0f "
          "tokens, %.1f s)\n",
          ev->name().c_str(), static_cast<long long>(step), m["loss"], m["accuracy"],
          m["perplexity"], m["num_tokens"], secs);
      std::fflush(stdout);
    }
    Json metrics = Json::object();
    for (const auto& [k, v] : m) metrics[k] = json_number(v);
    append_metrics(Json{{"step", step}, {"eval", {{ev->name(), metrics}}}}.dump());
    results[ev->name()] = std::move(m);
  }
  return results;
}

namespace {

// The loss and the model's summaries in one compiled function of {"model", "input"}.
SpmdEvaler::BatchFn make_eval_step(layers::Model& model,
                                   std::function<NestedTensor(const NestedTensor&)> shard_batch) {
  NestedFn fn = compile(NestedFn([&model](const NestedTensor& in) {
    FunctionalOutput<NestedTensor> out =
        functional(model, in.at("model"), in.at("input"), std::nullopt, /*is_training=*/false);
    const OutputCollection& oc = out.output_collection;
    // Every device gets the full scalars.
    return NestedTensor{
        {"loss", dist::replicate(astype(out.outputs.at("loss").tensor(), float32))},
        {"cross_entropy", dist::replicate(astype(oc.summary("cross_entropy").value(), float32))},
        {"accuracy", dist::replicate(astype(oc.summary("accuracy").value(), float32))},
        {"num_tokens", dist::replicate(astype(oc.summary("num_tokens").value(), float32))}};
  }));
  return [fn, shard_batch](const NestedTensor& params, const NestedTensor& batch) {
    return fn(NestedTensor{{"model", params}, {"input", shard_batch(batch)}});
  };
}

}  // namespace

std::map<std::string, EvalMetrics> SpmdTrainer::evaluate() {
  const Config& cfg = config();
  auto ckpt_cfg = cfg.checkpointer.get()->clone();
  ckpt_cfg->dir = cfg.dir.get();
  checkpointer_ = ckpt_cfg->instantiate<Checkpointer>();
  if (!checkpointer_->latest_step()) {
    fail("no committed checkpoint under ", cfg.dir.get(), "/checkpoints to evaluate");
  }
  evalers_.clear();
  for (const auto& [name, ecfg] : cfg.evalers.get()) {
    auto c = ecfg->clone();
    c->name = name;
    c->summary_writer->dir = cfg.dir.get() + "/summaries/eval_" + name;
    c->input = device_input_config(*c->input.get());
    auto scope = InstantiationScope::child("evalers['" + name + "']");
    evalers_.push_back(c->instantiate<SpmdEvaler>());
  }
  if (evalers_.empty()) fail("the config has no evalers");
  const int64_t step = init_or_restore(nullptr);
  eval_step_ = make_eval_step(*model_, [this](const NestedTensor& b) { return shard_batch(b); });
  return run_evalers(step, /*force=*/true);
}

NestedFn SpmdTrainer::make_train_step() {
  layers::Model& model = *model_;
  optim::Learner& learner = *learner_;
  const NestedParameterSpec* specs = &param_specs_;
  const bool sharded = mesh_.has_value();
  return compile(NestedFn([&model, &learner, specs, sharded](const NestedTensor& in) {
    auto [next_key, step_key] = split_key(in.at("prng_key").tensor());
    optim::ForwardFn forward = [&model, key = step_key, sharded](const NestedTensor& params_in,
                                                                 const NestedTensor& batch) {
      // Each parameter held to its own sharding: the constraint's VJP gives the gradient the
      // same sharding (reduce-scattered under FSDP) before the optimizer sees it.
      const NestedTensor params = !sharded ? params_in : params_in.map([](const Tensor& p) {
        return p.is_sharded() ? dist::with_sharding_constraint(p, *p.sharding()) : p;
      });
      FunctionalOutput<NestedTensor> out =
          functional(model, params, batch, key, /*is_training=*/true);
      return optim::ForwardOutput{out.outputs.at("loss").tensor(),
                                  scalar_summaries(out.output_collection.summaries()),
                                  out.output_collection.state_updates()};
    };
    optim::ForwardBackwardOutput fb = learner.forward_and_backward(
        forward, in.at("model"), in.at("learner"), in.at("input"), specs);
    NestedTensor summaries;
    summaries["model"] = fb.aux;
    summaries["learner"] = scalar_summaries(fb.summaries);
    NestedTensor params = fb.params, learner_state = fb.learner_state;
    Tensor loss = astype(fb.loss, float32);
    if (sharded) {
      // The next state keeps the layout of this one; scalars reach every device whole.
      auto keep = [](const NestedTensor& next, const NestedTensor& prev) {
        return NestedTensor::zip_map({&next, &prev}, [](const std::vector<Tensor>& v) {
          return v[1].is_sharded() ? dist::with_sharding_constraint(v[0], *v[1].sharding())
                                   : dist::replicate(v[0]);
        });
      };
      params = keep(params, in.at("model"));
      learner_state = keep(learner_state, in.at("learner"));
      summaries = summaries.map([](const Tensor& t) { return dist::replicate(t); });
      loss = dist::replicate(loss);
      next_key = dist::replicate(next_key);
    }
    return NestedTensor{{"model", params},
                        {"learner", learner_state},
                        {"prng_key", next_key},
                        {"loss", loss},
                        {"summaries", summaries}};
  }));
}

NestedTensor SpmdTrainer::init_state() const {
  const Tensor root = random::key(static_cast<uint64_t>(config().prng_seed.get()));
  auto [init_key, step_key] = split_key(root);
  NestedTensor params = model_->initialize_parameters_recursively(init_key);
  NestedTensor learner_state = learner_->init(params);
  return shard_state(
      NestedTensor{{"model", params}, {"learner", learner_state}, {"prng_key", step_key}});
}

TrainResult SpmdTrainer::run() {
  const Config& cfg = config();
  const std::string& dir = cfg.dir.get();
  const bool leader = is_leader();
  if (leader) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("cannot create the trainer dir ", dir, ": ", ec.message());
    // The config of this run, so `axlearn eval --trainer_dir` can rebuild the trainer.
    write_trainer_config(cfg, dir);
  }

  auto ckpt_cfg = cfg.checkpointer.get()->clone();
  ckpt_cfg->dir = dir;
  {
    auto scope = InstantiationScope::child("checkpointer");
    checkpointer_ = ckpt_cfg->instantiate<Checkpointer>();
  }
  if (leader) {
    auto sw_cfg = cfg.summary_writer.get()->clone();
    sw_cfg->dir = dir + "/summaries/train";
    summary_writer_ = sw_cfg->instantiate<SummaryWriter>();
  }
  evalers_.clear();
  for (const auto& [name, ecfg] : cfg.evalers.get()) {
    auto c = ecfg->clone();
    c->name = name;
    c->summary_writer->dir = dir + "/summaries/eval_" + name;
    c->input = device_input_config(*c->input.get());
    auto scope = InstantiationScope::child("evalers['" + name + "']");
    evalers_.push_back(c->instantiate<SpmdEvaler>());
  }
  {
    auto scope = InstantiationScope::child("input");
    input_ = device_input_config(*cfg.input.get())->instantiate<data::Input>();
  }
  std::unique_ptr<data::InputIterator> iterator = input_->make_iterator();

  TrainResult result;
  result.loss = std::nan("");
  int64_t step = init_or_restore(iterator.get());
  result.step = step;
  const int64_t max_step = cfg.max_step.get();
  if (step > 0 && leader) {
    std::printf("restored step %lld from %s\n", static_cast<long long>(step),
                checkpoint_step_dir(dir, step).c_str());
  }
  if (step == 0 && leader) {
    // The config as TensorBoard's text plugin shows it, one "path: value" per line.
    summary_writer_->add_text("trainer_config", "```\n" + cfg.debug_string() + "```", 0);
    summary_writer_->flush();
  }
  if (step >= max_step) {
    if (leader)
      std::printf("step %lld reached max_step %lld: nothing to train\n",
                  static_cast<long long>(step), static_cast<long long>(max_step));
    return result;
  }

  train_step_ = make_train_step();
  eval_step_ = make_eval_step(*model_, [this](const NestedTensor& b) { return shard_batch(b); });

  const data::Input::Config& icfg = *cfg.input.get();
  const double tokens_per_step =
      static_cast<double>(icfg.global_batch_size.get()) * static_cast<double>(icfg.max_len.get());
  const double flops_per_step = flops_per_token() * tokens_per_step;
  // Measured by the first device only: the MFU is printed there.
  const double peak_gflops = leader ? measure_matmul_peak_gflops() : 1.0;
  if (leader) {
    std::printf(
        "training %s: %lld parameters, steps %lld..%lld, %.0f tokens/step, dir %s\n",
        cfg.name.get().c_str(),
        [&] {
          long long n = 0;
          for (const auto& t : state_.at("model").leaves()) n += t.size();
          return n;
        }(),
        static_cast<long long>(step + 1), static_cast<long long>(max_step), tokens_per_step,
        dir.c_str());
    if (mesh_) {
      const dist::Communicator* comm = dist::current_communicator();
      std::printf("mesh %s over %lld devices (%s); the batch is split %lld ways\n",
                  mesh_->str().c_str(), static_cast<long long>(mesh_->size()),
                  comm ? comm->backend() : "?", static_cast<long long>(batch_shards()));
    }
    std::fflush(stdout);
  }

  std::optional<SignalScope> signals;
  if (leader) signals.emplace();
  Watchdog watchdog(cfg.watchdog_timeout_seconds.get());
  const int64_t log_every = cfg.log_every_n_steps.get();
  int64_t last_saved = step;
  double window_seconds = 0;  // step time since the last progress line
  int64_t window_steps = 0;
  double total_step_seconds = 0;
  int64_t steps_run = 0;

  while (step < max_step) {
    std::optional<NestedTensor> batch = iterator->next();
    if (!batch) fail("the training input ended at step ", step, " (is_training must be True)");
    const auto t0 = Clock::now();
    NestedTensor out = train_step_(NestedTensor{{"model", state_.at("model")},
                                                {"learner", state_.at("learner")},
                                                {"prng_key", state_.at("prng_key")},
                                                {"input", shard_batch(*batch)}});
    const double loss = scalar_of(out.at("loss").tensor());
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    ++step;
    if (!std::isfinite(loss)) {
      // The new state is discarded: the last committed checkpoint stays the newest.
      std::optional<int64_t> good = checkpointer_->latest_step();
      fail("step ", step, ": the loss is ", loss, "; training stopped. ",
           good ? "The last good checkpoint is step " + std::to_string(*good) + " in " +
                      checkpoint_step_dir(dir, *good)
                : std::string("No checkpoint was saved."));
    }
    state_ = NestedTensor{{"model", out.at("model")},
                          {"learner", out.at("learner")},
                          {"prng_key", out.at("prng_key")}};
    watchdog.progress(step);
    result.step = step;
    result.loss = loss;
    window_seconds += secs;
    ++window_steps;
    total_step_seconds += secs;
    ++steps_run;

    const NestedTensor& summaries = out.at("summaries");
    if (summary_writer_ && summary_writer_->should_write(step)) {
      std::vector<std::pair<std::string, Summary>> list;
      list.emplace_back("loss", Summary::scalar(out.at("loss").tensor()));
      for (const auto& [path, t] : summaries.flatten_with_paths()) {
        list.emplace_back(path, Summary::scalar(t));
      }
      summary_writer_->write(step, list);
    }
    if (leader && (step % log_every == 0 || step == max_step || steps_run == 1)) {
      auto find = [&](const std::string& suffix) -> std::optional<double> {
        for (const auto& [path, t] : summaries.at("learner").flatten_with_paths()) {
          if (path == suffix ||
              (path.size() > suffix.size() && path.compare(path.size() - suffix.size() - 1,
                                                           std::string::npos, "/" + suffix) == 0)) {
            return scalar_of(t);
          }
        }
        return std::nullopt;
      };
      // AdamW-decoupled style optimizers scale a constant learning rate by a schedule.
      std::optional<double> lr = find("learning_rate");
      std::optional<double> lr_scale = find("schedule_scale");
      if (lr && lr_scale) lr = *lr * *lr_scale;
      std::optional<double> grad_norm = find("gradient_norm");
      const double step_s = window_seconds / static_cast<double>(window_steps);
      const double tokens_per_s = tokens_per_step / step_s;
      const double mfu = flops_per_step / step_s / (peak_gflops * 1e9);
      const double eta = step_s * static_cast<double>(max_step - step);
      char lr_text[48] = "";
      if (lr) {
        std::snprintf(lr_text, sizeof lr_text, "lr %.3g", *lr);
      } else if (lr_scale) {
        std::snprintf(lr_text, sizeof lr_text, "lr_scale %.3g", *lr_scale);
      }
      std::printf(
          "step %6lld/%lld  loss %.4f  %s  grad_norm %.3f  %.0f tokens/s  %.0f ms/step  "
          "MFU %.1f%%  ETA %s\n",
          static_cast<long long>(step), static_cast<long long>(max_step), loss, lr_text,
          grad_norm.value_or(std::nan("")), tokens_per_s, step_s * 1e3, 100.0 * mfu,
          format_duration(eta).c_str());
      std::fflush(stdout);
      Json rec{{"step", step},
               {"loss", json_number(loss)},
               {"grad_norm", grad_norm ? json_number(*grad_norm) : Json(nullptr)},
               {"tokens_per_s", json_number(tokens_per_s)},
               {"step_ms", json_number(step_s * 1e3)},
               {"mfu", json_number(mfu)}};
      rec["learning_rate"] = lr ? json_number(*lr) : Json(nullptr);
      if (!lr && lr_scale) rec["learning_rate_scale"] = json_number(*lr_scale);
      append_metrics(rec.dump());
      window_seconds = 0;
      window_steps = 0;
    }

    int stop_signal = g_stop_signal.load();
    if (mesh_) {
      // Every device stops at the same step: the first to see a signal decides for all.
      stop_signal = int(dist::max_over_devices(*mesh_, double(stop_signal)));
    }
    if (checkpointer_->should_save(step) || step == max_step || stop_signal != 0) {
      save(step, iterator.get());
      last_saved = step;
    }
    if (stop_signal != 0) {
      if (leader)
        std::printf("received %s at step %lld: saved %s; exiting\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(step),
                    checkpoint_step_dir(dir, step).c_str());
      std::fflush(stdout);
      result.interrupted = true;
      return result;
    }
    // Every evaler also runs at max_step, so a run always ends with an evaluation.
    auto evals = run_evalers(step, /*force=*/step == max_step);
    for (auto& [name, m] : evals) result.last_eval[name] = std::move(m);
  }
  (void)last_saved;
  if (leader)
    std::printf("trained to step %lld in %.1f s of step time (%.0f tokens/s)\n",
                static_cast<long long>(step), total_step_seconds,
                tokens_per_step * static_cast<double>(steps_run) / total_step_seconds);
  return result;
}

ConfigPtr<SpmdTrainer::Config> read_trainer_config(const std::string& trainer_dir) {
  const std::string path = trainer_dir + "/trainer_config.json";
  std::ifstream in(path);
  if (!in) fail("cannot read ", path, " (not the folder of an `axlearn train` run?)");
  std::stringstream text;
  text << in.rdbuf();
  ConfigPtr<SpmdTrainer::Config> cfg;
  try {
    cfg = config_from_json_as<SpmdTrainer::Config>(Json::parse(text.str()));
  } catch (const Json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  cfg->dir = trainer_dir;
  return cfg;
}

void write_trainer_config(const SpmdTrainer::Config& cfg, const std::string& dir) {
  const std::string path = dir + "/trainer_config.json";
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    out << cfg.to_json_string() << '\n';
    out.flush();
    if (!out) fail("cannot write ", path, ".tmp");
  }
  std::error_code ec;
  fs::rename(path + ".tmp", path, ec);
  if (ec) fail("cannot write ", path, ": ", ec.message());
}

std::optional<std::string> apply_mesh_rules(SpmdTrainer::Config& cfg, const std::string& selector) {
  const OrderedDict<std::vector<std::string>> rules = cfg.mesh_rules.get();
  for (const auto& [pattern, overrides] : rules) {
    std::regex re;
    try {
      re = std::regex(pattern);
    } catch (const std::regex_error& e) {
      fail("mesh_rules['", pattern, "']: not a regular expression: ", e.what());
    }
    if (!std::regex_match(selector, re)) continue;
    for (const std::string& o : overrides) {
      try {
        apply_override(cfg, o);
      } catch (const Error& e) {
        fail("mesh_rules['", pattern, "']: ", e.what());
      }
    }
    return pattern;
  }
  return std::nullopt;
}

void use_one_device(SpmdTrainer::Config& cfg) {
  cfg.mesh_shape = std::vector<int64_t>(cfg.mesh_axis_names.get().size(), 1);
}

double measure_matmul_peak_gflops() {
  constexpr int64_t n = 1024;
  const Tensor a = random::normal(random::key(1), {n, n});
  const Tensor b = random::normal(random::key(2), {n, n});
  eval({a, b});
  eval({matmul(a, b)});  // warm-up: primitive creation, buffers
  // The best of several runs: a busy machine makes single timings (and so MFU) unreliable.
  double best = 0;
  for (int rep = 0; rep < 10; ++rep) {
    const auto t0 = Clock::now();
    Tensor c = matmul(a, b);
    eval({c});
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

}  // namespace axlearn::train
