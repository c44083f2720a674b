// BaseLayer: parameter specs (dtype, mesh axes from param_partition_spec, fan axes), dtype and
// param_init inherited from the parent, initialization with AXLearn's key splitting (checked
// against jax), and swapping a child layer's class by klass.
#include "axlearn/module/base_layer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "axlearn/core/ops.h"
#include "tests/module/test_layers.h"

namespace axlearn::module_test {
namespace {

using nlohmann::json;

const json& vectors() {
  static const json j = [] {
    std::ifstream f(std::string(AXLEARN_SOURCE_DIR) + "/tests/module/testdata/module_vectors.json");
    return json::parse(f);
  }();
  return j;
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ConfigPtr<Model::Config> model_config() {
  auto cfg = Model::default_config();
  cfg->name = "model";
  cfg->block->dim = 4;
  cfg->block->dense->output_dim = 6;
  return cfg;
}

TEST(BaseLayerTest, ParameterSpecsCarryShapesDtypesMeshAndFanAxes) {
  auto cfg = model_config();
  cfg->dtype = bfloat16;
  cfg->block->dense->param_partition_spec =
      MeshAxes{MeshAxis{std::vector<std::string>{"data", "fsdp"}}, MeshAxis{std::string("model")}};
  auto model = cfg->instantiate<Model>(nullptr);
  const NestedParameterSpec specs = model->create_parameter_specs_recursively();
  std::vector<std::string> paths;
  for (const auto& [p, s] : specs.flatten_with_paths()) paths.push_back(p);
  EXPECT_EQ(paths, (std::vector<std::string>{"block/dense/bias", "block/dense/weight",
                                             "block/norm/bias", "block/norm/scale", "out_scale"}));
  const ParameterSpec& w = specs.at_path("block/dense/weight");
  EXPECT_EQ(w.shape, (Shape{4, 6}));
  EXPECT_EQ(*w.dtype, bfloat16);  // inherited from the root
  EXPECT_EQ(mesh_axes_str(*w.mesh_axes), "(('data', 'fsdp'), 'model')");
  EXPECT_EQ(*w.fan_axes, (FanAxes{{-2}, {-1}, {}}));
  EXPECT_DOUBLE_EQ(w.fans().fan_in, 4);
  EXPECT_DOUBLE_EQ(w.fans().fan_out, 6);
  const ParameterSpec& b = specs.at_path("block/dense/bias");
  EXPECT_EQ(mesh_axes_str(*b.mesh_axes), "('model',)");
  EXPECT_FALSE(b.fan_axes.has_value());
  // No partition spec: replicated.
  EXPECT_EQ(mesh_axes_str(*specs.at_path("block/norm/scale").mesh_axes), "(None,)");
}

TEST(BaseLayerTest, MeshAxesMustMatchTheRank) {
  auto cfg = model_config();
  cfg->block->dense->param_partition_spec = MeshAxes{MeshAxis{std::string("model")}};
  auto model = cfg->instantiate<Model>(nullptr);
  EXPECT_EQ(error_of([&] { model->create_parameter_specs_recursively(); }),
            "model.block.dense: parameter 'weight' has mesh axes ('model',) for shape (4, 6); they "
            "need one entry per dim");
}

TEST(BaseLayerTest, DtypeAndParamInitAreInheritedFromTheParent) {
  auto cfg = model_config();
  cfg->dtype = float16;
  cfg->block->dtype = float64;
  auto init = DefaultInitializer::default_config();
  init->init_by_param_name.mut().emplace_back(
      ".*weight$", ConstantInitializer::default_config().set("value", 0.5));
  cfg->block->param_init = init;
  auto model = cfg->instantiate<Model>(nullptr);
  EXPECT_EQ(model->dtype(), float16);
  EXPECT_EQ(model->block().dtype(), float64);
  EXPECT_EQ(model->block().dense().dtype(), float64);
  const NestedTensor params = model->initialize_parameters_recursively(random::key(0));
  const Tensor w = params.at_path("block/dense/weight").tensor();
  EXPECT_EQ(w.dtype(), float64);
  for (double v : w.to_vector<double>()) EXPECT_EQ(v, 0.5);  // the block's rule, inherited
  EXPECT_EQ(params.at("out_scale").tensor().dtype(), float16);
  EXPECT_EQ(&model->block().dense().param_init(), &model->block().param_init());
  EXPECT_NE(&model->param_init(), &model->block().param_init());
}

// A root with an own parameter and two dense children, as gen_module_vectors.py's init_tree.
class InitTree : public BaseLayer {
 public:
  AXLEARN_CONFIGURABLE(InitTree, "axlearn.test.InitTree")
  InitTree(const Config& cfg, Module* parent) : BaseLayer(cfg, parent) {
    add_child("linear1", Dense::default_config().set("input_dim", 3).set("output_dim", 5));
    add_child("linear2", Dense::default_config().set("input_dim", 5).set("output_dim", 2));
  }

 protected:
  std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs() const override {
    return {{"scale", {.shape = {2}}}};
  }
};

TEST(BaseLayerTest, InitializationSplitsKeysAsAxlearnDoes) {
  auto layer = InitTree::default_config().set("name", "tree")->instantiate<InitTree>(nullptr);
  const json& ref = vectors()["init_tree"];
  const NestedTensor params =
      layer->initialize_parameters_recursively(array(ref["key"].get<std::vector<uint32_t>>(), {2}));
  for (const auto& [path, want] : ref["params"].items()) {
    const auto got = params.at_path(path).tensor().to_vector<float>();
    const auto expected = want.get<std::vector<float>>();
    ASSERT_EQ(got.size(), expected.size()) << path;
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(got[i], expected[i]) << path << "[" << i << "]";
  }
}

TEST(BaseLayerTest, ChildLayerClassSwapsByKlass) {
  auto cfg = model_config();
  apply_override(*cfg, "block.norm.klass=RMSNorm");
  apply_override(*cfg, "block.norm.eps=0.01");
  auto model = cfg->instantiate<Model>(nullptr);
  const BaseNorm& norm = model->block().norm();
  EXPECT_NE(dynamic_cast<const RMSNorm*>(&norm), nullptr);
  EXPECT_DOUBLE_EQ(norm.config().eps, 0.01);
  const NestedTensor params = model->initialize_parameters_recursively(random::key(0));
  EXPECT_TRUE(params.at_path("block/norm").contains("scale"));
  EXPECT_FALSE(params.at_path("block/norm").contains("bias"));
  // Forward through the swapped norm: x * rsqrt(mean(x^2) + eps) per row (scale 1).
  const Tensor x = array(std::vector<float>{1, 2, 3, 4, 5, 6}, {1, 6});
  auto out = functional_call(*model, params, std::nullopt, false,
                             [&] { return model->block().norm().forward(x); });
  const double rms = std::sqrt((1 + 4 + 9 + 16 + 25 + 36) / 6.0 + 0.01);
  const auto y = out.outputs.to_vector<double>();
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(y[size_t(i)], (i + 1) / rms, 1e-6);
  // And the debug string of the config shows the swap.
  EXPECT_NE(cfg->debug_string().find("block.norm.klass: 'axlearn.test.RMSNorm'"),
            std::string::npos);
}

TEST(BaseLayerTest, WeightWithOneDimNeedsExplicitFanAxes) {
  class Bad : public BaseLayer {
   public:
    using BaseLayer::BaseLayer;
    std::vector<std::pair<std::string, ParameterSpec>> create_layer_parameter_specs()
        const override {
      return {{"weight", {.shape = {3}}}};
    }
  };
  auto cfg = BaseLayer::default_config();
  cfg->name = "bad";
  Bad bad(*cfg, nullptr);
  EXPECT_EQ(error_of([&] { bad.create_parameter_specs_recursively(); }),
            "bad: the default fan axes need a weight parameter with at least 2 dims; 'weight' has "
            "shape (3,)");
}

}  // namespace
}  // namespace axlearn::module_test
