#include "axlearn/cli/demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numbers>
#include <string>
#include <utility>

#include "axlearn/core/error.h"
#include "axlearn/core/nested.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"

namespace axlearn::cli {
namespace {

constexpr int64_t kNumClasses = 10;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Row i of a stacked (n, 2) key array.
Tensor key_at(const Tensor& keys, int64_t i) {
  return reshape(slice_axis(keys, 0, i, i + 1), {keys.shape(1)});
}

// A model is its parameter initialiser and its forward function x (B, 784) -> logits (B, 10).
struct Model {
  std::string name;
  std::function<NestedTensor(const Tensor& key, int64_t features)> init;
  std::function<Tensor(const NestedTensor& params, const Tensor& x)> apply;
};

Tensor dense(const NestedTensor& p, const Tensor& x) {
  return matmul(x, p.at("weight").tensor()) + p.at("bias").tensor();
}

Model softmax_regression() {
  return {"softmax",
          [](const Tensor&, int64_t features) {
            // Zero weights are fine for a convex model.
            return NestedTensor{{"linear", NestedTensor{{"weight", zeros({features, kNumClasses})},
                                                        {"bias", zeros({kNumClasses})}}}};
          },
          [](const NestedTensor& p, const Tensor& x) { return dense(p.at("linear"), x); }};
}

Model mlp(int64_t hidden) {
  return {"mlp",
          [hidden](const Tensor& key, int64_t features) {
            Tensor keys = random::split(key, 2);
            // He initialisation for the relu layer, LeCun for the output layer.
            Tensor w1 = random::normal(key_at(keys, 0), {features, hidden}) *
                        std::sqrt(2.0 / double(features));
            Tensor w2 = random::normal(key_at(keys, 1), {hidden, kNumClasses}) *
                        std::sqrt(1.0 / double(hidden));
            return NestedTensor{
                {"hidden", NestedTensor{{"weight", w1}, {"bias", zeros({hidden})}}},
                {"output", NestedTensor{{"weight", w2}, {"bias", zeros({kNumClasses})}}}};
          },
          [](const NestedTensor& p, const Tensor& x) {
            return dense(p.at("output"), relu(dense(p.at("hidden"), x)));
          }};
}

// Mean cross-entropy of logits (B, C) against int32 labels (B,).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  Tensor log_probs = log_softmax(logits, -1);
  Tensor picked = take_along_axis(log_probs, expand_dims(labels, 1), 1);  // (B, 1)
  return -mean(picked);
}

Tensor accuracy(const Tensor& logits, const Tensor& labels) {
  return mean(astype(equal(argmax(logits, -1), labels), float32));
}

// Adam (Kingma & Ba) with bias correction folded into the step size, and the step size decayed
// to 0 along a half cosine over `total_steps`, which settles the final epochs' accuracy.
class Adam {
 public:
  Adam(double learning_rate, int64_t total_steps) : lr_(learning_rate), total_steps_(total_steps) {}

  void init(const NestedTensor& params) {
    m_ = params.map([](const Tensor& p) { return zeros_like(p); });
    v_ = m_;
    step_ = 0;
  }

  // Returns the updated parameters; the moments are updated in place (lazily).
  NestedTensor update(const NestedTensor& params, const NestedTensor& grads) {
    const double schedule =
        0.5 * (1 + std::cos(std::numbers::pi * double(step_) / double(total_steps_)));
    ++step_;
    const double lr_t = lr_ * schedule * std::sqrt(1 - std::pow(kBeta2, double(step_))) /
                        (1 - std::pow(kBeta1, double(step_)));
    m_ = NestedTensor::zip_map({&m_, &grads}, [](const std::vector<Tensor>& t) {
      return kBeta1 * t[0] + (1 - kBeta1) * t[1];
    });
    v_ = NestedTensor::zip_map({&v_, &grads}, [](const std::vector<Tensor>& t) {
      return kBeta2 * t[0] + (1 - kBeta2) * square(t[1]);
    });
    return NestedTensor::zip_map({&params, &m_, &v_}, [lr_t](const std::vector<Tensor>& t) {
      return t[0] - lr_t * t[1] / (sqrt(t[2]) + kEpsilon);
    });
  }

  std::vector<Tensor> state() const {
    std::vector<Tensor> out = m_.leaves();
    for (const Tensor& t : v_.leaves()) out.push_back(t);
    return out;
  }

