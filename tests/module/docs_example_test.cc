// The example layer of docs/modules.md, compiled and run. DocsTest.CodeBlocksAreThisFile checks
// that every ```cpp block of the doc appears verbatim in this file, so the two stay in sync.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

// [docs] includes
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/module/base_layer.h"

// [docs] end
// [docs] linear
namespace my_layers {

using namespace axlearn;

// y = x @ weight (+ bias). x: (..., input_dim) -> (..., output_dim).
class Linear : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input feature dim."};
    Field<int64_t> output_dim{this, "output_dim", REQUIRED, "Output feature dim."};
    Field<bool> bias{this, "bias", true, "Whether to add a learned bias."};
  };
  AXLEARN_CONFIGURABLE(Linear, "my_layers.Linear")

  Linear(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {}

  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    Tensor y = matmul(x, parameter("weight"));
    if (config().bias) y = y + parameter("bias");
    return y;
  }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    const Config& cfg = config();
    std::vector<std::pair<std::string, ParameterSpec>> specs;
    specs.push_back(
        {"weight",
         {.shape = {cfg.input_dim, cfg.output_dim}, .mesh_axes = cfg.param_partition_spec}});
    if (cfg.bias) specs.push_back({"bias", {.shape = {cfg.output_dim}}});
    return specs;
  }
};
// [docs] end

// [docs] feed_forward
enum class Activation { kRelu, kGelu };
AXLEARN_CONFIG_ENUM(Activation, {Activation::kRelu, "relu"}, {Activation::kGelu, "gelu"})

// x + linear2(activation(linear1(x))). x: (batch, input_dim).
class FeedForward : public BaseLayer {
 public:
  struct Config : BaseLayer::Config {
    AXLEARN_CONFIG(Config)
    Field<int64_t> input_dim{this, "input_dim", REQUIRED, "Input and output dim."};
    Field<int64_t> hidden_dim{this, "hidden_dim", REQUIRED, "Hidden dim."};
    Field<Activation> activation{this, "activation", Activation::kRelu, "Nonlinearity."};
    Field<ConfigPtr<Linear::Config>> linear1{this, "linear1", Linear::default_config(),
                                             "Input projection; dims are filled in."};
    Field<ConfigPtr<Linear::Config>> linear2{this, "linear2",
                                             Linear::default_config().set("bias", false),
                                             "Output projection; dims are filled in."};
  };
  AXLEARN_CONFIGURABLE(FeedForward, "my_layers.FeedForward")

  FeedForward(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
    ConfigPtr<Linear::Config> c1 = cfg.linear1;
    c1->set("input_dim", cfg.input_dim.get()).set("output_dim", cfg.hidden_dim.get());
    linear1_ = &add_child<Linear>("linear1", c1);
    ConfigPtr<Linear::Config> c2 = cfg.linear2;
    c2->set("input_dim", cfg.hidden_dim.get()).set("output_dim", cfg.input_dim.get());
    linear2_ = &add_child<Linear>("linear2", c2);
    register_method("forward", [this](const NestedTensor& inputs) {
      return NestedTensor{{"y", forward(inputs.at("x").tensor())}};
    });
  }

  Tensor forward(const Tensor& x) const {
    auto scope = enter_context();
    Tensor h = linear1_->forward(x);
    h = config().activation.get() == Activation::kRelu ? relu(h) : gelu(h);
    add_summary("hidden_mean", mean(h));
    return x + linear2_->forward(h);
  }

 private:
  const Linear* linear1_;
  const Linear* linear2_;
};

}  // namespace my_layers
// [docs] end

