// The example of docs/config.md, compiled and run. DocsConfigTest.CodeBlocksAreThisFile checks
// that every ```cpp block of the doc appears in this file (line by line, ignoring indentation).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

// [docs] declare
#include "axlearn/config/configurable.h"

namespace my_app {

using namespace axlearn;

using Schedule = std::function<double(int64_t step)>;

// A function config: its fields are the function's arguments, call() builds the result.
struct WarmupSchedule : FunctionConfig<Schedule> {
  AXLEARN_FUNCTION_CONFIG(WarmupSchedule, "my_app.schedule.warmup")
  Field<double> peak{this, "peak", REQUIRED, "Value reached after the warmup."};
  Field<int64_t> warmup_steps{this, "warmup_steps", 100, "Length of the linear warmup."};

 protected:
  Schedule call() const override {
    const double p = peak;
    const int64_t n = warmup_steps;
    return [p, n](int64_t step) { return step >= n ? p : p * double(step) / double(n); };
  }
};

struct ConstantSchedule : FunctionConfig<Schedule> {
  AXLEARN_FUNCTION_CONFIG(ConstantSchedule, "my_app.schedule.constant")
  Field<double> value{this, "value", REQUIRED, "The value at every step."};

 protected:
  Schedule call() const override {
    const double v = value;
    return [v](int64_t) { return v; };
  }
};

// A configurable class: everything that configures it is in its Config.
class Optimizer : public Configurable {
 public:
  struct Config : Configurable::Config {
    AXLEARN_CONFIG(Config)
    Field<double> weight_decay{this, "weight_decay", 0.0, "Decoupled weight decay rate."};
    Field<std::vector<double>> betas{this, "betas", {0.9, 0.95}, "Adam's b1 and b2."};
    Field<std::optional<double>> clip_norm{this, "clip_norm", std::nullopt,
                                           "Global gradient norm bound; None: no clipping."};
    Field<ConfigPtr<FunctionConfig<Schedule>>> learning_rate{
        this, "learning_rate", WarmupSchedule::default_config(), "Any schedule."};
  };
  AXLEARN_CONFIGURABLE(Optimizer, "my_app.Optimizer")

  explicit Optimizer(const Config& cfg) : Configurable(cfg) {
    auto scope = InstantiationScope::child("learning_rate");  // errors say learning_rate.peak
    learning_rate_ = cfg.learning_rate->instantiate();
  }

  double learning_rate(int64_t step) const { return learning_rate_(step); }

 private:
  Schedule learning_rate_;
};

}  // namespace my_app
// [docs] end

namespace my_app {
namespace {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DocsConfigTest, ExampleRunsAsDocumented) {
  // [docs] set
  ConfigPtr<Optimizer::Config> cfg = Optimizer::default_config();
  cfg->weight_decay = 0.01;                                                 // typed
  cfg->set("clip_norm", 1.0).set("betas", std::vector<double>{0.9, 0.99});  // by name
  cfg->learning_rate->set("peak", 3e-4);  // a field of the child config
  double wd = cfg->weight_decay;          // reads like a double
  // [docs] end
  EXPECT_EQ(wd, 0.01);

  // [docs] instantiate
  std::unique_ptr<Optimizer> opt = cfg->instantiate<Optimizer>();
  opt->learning_rate(50);  // 1.5e-4: halfway through the warmup
  // [docs] end
  EXPECT_DOUBLE_EQ(opt->learning_rate(50), 1.5e-4);

  // [docs] overrides
  apply_overrides(*cfg, {"learning_rate.warmup_steps=10", "betas[1]=0.999", "clip_norm=None"});
  apply_override(*cfg, "learning_rate.fn=constant");  // swap the schedule
  apply_override(*cfg, "learning_rate.value=1e-3");
  // [docs] end
  EXPECT_DOUBLE_EQ(cfg->instantiate<Optimizer>()->learning_rate(3), 1e-3);

  EXPECT_EQ(error_of([&] { apply_override(*cfg, "wieght_decay=0.1"); }),
            "override 'wieght_decay=0.1': no field 'wieght_decay' in the config of "
            "'my_app.Optimizer' (did you mean 'weight_decay'?)");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "betas[0]=high"); }),
            "override 'betas[0]=high': betas[0]: expected float, given str 'high'");

  std::ostringstream printed;
  // [docs] print
  printed << cfg->debug_string();
  // [docs] end
  EXPECT_EQ(printed.str(), R"(betas[0]: 0.9
betas[1]: 0.999
klass: 'my_app.Optimizer'
learning_rate.fn: 'my_app.schedule.constant'
learning_rate.value: 0.001
weight_decay: 0.01)");

  // [docs] json
  std::string text = cfg->to_json_string();
  ConfigPtr<Optimizer::Config> loaded = config_from_json_as<Optimizer::Config>(Json::parse(text));
  bool same = *loaded == *cfg;  // true; and loaded->instantiate<Optimizer>() works
  // [docs] end
  EXPECT_TRUE(same);
  EXPECT_EQ(text, R"({
  "klass": "my_app.Optimizer",
  "betas": [
    0.9,
    0.999
  ],
  "clip_norm": null,
  "learning_rate": {
    "fn": "my_app.schedule.constant",
    "value": 0.001
  },
  "weight_decay": 0.01
})");

  EXPECT_EQ(error_of([&] { Optimizer::default_config()->instantiate<Optimizer>(); }),
            "cannot instantiate the config of function 'my_app.schedule.warmup': missing value "
            "for REQUIRED field learning_rate.peak");
}

TEST(DocsConfigTest, CodeBlocksAreThisFile) {
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
  const std::string doc = read("docs/config.md");
  const std::vector<std::string> source = lines_of(read("tests/config/docs_example_test.cc"));
  ASSERT_FALSE(doc.empty());
  int blocks = 0;
  for (size_t pos = 0; (pos = doc.find("```cpp\n", pos)) != std::string::npos;) {
    const size_t start = pos + 7;
    const size_t end = doc.find("```", start);
    ASSERT_NE(end, std::string::npos);
    const std::vector<std::string> block = lines_of(doc.substr(start, end - start));
    EXPECT_TRUE(std::search(source.begin(), source.end(), block.begin(), block.end()) !=
                source.end())
        << "a docs/config.md block is not in this file:\n"
        << doc.substr(start, end - start);
    ++blocks;
    pos = end + 3;
  }
  EXPECT_GE(blocks, 5);
}

}  // namespace
}  // namespace my_app
