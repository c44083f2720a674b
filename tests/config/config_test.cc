// Config fields, typed and dynamic access, REQUIRED fields, clone, equality, instantiate through
// the registry, polymorphic children, function configs, debug_string in AXLearn's golden format.
#include "axlearn/config/config.h"

#include <gtest/gtest.h>

#include <string>
#include <type_traits>

#include "tests/config/test_classes.h"

namespace axlearn::config_test {
namespace {

// Runs fn and returns the Error message it throws ("" when it does not throw).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, DefaultsAndTypedAccess) {
  auto cfg = Encoder::default_config();
  EXPECT_EQ(cfg->klass.get(), "axlearn.test.Encoder");
  EXPECT_FALSE(cfg->dim.is_set());
  EXPECT_EQ(cfg->num_layers, 2);
  cfg->dim = 16;
  cfg->set("num_layers", 4).set("activation", "gelu");
  int64_t dim = cfg->dim;
  EXPECT_EQ(dim, 16);
  EXPECT_EQ(cfg->get<int64_t>("num_layers"), 4);
  EXPECT_EQ(cfg->activation.get(), Activation::kGelu);
  // Through a polymorphic child: the default is a LayerNorm config.
  EXPECT_EQ(cfg->norm->klass.get(), "axlearn.test.LayerNorm");
  cfg->norm->eps = 1e-3;
  EXPECT_DOUBLE_EQ(cfg->norm->eps, 1e-3);
}

TEST(ConfigTest, FloatIntoIntegerFieldDoesNotCompile) {
  static_assert(std::is_assignable_v<Field<int64_t>&, int>);
  static_assert(!std::is_assignable_v<Field<int64_t>&, double>);
  static_assert(std::is_assignable_v<Field<double>&, int>);
}

TEST(ConfigTest, ReadingUnsetRequiredFieldNamesIt) {
  auto cfg = Encoder::default_config();
  EXPECT_NE(error_of([&] { (void)cfg->dim.get(); }).find("'dim' is REQUIRED"), std::string::npos);
}

TEST(ConfigTest, SetChecksTypesAndNames) {
  auto cfg = Encoder::default_config();
  EXPECT_EQ(error_of([&] { cfg->set("dim", 1.5); }), "dim: expected int, given float 1.5");
  EXPECT_EQ(error_of([&] { cfg->set("dim", "abc"); }), "dim: expected int, given str 'abc'");
  EXPECT_EQ(error_of([&] { cfg->set("activation", "tanh"); }),
            "activation: expected enum{relu, gelu}, given str 'tanh'");
  EXPECT_EQ(error_of([&] { cfg->set("num_layer", 3); }),
            "no field 'num_layer' in the config of 'axlearn.test.Encoder' (did you mean "
            "'num_layers'?)");
  EXPECT_NE(error_of([&] { cfg->set("norm", Encoder::default_config()); })
                .find("norm: expected a config_test::Norm::Config, given the config of "
                      "'axlearn.test.Encoder'"),
            std::string::npos);
  // A failed set leaves the field as it was.
  EXPECT_FALSE(cfg->dim.is_set());
  EXPECT_EQ(cfg->num_layers, 2);
}

TEST(ConfigTest, GetChecksTheHeldType) {
  auto cfg = Encoder::default_config();
  EXPECT_NE(error_of([&] {
              (void)cfg->get<int32_t>("num_layers");
            }).find("'num_layers' is a long; get<int> cannot read it"),
            std::string::npos);
  EXPECT_NE(error_of([&] { (void)cfg->get<int64_t>("dim"); }).find("REQUIRED"), std::string::npos);
}

TEST(ConfigTest, RequiredFieldFailsInstantiateWithFullDottedPath) {
  auto cfg = Model::default_config();
  // encoder.dim is REQUIRED and left unset; the encoder is instantiated by the model.
  EXPECT_EQ(error_of([&] { cfg->instantiate<Model>(); }),
            "cannot instantiate the config of 'axlearn.test.Encoder': missing value for REQUIRED "
            "field encoder.dim");
  // Two levels down: Model -> Encoder -> Norm, each pushing its child's field name.
  cfg->encoder->dim = 8;
  cfg->encoder->norm = ScaledNorm::default_config();
  EXPECT_EQ(error_of([&] { cfg->instantiate<Model>(); }),
            "cannot instantiate the config of 'axlearn.test.ScaledNorm': missing value for "
            "REQUIRED field encoder.norm.scale");
  // A function config instantiated under an explicit path.
  auto fn = LinearSchedule::default_config();
  fn->end_value = 1.0;
  auto scope = InstantiationScope::at("learner.optimizer.args[1]");
  EXPECT_EQ(error_of([&] { fn->instantiate(); }),
            "cannot instantiate the config of function 'axlearn.test.schedule.linear': missing "
            "value for REQUIRED field learner.optimizer.args[1].max_step");
}

TEST(ConfigTest, InstantiateBuildsTheRegisteredClass) {
  auto cfg = Model::default_config();
  cfg->encoder->dim = 8;
  std::unique_ptr<Model> model = cfg->instantiate<Model>();
  EXPECT_EQ(model->encoder().norm().kind(), "layer_norm");
  // The child's REQUIRED input_dim was filled from the encoder's dim.
  EXPECT_EQ(model->encoder().norm().config_base().get<int64_t>("input_dim"), 8);
  // The instance keeps its own copy of the config.
  cfg->encoder->dim = 99;
  EXPECT_EQ(model->encoder().config().dim, 8);
  // Instantiating through a base class works; as an unrelated class it does not.
  std::unique_ptr<Configurable> any = cfg->instantiate<Configurable>();
  EXPECT_NE(dynamic_cast<Model*>(any.get()), nullptr);
  EXPECT_EQ(error_of([&] { cfg->instantiate<Norm>(); }),
            "klass 'axlearn.test.Model' is not a config_test::Norm");
}

TEST(ConfigTest, AbstractClassAndFunctionsAreNotInstantiableAsClasses) {
  auto cfg = Norm::default_config();
  cfg->input_dim = 3;
  EXPECT_EQ(error_of([&] { cfg->instantiate<Norm>(); }),
            "klass 'axlearn.test.Norm' is abstract and cannot be instantiated");
}

TEST(ConfigTest, CloneIsDeep) {
  auto original = Trainer::default_config();
  original->name = "run";
  original->args.mut().push_back(ConstantSchedule::default_config().set("value", 0.5));
  original->rules.mut().emplace_back(".*", RMSNorm::default_config());
  ConfigPtr<Trainer::Config> copy = original->clone();
  EXPECT_TRUE(*copy == *original);

  copy->model->encoder->norm->eps = 0.25;
  copy->args.mut()[0]->set("value", 2.0);
  copy->rules.mut()[0].second->eps = 0.5;
  copy->mesh_shape.mut()[1] = 8;
  EXPECT_FALSE(*copy == *original);
  EXPECT_DOUBLE_EQ(original->model->encoder->norm->eps, 1e-6);
  EXPECT_DOUBLE_EQ(original->args.get()[0]->get<double>("value"), 0.5);
  EXPECT_DOUBLE_EQ(original->rules.get()[0].second->eps, 1e-5);
  EXPECT_EQ(original->mesh_shape.get()[1], -1);

  // Copying a ConfigPtr is a clone too.
  ConfigPtr<Trainer::Config> second = original;
  second->max_step = 7;
  EXPECT_EQ(original->max_step, 100);
}

TEST(ConfigTest, EqualityComparesTypesValuesAndSetState) {
  auto a = Encoder::default_config();
  auto b = Encoder::default_config();
  EXPECT_TRUE(*a == *b);
  a->dim = 0;  // set to the value-initialised value: still differs from unset
  EXPECT_FALSE(*a == *b);
  b->dim = 0;
  EXPECT_TRUE(*a == *b);
  b->norm = RMSNorm::default_config();
  EXPECT_FALSE(*a == *b);
  auto n1 = LayerNorm::default_config();
  auto n2 = RMSNorm::default_config();
  n2->eps = 1e-6;
  EXPECT_FALSE(*n1 == *n2);  // different dynamic types
}

TEST(ConfigTest, PolymorphicChildSwapInstantiatesTheNewClass) {
  auto cfg = Model::default_config();
  cfg->encoder->dim = 4;
  cfg->encoder->norm = RMSNorm::default_config();
  auto model = cfg->instantiate<Model>();
  EXPECT_EQ(model->encoder().norm().kind(), "rms_norm");
  EXPECT_NE(dynamic_cast<const RMSNorm*>(&model->encoder().norm()), nullptr);
}

TEST(ConfigTest, FunctionConfigsInstantiateToTheirResult) {
  auto cfg = LinearSchedule::default_config();
  cfg->end_value = 1.0;
  cfg->max_step = 10;
  Schedule s = cfg->instantiate();
  EXPECT_DOUBLE_EQ(s(0), 0.0);
  EXPECT_DOUBLE_EQ(s(5), 0.5);
  EXPECT_DOUBLE_EQ(s(20), 1.0);
  // Held polymorphically in a trainer config.
  auto trainer = Trainer::default_config();
  EXPECT_DOUBLE_EQ(trainer->schedule->instantiate()(3), 1.0);
  trainer->schedule = cfg;
  EXPECT_DOUBLE_EQ(trainer->schedule->instantiate()(5), 0.5);
}

TEST(ConfigTest, VisitPathsAndFlatDict) {
  auto cfg = Trainer::default_config();
  cfg->args.mut().push_back(ConstantSchedule::default_config().set("value", 0.5));
  cfg->weights.mut()["b"] = 2;
  Json flat = cfg->to_flat_dict();
  EXPECT_EQ(flat["args[0].value"], 0.5);
  EXPECT_EQ(flat["args[0].fn"], "axlearn.test.schedule.constant");
  EXPECT_EQ(flat["weights['b']"], 2.0);
  EXPECT_EQ(flat["model.encoder.norm.eps"], 1e-6);
  EXPECT_EQ(flat["mesh_shape[1]"], -1);
  // Unset REQUIRED fields and None-by-default optionals are left out.
  EXPECT_FALSE(flat.contains("name"));
  EXPECT_FALSE(flat.contains("seed"));
  EXPECT_FALSE(flat.contains("model.extra_norm"));
  EXPECT_FALSE(flat.contains("model.encoder.dim"));
}

TEST(ConfigTest, MissingRequiredFieldsListsTheTree) {
  auto cfg = Trainer::default_config();
  cfg->args.mut().push_back(LinearSchedule::default_config());
  EXPECT_EQ(cfg->missing_required_fields(),
            (std::vector<std::string>{"name", "model.encoder.dim", "model.encoder.norm.input_dim",
                                      "args[0].end_value", "args[0].max_step"}));
}

// The golden output: one sorted line per leaf, as AXLearn's golden configs print them.
TEST(ConfigTest, DebugStringGolden) {
  auto cfg = Trainer::default_config();
  cfg->name = "it's a run";
  cfg->max_step = 3000;
  cfg->model->dtype = bfloat16;
  cfg->model->encoder->dim = 8;
  cfg->model->encoder->norm = RMSNorm::default_config();
  cfg->model->param_partition_spec = {MeshAxis{}, MeshAxis{std::string("model")},
                                      MeshAxis{std::vector<std::string>{"data", "fsdp"}}};
  cfg->args.mut().push_back(ConstantSchedule::default_config().set("value", 1e-8));
  cfg->args.mut().push_back(
      LinearSchedule::default_config().set("end_value", 0.1).set("max_step", 10));
  cfg->weights.mut()["train"] = 1;
  cfg->rules.mut().emplace_back(".*weight$", LayerNorm::default_config().set("bias", false));
  cfg->seed = 3;
  cfg->comment = std::nullopt;
  const std::string golden = R"(args[0].fn: 'axlearn.test.schedule.constant'
args[0].value: 1e-08
args[1].begin_value: 0.0
args[1].end_value: 0.1
args[1].fn: 'axlearn.test.schedule.linear'
args[1].max_step: 10
beta: 0.95
comment: None
klass: 'axlearn.test.Trainer'
learning_rate: 0.0006
max_step: 3000
mesh_axis_names[0]: 'data'
mesh_axis_names[1]: 'model'
mesh_shape[0]: 1
mesh_shape[1]: -1
model.dtype: 'jax.numpy.bfloat16'
model.encoder.activation: 'relu'
model.encoder.dim: 8
model.encoder.klass: 'axlearn.test.Encoder'
model.encoder.norm.eps: 1e-05
model.encoder.norm.klass: 'axlearn.test.RMSNorm'
model.encoder.num_layers: 2
model.klass: 'axlearn.test.Model'
model.param_partition_spec[0]: None
model.param_partition_spec[1]: 'model'
model.param_partition_spec[2][0]: 'data'
model.param_partition_spec[2][1]: 'fsdp'
name: "it's a run"
rules['.*weight$'].bias: False
rules['.*weight$'].eps: 1e-06
rules['.*weight$'].klass: 'axlearn.test.LayerNorm'
schedule.fn: 'axlearn.test.schedule.constant'
schedule.value: 1.0
seed: 3
weights['train']: 1.0)";
  EXPECT_EQ(cfg->debug_string(), golden);
}

struct BadName : ConfigBase {
  AXLEARN_CONFIG(BadName)
  Field<int> x{this, "Bad-Name", 1, ""};
};

TEST(ConfigTest, InvalidFieldNameIsRejectedAtDeclaration) {
  EXPECT_THROW(BadName{}, InternalError);
}

}  // namespace
}  // namespace axlearn::config_test