namespace my_layers {
namespace {

struct ExampleResult {
  std::string debug_string;
  NestedTensor params;
  Tensor x, y, hidden_mean;
  NestedTensor grads;
};

ExampleResult run_example() {
  ExampleResult r;
  // [docs] usage
  auto cfg = FeedForward::default_config();
  cfg->name = "ffn";
  cfg->input_dim = 4;
  cfg->hidden_dim = 16;
  apply_override(*cfg, "activation=gelu");
  apply_override(*cfg, "linear1.param_partition_spec=[fsdp, model]");
  std::cout << cfg->debug_string() << "\n";

  std::unique_ptr<FeedForward> ffn = cfg->instantiate<FeedForward>(/*parent=*/nullptr);
  NestedTensor params = ffn->initialize_parameters_recursively(random::key(0));

  Tensor x = random::normal(random::key(1), {2, 4});
  auto out = functional(*ffn, params, {{"x", x}}, random::key(2), /*is_training=*/true);
  Tensor y = out.outputs.at("y").tensor();  // (2, 4)
  const Summary& hidden_mean = out.output_collection.summary("hidden_mean");

  auto loss = [&](const NestedTensor& p) {
    auto o = functional_call(*ffn, p, std::nullopt, true, [&] { return ffn->forward(x); });
    return mean(square(o.outputs));
  };
  NestedTensor grads = grad(loss, params);  // same tree as params
  // [docs] end
  r.debug_string = cfg->debug_string();
  r.params = params;
  r.x = x;
  r.y = y;
  r.hidden_mean = hidden_mean.value();
  r.grads = grads;
  return r;
}

TEST(DocsExampleTest, FeedForwardRunsAsDocumented) {
  const ExampleResult r = run_example();
  EXPECT_EQ(r.debug_string, R"(activation: 'gelu'
hidden_dim: 16
input_dim: 4
klass: 'my_layers.FeedForward'
linear1.bias: True
linear1.klass: 'my_layers.Linear'
linear1.param_partition_spec[0]: 'fsdp'
linear1.param_partition_spec[1]: 'model'
linear2.bias: False
linear2.klass: 'my_layers.Linear'
name: 'ffn')");
  std::vector<std::string> paths;
  for (const auto& [p, t] : r.params.flatten_with_paths()) paths.push_back(p);
  EXPECT_EQ(paths, (std::vector<std::string>{"linear1/bias", "linear1/weight", "linear2/weight"}));

  // Reference forward pass in f64 loops: y = x + gelu(x W1 + b1) W2.
  const auto x = r.x.to_vector<double>();
  const auto w1 = r.params.at_path("linear1/weight").tensor().to_vector<double>();
  const auto b1 = r.params.at_path("linear1/bias").tensor().to_vector<double>();
  const auto w2 = r.params.at_path("linear2/weight").tensor().to_vector<double>();
  const auto y = r.y.to_vector<double>();
  double hidden_sum = 0;
  for (int b = 0; b < 2; ++b) {
    double h[16];
    for (int j = 0; j < 16; ++j) {
      double a = b1[size_t(j)];
      for (int i = 0; i < 4; ++i) a += x[size_t(b * 4 + i)] * w1[size_t(i * 16 + j)];
      h[j] = 0.5 * a * (1 + std::erf(a / std::sqrt(2.0)));
      hidden_sum += h[j];
    }
    for (int k = 0; k < 4; ++k) {
      double o = x[size_t(b * 4 + k)];
      for (int j = 0; j < 16; ++j) o += h[j] * w2[size_t(j * 4 + k)];
      EXPECT_NEAR(y[size_t(b * 4 + k)], o, 1e-5);
    }
  }
  EXPECT_NEAR(r.hidden_mean.item<double>(), hidden_sum / 32, 1e-6);

  // The gradient of mean(y^2) w.r.t. linear2's weight, by central differences on one entry.
  const double g = r.grads.at_path("linear2/weight").tensor().to_vector<double>()[5];
  auto loss_at = [&](double delta) {
    NestedTensor p = r.params;
    auto w = p.at_path("linear2/weight").tensor().to_vector<double>();
    w[5] += delta;
    p["linear2"]["weight"] = array(w, {16, 4}, float32);
    auto ffn = my_layers::FeedForward::default_config()
                   .set("name", "ffn")
                   .set("input_dim", 4)
                   .set("hidden_dim", 16)
                   .set("activation", "gelu")
                   ->instantiate<FeedForward>(nullptr);
    auto o = functional(*ffn, p, {{"x", r.x}}, std::nullopt, false);
    return mean(square(astype(o.outputs.at("y").tensor(), float64))).item<double>();
  };
  EXPECT_NEAR(g, (loss_at(1e-3) - loss_at(-1e-3)) / 2e-3, 1e-3);
}

// Every ```cpp block of docs/modules.md is a piece of this file (compared line by line,
// ignoring indentation).
TEST(DocsExampleTest, CodeBlocksAreThisFile) {
  auto lines_of = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      const size_t a = line.find_first_not_of(' ');
      out.push_back(a == std::string::npos ? "" : line.substr(a));
    }
    return out;
  };
  auto read = [](const std::string& rel) {
    std::ifstream f(std::string(AXLEARN_SOURCE_DIR) + "/" + rel);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  const std::string doc = read("docs/modules.md");
  const std::vector<std::string> source = lines_of(read("tests/module/docs_example_test.cc"));
  ASSERT_FALSE(doc.empty());
  int blocks = 0;
  for (size_t pos = 0; (pos = doc.find("```cpp\n", pos)) != std::string::npos;) {
    const size_t start = pos + 7;
    const size_t end = doc.find("```", start);
    ASSERT_NE(end, std::string::npos);
    const std::vector<std::string> block = lines_of(doc.substr(start, end - start));
    const bool found =
        std::search(source.begin(), source.end(), block.begin(), block.end()) != source.end();
    EXPECT_TRUE(found) << "a docs/modules.md block is not in this file:\n"
                       << doc.substr(start, end - start);
    ++blocks;
    pos = end + 3;
  }
  EXPECT_GE(blocks, 3);
}

}  // namespace
}  // namespace my_layers
