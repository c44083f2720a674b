// JSON dump and load: dump -> load gives an equal config with the same debug string that
// instantiates; loading checks names and types like overrides do.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "axlearn/config/config.h"
#include "tests/config/test_classes.h"

namespace axlearn::config_test {
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

ConfigPtr<Trainer::Config> busy_trainer() {
  auto cfg = Trainer::default_config();
  cfg->name = "json \"run\"\n";
  cfg->learning_rate = 1.0 / 3.0;
  cfg->beta = 0.1f;
  cfg->model->dtype = bfloat16;
  cfg->model->encoder->dim = 8;
  cfg->model->encoder->norm = RMSNorm::default_config();
  cfg->model->encoder->activation = Activation::kGelu;
  cfg->model->param_partition_spec = {MeshAxis{}, MeshAxis{std::vector<std::string>{"a", "b"}}};
  cfg->args.mut().push_back(
      LinearSchedule::default_config().set("end_value", 2).set("max_step", 4));
  cfg->args.mut().push_back(ConstantSchedule::default_config().set("value", -0.0));
  cfg->weights.mut()["z"] = std::numeric_limits<double>::infinity();
  cfg->weights.mut()["a"] = 1e-300;
  cfg->rules.mut().emplace_back("z.*", LayerNorm::default_config());
  cfg->rules.mut().emplace_back("a.*", RMSNorm::default_config().set("input_dim", 3));
  cfg->comment = std::nullopt;
  cfg->schedule = nullptr;
  return cfg;
}

TEST(JsonTest, RoundTripGivesAnEqualConfig) {
  auto cfg = busy_trainer();
  const std::string text = cfg->to_json_string();
  ConfigPtr<ConfigBase> loaded = config_from_json_string(text);
  EXPECT_TRUE(*loaded == *cfg) << text;
  EXPECT_EQ(loaded->debug_string(), cfg->debug_string());
  // Dump of the load is the same text (dict order kept, floats exact).
  EXPECT_EQ(loaded->to_json_string(), text);
  // The loaded model config instantiates the same classes.
  auto typed = config_from_json_as<Trainer::Config>(Json::parse(text));
  auto model = typed->model->instantiate<Model>();
  EXPECT_EQ(model->encoder().norm().kind(), "rms_norm");
  EXPECT_EQ(typed->rules.get()[0].first, "z.*");  // insertion order kept
}

TEST(JsonTest, UnsetRequiredFieldsStayUnset) {
  auto cfg = Trainer::default_config();
  Json j = cfg->to_json();
  EXPECT_FALSE(j.contains("name"));
  EXPECT_FALSE(j["model"]["encoder"].contains("dim"));
  auto loaded = config_from_json(j);
  EXPECT_TRUE(*loaded == *cfg);
  EXPECT_EQ(loaded->missing_required_fields(), cfg->missing_required_fields());
}

TEST(JsonTest, DumpShape) {
  auto cfg = Encoder::default_config();
  cfg->dim = 4;
  EXPECT_EQ(cfg->to_json().dump(),
            R"({"klass":"axlearn.test.Encoder","activation":"relu","dim":4,)"
            R"("norm":{"klass":"axlearn.test.LayerNorm","bias":true,"eps":1e-06},"num_layers":2})");
}

TEST(JsonTest, LoadChecksNamesTypesAndClasses) {
  EXPECT_EQ(error_of([] {
              config_from_json(Json::parse(R"({"klass": "axlearn.test.Encoder", "dimm": 3})"));
            }),
            "no field 'dimm' in the config of 'axlearn.test.Encoder' (did you mean 'dim'?)");
  EXPECT_EQ(
      error_of([] {
        config_from_json(Json::parse(
            R"({"klass": "axlearn.test.Encoder", "norm": {"klass": "axlearn.test.LayerNorm", "eps": "x"}})"));
      }),
      "norm.eps: expected float, given str 'x'");
  EXPECT_NE(error_of([] {
              config_from_json(Json::parse(
                  R"({"klass": "axlearn.test.Encoder", "norm": {"klass": "axlearn.test.Model"}})"));
            }).find("norm: expected a config_test::Norm::Config"),
            std::string::npos);
  EXPECT_EQ(error_of([] { config_from_json(Json::parse(R"({"dim": 3})")); }),
            "config_from_json: the top-level dict needs a 'klass' or 'fn' naming a registered "
            "class");
  EXPECT_NE(error_of([] { config_from_json_string("{not json"); }).find("invalid JSON"),
            std::string::npos);
}

TEST(JsonTest, NonFiniteFloatsTravelAsStrings) {
  auto cfg = Trainer::default_config();
  cfg->learning_rate = std::numeric_limits<double>::quiet_NaN();
  Json j = cfg->to_json();
  EXPECT_EQ(j["learning_rate"], "nan");
  auto loaded = config_from_json_as<Trainer::Config>(j);
  EXPECT_TRUE(std::isnan(loaded->learning_rate.get()));
  EXPECT_TRUE(*loaded == *cfg);  // nan equals nan in configs
}

}  // namespace
}  // namespace axlearn::config_test