 private:
  static constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEpsilon = 1e-8;
  double lr_;
  int64_t total_steps_;
  int64_t step_ = 0;
  NestedTensor m_, v_;
};

DemoResult train(const Model& model, const data::MnistDataset& ds, const DemoOptions& opt,
                 std::ostream& out) {
  const Clock::time_point start = Clock::now();
  const int64_t n = ds.train.images.shape(0);
  const int64_t steps_per_epoch = n / opt.batch_size;  // the last partial batch is dropped
  Tensor keys = random::split(random::key(opt.seed), 2);
  NestedTensor params = model.init(key_at(keys, 0), ds.train.images.shape(1));
  Adam adam(opt.learning_rate, steps_per_epoch * opt.epochs);
  adam.init(params);
  eval(params);

  DemoResult result{model.name};
  Tensor shuffle_key = key_at(keys, 1);
  for (int epoch = 1; epoch <= opt.epochs; ++epoch) {
    Tensor order = random::permutation(random::fold_in(shuffle_key, uint32_t(epoch)), n);
    eval(order);

    double loss_sum = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      Tensor idx = slice_axis(order, 0, s * opt.batch_size, (s + 1) * opt.batch_size);
      Tensor x = take(ds.train.images, idx, 0);  // (B, 784)
      Tensor y = take(ds.train.labels, idx, 0);  // (B,)
      NestedValueAndGrad vg = value_and_grad(
          [&](const NestedTensor& p) { return cross_entropy(model.apply(p, x), y); }, params);
      params = adam.update(params, vg.grads);
      std::vector<Tensor> live = params.leaves();
      for (const Tensor& t : adam.state()) live.push_back(t);
      live.push_back(vg.value);
      eval(live);
      loss_sum += vg.value.item<double>();
    }
    result.final_train_loss = loss_sum / double(steps_per_epoch);
    result.test_accuracy =
        accuracy(model.apply(params, ds.test.images), ds.test.labels).item<double>();
    result.seconds = seconds_since(start);
    char line[160];
    std::snprintf(line, sizeof(line),
                  "%-7s epoch %2d/%d  train_loss %.4f  test_accuracy %.4f  elapsed %.1fs\n",
                  model.name.c_str(), epoch, opt.epochs, result.final_train_loss,
                  result.test_accuracy, result.seconds);
    out << line << std::flush;
  }
  return result;
}

}  // namespace

void validate(const DemoOptions& o) {
  if (o.model != "softmax" && o.model != "mlp" && o.model != "both") {
    fail("--model: '", o.model, "' is not one of softmax, mlp, both");
  }
  if (o.epochs < 1) fail("--epochs: must be at least 1, got ", o.epochs);
  if (o.batch_size < 1) fail("--batch_size: must be at least 1, got ", o.batch_size);
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    fail("--learning_rate: must be a positive finite number, got ", o.learning_rate);
  }
  if (o.hidden < 1) fail("--hidden: must be at least 1, got ", o.hidden);
  if (o.limit_train < 0) fail("--limit_train: must be 0 (all) or positive, got ", o.limit_train);
}

std::vector<DemoResult> run_demo(const DemoOptions& opt, std::ostream& out) {
  validate(opt);
  const Clock::time_point load_start = Clock::now();
  data::MnistDataset ds = data::load_fashion_mnist(opt.data_dir);
  if (opt.limit_train > 0 && opt.limit_train < ds.train.images.shape(0)) {
    ds.train.images = slice_axis(ds.train.images, 0, 0, opt.limit_train);
    ds.train.labels = slice_axis(ds.train.labels, 0, 0, opt.limit_train);
    eval(ds.train.images, ds.train.labels);
  }
  const int64_t n_train = ds.train.images.shape(0);
  if (opt.batch_size > n_train) {
    fail("--batch_size: ", opt.batch_size, " is larger than the ", n_train, " training examples");
  }
  char line[200];
  std::snprintf(line, sizeof(line),
                "Fashion-MNIST from %s: %lld train, %lld test examples (loaded in %.1fs)\n",
                opt.data_dir.c_str(), (long long)n_train, (long long)ds.test.images.shape(0),
                seconds_since(load_start));
  out << line;
  std::snprintf(line, sizeof(line),
                "Adam, learning rate %g with cosine decay, batch %d, %d epochs, seed %llu\n",
                opt.learning_rate, opt.batch_size, opt.epochs, (unsigned long long)opt.seed);
  out << line << std::flush;

  std::vector<Model> models;
  if (opt.model != "mlp") models.push_back(softmax_regression());
  if (opt.model != "softmax") models.push_back(mlp(opt.hidden));

  std::vector<DemoResult> results;
  for (const Model& m : models) results.push_back(train(m, ds, opt, out));
  for (const DemoResult& r : results) {
    std::string label =
        r.model == "mlp" ? "mlp (784-" + std::to_string(opt.hidden) + "-10)" : "softmax (784-10)";
    std::snprintf(line, sizeof(line),
                  "summary: %-18s test_accuracy %.2f%%  train_loss %.4f  %.1fs\n", label.c_str(),
                  100 * r.test_accuracy, r.final_train_loss, r.seconds);
    out << line;
  }
  out << std::flush;
  return results;
}

}  // namespace axlearn::cli
