// String overrides: values parsed per field type, list indices and dict keys, class swaps by
// klass / fn name, and the messages for typos and wrong types.
#include <gtest/gtest.h>

#include <string>

#include "axlearn/config/config.h"
#include "axlearn/config/registry.h"
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

ConfigPtr<Trainer::Config> trainer() {
  auto cfg = Trainer::default_config();
  cfg->args.mut().push_back(ConstantSchedule::default_config().set("value", 1.0));
  cfg->args.mut().push_back(LinearSchedule::default_config());
  cfg->rules.mut().emplace_back(".*weight$", LayerNorm::default_config());
  cfg->weights.mut()["train"] = 1.0;
  return cfg;
}

TEST(OverridesTest, ParsesValuesPerFieldType) {
  auto cfg = trainer();
  apply_overrides(*cfg, {
                            "name=my run",
                            "max_step=512",
                            "learning_rate=1e-3",
                            "beta=.5",
                            "model.encoder.dim=64",
                            "model.dtype=bfloat16",
                            "model.encoder.activation=gelu",
                            "model.encoder.norm.bias=False",
                            "mesh_shape=[2, 4]",
                            "mesh_axis_names=['data', \"fsdp\"]",
                            "seed=7",
                            "comment=None",
                            "model.param_partition_spec=[None, 'model', [data, fsdp]]",
                        });
  EXPECT_EQ(cfg->name.get(), "my run");
  EXPECT_EQ(cfg->max_step, 512);
  EXPECT_DOUBLE_EQ(cfg->learning_rate, 1e-3);
  EXPECT_FLOAT_EQ(cfg->beta, 0.5f);
  EXPECT_EQ(cfg->model->encoder->dim, 64);
  EXPECT_EQ(cfg->model->dtype.get(), bfloat16);
  EXPECT_EQ(cfg->model->encoder->activation.get(), Activation::kGelu);
  EXPECT_FALSE(cfg->model->encoder->norm->get<bool>("bias"));
  EXPECT_EQ(cfg->mesh_shape.get(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(cfg->mesh_axis_names.get(), (std::vector<std::string>{"data", "fsdp"}));
  EXPECT_EQ(cfg->seed.get(), 7);
  EXPECT_FALSE(cfg->comment.get().has_value());
  const auto& spec = cfg->model->param_partition_spec.get();
  ASSERT_EQ(spec.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(spec[0]));
  EXPECT_EQ(std::get<std::string>(spec[1]), "model");
  EXPECT_EQ(std::get<std::vector<std::string>>(spec[2]),
            (std::vector<std::string>{"data", "fsdp"}));
}

TEST(OverridesTest, StringFieldsTakeBareNumbersAsText) {
  auto cfg = trainer();
  apply_override(*cfg, "name=123");
  EXPECT_EQ(cfg->name.get(), "123");
  apply_override(*cfg, "name='quoted = text'");
  EXPECT_EQ(cfg->name.get(), "quoted = text");
}

TEST(OverridesTest, ListIndicesAndDictKeys) {
  auto cfg = trainer();
  apply_overrides(*cfg, {"args[1].end_value=0.9", "args[1].max_step=10", "args[-2].value=0.25",
                         "rules['.*weight$'].eps=0.5", "weights['train']=2", "mesh_shape[0]=3"});
  EXPECT_DOUBLE_EQ(cfg->args.get()[1]->get<double>("end_value"), 0.9);
  EXPECT_EQ(cfg->args.get()[1]->get<int64_t>("max_step"), 10);
  EXPECT_DOUBLE_EQ(cfg->args.get()[0]->get<double>("value"), 0.25);
  EXPECT_DOUBLE_EQ(cfg->rules.get()[0].second->eps, 0.5);
  EXPECT_DOUBLE_EQ(cfg->weights.get().at("train"), 2.0);
  EXPECT_EQ(cfg->mesh_shape.get()[0], 3);
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "args[5].value=1"); }),
            "override 'args[5].value=1': args: index 5 is out of range for a list of 2 items");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "weights['tran']=1"); }),
            "override 'weights['tran']=1': weights: no key 'tran' (did you mean 'train'?)");
}

