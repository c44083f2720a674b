#include "axlearn/cli/bench.h"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <unordered_map>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/primitives.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/communicator.h"
#include "axlearn/dist/mpi_communicator.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/module/base_layer.h"
#include "axlearn/module/module.h"
#include "axlearn/module/summary.h"

namespace axlearn::cli {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// A fresh directory under the system temp dir, removed (with its contents) on scope exit.
class TempDir {
 public:
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "axlearn_bench_XXXXXX").string();
    if (!mkdtemp(templ.data())) fail("cannot create a temporary directory from ", templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The synthetic batch: uniform token ids in [0, vocab), (batch, seq) int32, for both the inputs
// and the targets (no corpus, so any model and vocabulary size runs).
NestedTensor synthetic_batch(std::mt19937& rng, int64_t batch, int64_t seq, int64_t vocab) {
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  auto draw = [&] {
    std::vector<int32_t> v(static_cast<size_t>(batch * seq));
    for (int32_t& x : v) x = id(rng);
    return array(v, {batch, seq});
  };
  NestedTensor b{{"input_ids", draw()}, {"target_labels", draw()}};
  eval(b);
  return b;
}

// Same kind of measurement as train::measure_matmul_peak_gflops, in bfloat16 (the rate the
// AVX512_BF16 dot products reach), so a bf16 step's MFU can be read against its own peak.
double measure_bf16_matmul_peak_gflops() {
  constexpr int64_t n = 1024;
  const Tensor a = astype(random::normal(random::key(1), {n, n}), bfloat16);
  const Tensor b = astype(random::normal(random::key(2), {n, n}), bfloat16);
  eval({a, b});
  eval({matmul(a, b)});
  double best = 0;
  for (int rep = 0; rep < 10; ++rep) {
    const auto t0 = Clock::now();
    const Tensor c = matmul(a, b);
    eval({c});
    best = std::max(best, 2.0 * n * n * n / seconds_since(t0) / 1e9);
  }
  return best;
}

// ---------------------------------------------------------------- profile

// FLOPs of a dot_general node: 2 * |output| * |contracted dims|.
double dot_flops(const Tensor& t) {
  const auto* dot = dynamic_cast<const DotGeneral*>(t.primitive());
  if (!dot) return 0;
  double k = 1;
  for (int d : dot->dims().lhs_contract) k *= static_cast<double>(t.inputs()[0].shape(d));
  return 2.0 * static_cast<double>(t.size()) * k;
}

std::string signature_of(const Tensor& t) {
  std::ostringstream os;
  t.primitive()->print(os);
  os << "(";
  for (size_t i = 0; i < t.inputs().size(); ++i) {
    const Tensor& in = t.inputs()[i];
    os << (i ? ", " : "") << dtype_name(in.dtype()) << shape_str(in.shape());
  }
  os << ") -> " << dtype_name(t.dtype()) << shape_str(t.shape());
  return os.str();
}

struct OpTime {
  double seconds = 0;
  double flops = 0;
  int64_t calls = 0;
};

// Runs the lazy graph behind `outputs` one primitive at a time (no fusion, no CSE: what eager
// evaluation does), timing each kernel; arrays are dropped after their last reader.
void profile_graph(const std::vector<Tensor>& outputs, int top, double compiled_step_ms) {
  // Topological order by an iterative depth-first walk.
  std::vector<Tensor> order;
  std::unordered_map<const TensorNode*, int> readers;
  {
    std::unordered_map<const TensorNode*, bool> seen;
    std::vector<std::pair<Tensor, size_t>> stack;
    for (const Tensor& o : outputs) {
      if (seen[o.node_ptr().get()]) continue;
      seen[o.node_ptr().get()] = true;
      stack.emplace_back(o, 0);
      while (!stack.empty()) {
        auto& [t, next] = stack.back();
        const bool leaf = t.is_evaluated() || !t.primitive();
        if (!leaf && next < t.inputs().size()) {
          const Tensor in = t.inputs()[next++];
          ++readers[in.node_ptr().get()];
          if (!seen[in.node_ptr().get()]) {
            seen[in.node_ptr().get()] = true;
            stack.emplace_back(in, 0);
          }
          continue;
        }
        order.push_back(t);
        stack.pop_back();
      }
    }
  }
  for (const Tensor& o : outputs) ++readers[o.node_ptr().get()];  // outputs stay alive

  std::unordered_map<const TensorNode*, Array> value;
  std::map<std::string, OpTime> by_name, by_signature;
  double total = 0;
  double total_flops = 0;
  int64_t kernels = 0;
  std::vector<Array> ins;
  for (const Tensor& t : order) {
    const TensorNode* node = t.node_ptr().get();
    if (t.is_evaluated()) {
      value[node] = t.node().data;
      continue;
    }
    if (!t.primitive()) fail("bench profile: the step graph has an unbound placeholder");
    ins.clear();
    for (const Tensor& in : t.inputs()) ins.push_back(value.at(in.node_ptr().get()));
    Array out;
    out.shape = t.shape();
    out.dtype = t.dtype();
    const auto t0 = Clock::now();
    t.primitive()->eval_cpu(ins, out);
    const double s = seconds_since(t0);
    value[node] = std::move(out);
    for (const Tensor& in : t.inputs()) {
      if (--readers[in.node_ptr().get()] == 0) value.erase(in.node_ptr().get());
    }
    const double f = dot_flops(t);
    for (OpTime* row : {&by_name[t.primitive()->name()], &by_signature[signature_of(t)]}) {
      row->seconds += s;
      row->flops += f;
      ++row->calls;
    }
    total += s;
    total_flops += f;
    ++kernels;
  }

  auto print_rows = [&](const std::map<std::string, OpTime>& rows, int limit) {
    std::vector<std::pair<std::string, OpTime>> sorted(rows.begin(), rows.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    if (limit > 0 && static_cast<int>(sorted.size()) > limit) sorted.resize(size_t(limit));
    for (const auto& [key, r] : sorted) {
      std::fprintf(stderr, "  %6.1f%%  %9.2f ms  %5lld calls", 100.0 * r.seconds / total,
                   r.seconds * 1e3, static_cast<long long>(r.calls));
      if (r.flops > 0) {
        std::fprintf(stderr, "  %6.1f GFLOP/s", r.flops / r.seconds / 1e9);
      } else {
        std::fprintf(stderr, "  %14s", "");
      }
      std::fprintf(stderr, "  %s\n", key.c_str());
    }
  };
  std::fprintf(stderr,
               "profile: one step run op by op (unfused): %lld kernels, %.1f ms in kernels "
               "(compiled step: %.1f ms); matmuls %.2f GFLOP at %.1f GFLOP/s\n",
               static_cast<long long>(kernels), total * 1e3, compiled_step_ms,
               total_flops / 1e9, total_flops / std::max(1e-12, by_name["dot_general"].seconds) / 1e9);
  std::fprintf(stderr, "by primitive:\n");
  print_rows(by_name, 0);
  std::fprintf(stderr, "top %d op signatures:\n", top);
  print_rows(by_signature, top);
}

// The body of SpmdTrainer::make_train_step, uncompiled, on its own model and learner built
// from the same config, so its lazy graph can be walked op by op.
std::vector<Tensor> train_step_graph(const train::SpmdTrainer::Config& cfg,
                                     const NestedTensor& state, const NestedTensor& batch) {
  auto mcfg = cfg.model.get()->clone();
  mcfg->name = "model";
  std::unique_ptr<layers::Model> model = mcfg->instantiate<layers::Model>(nullptr);
  auto lcfg = cfg.learner.get()->clone();
  lcfg->name = "learner";
  if (!lcfg->train_dtype.get() && cfg.train_dtype.get()) lcfg->train_dtype = *cfg.train_dtype.get();
  std::unique_ptr<optim::Learner> learner = lcfg->instantiate<optim::Learner>(nullptr);
  const NestedParameterSpec specs = model->create_parameter_specs_recursively();

  auto [next_key, step_key] = split_key(state.at("prng_key").tensor());
  std::vector<Tensor> outputs{next_key};
  optim::ForwardFn forward = [&, key = step_key](const NestedTensor& params,
                                                 const NestedTensor& inputs) {
    FunctionalOutput<NestedTensor> out =
        functional(*model, params, inputs, key, /*is_training=*/true);
    for (const auto& [path, s] : out.output_collection.summaries()) {
      if (s.kind() == Summary::Kind::kScalar) outputs.push_back(s.value());
    }
    return optim::ForwardOutput{out.outputs.at("loss").tensor(), NestedTensor(),
                                out.output_collection.state_updates()};
  };
  optim::ForwardBackwardOutput fb = learner->forward_and_backward(
      forward, state.at("model"), state.at("learner"), batch, &specs);
  outputs.push_back(fb.loss);
  for (const Tensor& t : fb.params.leaves()) outputs.push_back(t);
  for (const Tensor& t : fb.learner_state.leaves()) outputs.push_back(t);
  for (const auto& [path, s] : fb.summaries) {
    if (s.kind() == Summary::Kind::kScalar) outputs.push_back(s.value());
  }
  return outputs;
}

}  // namespace

int run_bench_train_step(const BenchOptions& o, std::ostream& out) {
  if (o.steps < 1) fail("--steps must be at least 1, got ", o.steps);
  if (o.warmup < 1) fail("--warmup must be at least 1 (the first step compiles), got ", o.warmup);
  if (o.dtype != "f32" && o.dtype != "bf16") fail("--dtype must be f32 or bf16, got ", o.dtype);
  if (o.devices < 1) fail("--devices must be at least 1, got ", o.devices);
  if (o.profile && (o.devices > 1 || dist::mpi_launched())) {
    fail("--profile runs the step op by op on one device; leave out --devices");
  }

  const bool bf16 = o.dtype == "bf16";

  TempDir dir;
  ConfigPtr<train::SpmdTrainer::Config> cfg = experiments::trainer_config(o.config);
  cfg->dir = dir.path();
  apply_overrides(*cfg, o.overrides);
  if (bf16) cfg->train_dtype = std::optional<Dtype>(bfloat16);
  const int64_t batch = cfg->input.get()->global_batch_size.get();
  const int64_t seq = cfg->input.get()->max_len.get();
  const int64_t vocab = cfg->model.get()->decoder.get()->vocab_size.get();
  // The peak is measured before and after the steps, on all of this process's cores, and the
  // higher one kept: on a shared machine a single measurement can land in a busy moment and
  // inflate the MFU.
  double peak = train::measure_matmul_peak_gflops();
  double peak_bf16 = bf16 ? measure_bf16_matmul_peak_gflops() : 0;

  // What the first device measures.
  std::vector<double> step_s;
  double first_step_s = 0, first_loss = 0, last_loss = 0, flops_per_token = 0;
  int64_t params = 0, state_bytes = 0, device_state_bytes = 0, devices = 1;
  std::string mesh_text;
  std::map<std::string, dist::CommStats> comm;
  NestedTensor last_batch, last_state;
  std::mutex mu;

  dist::run_spmd(o.devices, [&](int64_t rank) {
    std::unique_ptr<train::SpmdTrainer> trainer;
    {
      std::lock_guard<std::mutex> lock(mu);
      trainer = cfg->instantiate<train::SpmdTrainer>(nullptr);
    }
    NestedTensor state = trainer->init_state();
    eval(state);
    NestedFn step = trainer->make_train_step();
    std::mt19937 rng(0);  // the same global batches on every device
    std::vector<double> times;
    double first_s = 0, first_l = 0, last_l = 0;
    NestedTensor global_batch;
    for (int i = 0; i < o.warmup + o.steps; ++i) {
      global_batch = synthetic_batch(rng, batch, seq, vocab);
      const NestedTensor placed = trainer->place_global_batch(global_batch);
      eval(placed);
      if (i == o.warmup) dist::reset_comm_stats();
      const auto t0 = Clock::now();
      NestedTensor r = step(NestedTensor{{"model", state.at("model")},
                                         {"learner", state.at("learner")},
                                         {"prng_key", state.at("prng_key")},
                                         {"input", placed}});
      eval(r);
      const double loss = astype(r.at("loss").tensor(), float64).item<double>();
      const double sec = seconds_since(t0);
      state = NestedTensor{
          {"model", r.at("model")}, {"learner", r.at("learner")}, {"prng_key", r.at("prng_key")}};
      if (i == 0) {
        first_s = sec;
        first_l = loss;
      }
      if (i >= o.warmup) times.push_back(sec);
      last_l = loss;
    }
    if (rank != 0) return;
    step_s = times;
    first_step_s = first_s;
    first_loss = first_l;
    last_loss = last_l;
    comm = dist::comm_stats();
    flops_per_token = trainer->flops_per_token();
    for (const Tensor& t : state.at("model").leaves()) params += t.size();
    for (const char* key : {"model", "learner"}) {
      for (const Tensor& t : state.at(key).leaves()) {
        state_bytes += int64_t(t.nbytes());
        device_state_bytes += int64_t(t.local().nbytes());
      }
    }
    if (trainer->mesh()) {
      devices = trainer->mesh()->size();
      mesh_text = trainer->mesh()->str();
    }
    last_batch = global_batch;
    last_state = state;
  });
  if (step_s.empty()) return 0;  // another MPI rank: the first one reports

  const double step_med = median(step_s);
  const double tokens = static_cast<double>(batch * seq);
  const double gflops = flops_per_token * tokens / step_med / 1e9;
  peak = std::max(peak, train::measure_matmul_peak_gflops());
  if (bf16) peak_bf16 = std::max(peak_bf16, measure_bf16_matmul_peak_gflops());
  nlohmann::json j{{"framework", "axlearn"},
                   {"config", o.config},
                   {"dtype", o.dtype},
                   {"batch", batch},
                   {"seq", seq},
                   {"params", params},
                   {"steps", o.steps},
                   {"tokens_per_s", tokens / step_med},
                   {"step_ms", step_med * 1e3},
                   {"step_ms_min", *std::min_element(step_s.begin(), step_s.end()) * 1e3},
                   {"first_step_ms", first_step_s * 1e3},
                   {"loss_first", first_loss},
                   {"loss_last", last_loss},
                   {"gflops", gflops},
                   {"peak_gflops", peak},
                   {"mfu", gflops / peak},
                   {"threads", omp_get_max_threads()}};
  if (bf16) {
    j["peak_gflops_bf16"] = peak_bf16;
    j["mfu_bf16"] = gflops / peak_bf16;
  }
  if (devices > 1) {
    // Per device: its share of parameters + optimizer state, and what it received through
    // collectives per step (ring volumes), by collective.
    j["devices"] = devices;
    j["mesh"] = mesh_text;
    j["state_bytes"] = state_bytes;
    j["device_state_bytes"] = device_state_bytes;
    nlohmann::json c = nlohmann::json::object();
    double total = 0;
    for (const auto& [name, st] : comm) {
      c[name] = {{"calls_per_step", double(st.calls) / o.steps},
                 {"bytes_per_step", st.bytes / o.steps}};
      total += st.bytes / o.steps;
    }
    j["comm"] = c;
    j["comm_bytes_per_step"] = total;
  }
  j["peak_rss_mb"] = peak_rss_mb();  // before the profile, which keeps a second model around
  out << j.dump() << std::endl;

  if (o.profile) {
    profile_graph(train_step_graph(*cfg, last_state, last_batch), o.profile_top, step_med * 1e3);
  }
  return 0;
}

}  // namespace axlearn::cli