TEST(OverridesTest, TypoNamesTheFieldAndSuggestsTheClosest) {
  auto cfg = trainer();
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.encoder.num_layer=4"); }),
            "override 'model.encoder.num_layer=4': model.encoder: no field 'num_layer' in the "
            "config of 'axlearn.test.Encoder' (did you mean 'num_layers'?)");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "modle.encoder.dim=4"); }),
            "override 'modle.encoder.dim=4': no field 'modle' in the config of "
            "'axlearn.test.Trainer' (did you mean 'model'?)");
  // Nothing close: the valid names are listed.
  const std::string far = error_of([&] { apply_override(*cfg, "model.zzzzzzzz=1"); });
  EXPECT_NE(far.find("(valid names: 'dtype', 'encoder', 'extra_norm', 'klass', "
                     "'param_partition_spec')"),
            std::string::npos)
      << far;
}

TEST(OverridesTest, WrongTypeNamesExpectedAndGiven) {
  auto cfg = trainer();
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.encoder.dim=abc"); }),
            "override 'model.encoder.dim=abc': model.encoder.dim: expected int, given str 'abc'");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "max_step=1.5"); }),
            "override 'max_step=1.5': max_step: expected int, given float 1.5");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.encoder.norm.bias=3"); }),
            "override 'model.encoder.norm.bias=3': model.encoder.norm.bias: expected bool, given "
            "int 3");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "mesh_shape=[1, x]"); }),
            "override 'mesh_shape=[1, x]': mesh_shape[1]: expected int, given str 'x'");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "max_step=None"); }),
            "override 'max_step=None': max_step: expected int, given None");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.dtype=float8"); }).substr(0, 59),
            "override 'model.dtype=float8': model.dtype: unknown dtype '");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "max_step"); }),
            "override 'max_step': expected the form path=value");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "max_step.x=1"); }),
            "override 'max_step.x=1': max_step is int, not a container: it has no .x");
  // The value is unchanged after a failed override.
  EXPECT_EQ(cfg->max_step, 100);
}

TEST(OverridesTest, KlassSwapReplacesTheChildConfig) {
  auto cfg = trainer();
  cfg->model->encoder->dim = 8;
  cfg->model->encoder->norm->eps = 0.125;  // changed from LayerNorm's default: carried over
  apply_override(*cfg, "model.encoder.norm.klass=RMSNorm");
  EXPECT_EQ(cfg->model->encoder->norm->klass.get(), "axlearn.test.RMSNorm");
  EXPECT_NE(dynamic_cast<RMSNorm::Config*>(cfg->model->encoder->norm.mut().get()), nullptr);
  EXPECT_DOUBLE_EQ(cfg->model->encoder->norm->eps, 0.125);
  auto model = cfg->model->instantiate<Model>();
  EXPECT_EQ(model->encoder().norm().kind(), "rms_norm");

  // Unchanged fields are not carried: RMSNorm keeps its own default eps.
  auto fresh = trainer();
  apply_override(*fresh, "model.encoder.norm.klass='axlearn.test.RMSNorm'");
  EXPECT_DOUBLE_EQ(fresh->model->encoder->norm->eps, 1e-5);
  // And back.
  apply_override(*fresh, "model.encoder.norm.klass=LayerNorm");
  EXPECT_EQ(fresh->model->encoder->norm->klass.get(), "axlearn.test.LayerNorm");
}

TEST(OverridesTest, SwapChecksTheSlotType) {
  auto cfg = trainer();
  EXPECT_NE(
      error_of([&] { apply_override(*cfg, "model.encoder.norm.klass=Encoder"); })
          .find("model.encoder.norm: expected a config_test::Norm::Config, given the config of "
                "'axlearn.test.Encoder'"),
      std::string::npos);
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.encoder.norm.klass=RMSNrom"); }),
            "override 'model.encoder.norm.klass=RMSNrom': no class or function is registered as "
            "'RMSNrom' (did you mean 'RMSNorm'?)");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "klass=Model"); }),
            "override 'klass=Model': the class of the root config cannot be changed by an "
            "override");
}

TEST(OverridesTest, OptionalChildIsCreatedBySettingItsKlass) {
  auto cfg = trainer();
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "model.extra_norm.eps=1"); }),
            "override 'model.extra_norm.eps=1': model.extra_norm is None (set "
            "model.extra_norm.klass first)");
  apply_overrides(*cfg, {"model.extra_norm.klass=RMSNorm", "model.extra_norm.eps=1"});
  EXPECT_DOUBLE_EQ(cfg->model->extra_norm->eps, 1.0);
  apply_override(*cfg, "schedule=None");
  EXPECT_FALSE(cfg->schedule.get());
  apply_override(*cfg, "schedule.fn=linear");
  apply_overrides(*cfg, {"schedule.end_value=2", "schedule.max_step=4"});
  EXPECT_DOUBLE_EQ(cfg->schedule->instantiate()(2), 1.0);
}

TEST(OverridesTest, FunctionSwapByFn) {
  auto cfg = trainer();
  apply_override(*cfg, "args[0].fn=axlearn.test.schedule.linear");
  apply_overrides(*cfg, {"args[0].end_value=4", "args[0].max_step=2"});
  EXPECT_DOUBLE_EQ(cfg->args.get()[0]->instantiate()(1), 2.0);
}

TEST(OverridesTest, RegistryResolvesUniqueSuffixes) {
  EXPECT_EQ(Registry::global().find("RMSNorm").name, "axlearn.test.RMSNorm");
  EXPECT_EQ(Registry::global().find("test.RMSNorm").name, "axlearn.test.RMSNorm");
  EXPECT_EQ(Registry::global().find("schedule.linear").name, "axlearn.test.schedule.linear");
  EXPECT_THROW(Registry::global().find("Norm2"), Error);
}

// docs_example_test.cc registers my_app.schedule.constant next to axlearn.test.schedule.constant.
TEST(OverridesTest, AmbiguousShortNamesResolveToTheCurrentClassPackage) {
  EXPECT_NE(error_of([] { Registry::global().find("constant"); }).find("is ambiguous"),
            std::string::npos);
  auto cfg = trainer();
  apply_override(*cfg, "schedule.fn=linear");
  apply_override(*cfg, "schedule.fn=constant");
  EXPECT_EQ(cfg->schedule->fn.get(), "axlearn.test.schedule.constant");
  // With nothing to go by, the ambiguity is an error listing the candidates.
  apply_override(*cfg, "schedule=None");
  EXPECT_EQ(error_of([&] { apply_override(*cfg, "schedule.fn=constant"); }),
            "override 'schedule.fn=constant': registered name 'constant' is ambiguous: "
            "'axlearn.test.schedule.constant', 'my_app.schedule.constant'");
}

TEST(OverridesTest, PathSyntaxErrors) {
  EXPECT_THROW(parse_config_path("a..b"), Error);
  EXPECT_THROW(parse_config_path("a[1"), Error);
  EXPECT_THROW(parse_config_path("a['k]"), Error);
  auto p = parse_config_path("a.b[2]['x.y'][-1].c");
  ASSERT_EQ(p.size(), 6u);
  EXPECT_EQ(p[2].kind, PathElem::Kind::kIndex);
  EXPECT_EQ(p[2].index, 2);
  EXPECT_EQ(p[3].kind, PathElem::Kind::kKey);
  EXPECT_EQ(p[3].name, "x.y");
  EXPECT_EQ(p[4].index, -1);
  EXPECT_EQ(p[5].name, "c");
}

}  // namespace
}  // namespace axlearn::config_test
