// Module trees, invocation contexts and functional(): names and paths, REQUIRED errors with
// module paths, purity, where summaries / state updates / module outputs land, PRNG keys per
// child (checked against AXLearn's scheme computed with hashlib and jax), shared modules.
#include "axlearn/module/module.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "tests/module/test_layers.h"

namespace axlearn::module_test {
namespace {

using nlohmann::json;

const json& vectors() {
  static const json j = [] {
    const std::string path =
        std::string(AXLEARN_SOURCE_DIR) + "/tests/module/testdata/module_vectors.json";
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot open " + path);
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

std::vector<uint32_t> bits_of(const Tensor& t) {
  const Tensor f = astype(t, float32);
  std::vector<float> v = f.to_vector<float>();
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

ConfigPtr<Model::Config> model_config(int64_t dim = 4) {
  auto cfg = Model::default_config();
  cfg->name = "model";
  cfg->block->dim = dim;
  return cfg;
}

Tensor inputs(int64_t batch, int64_t dim) {
  std::vector<float> v(size_t(batch * dim));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 7) * 0.25f - 0.5f;
  return array(v, {batch, dim});
}

TEST(ModuleTest, TreeNamesPathsAndChildren) {
  auto model = model_config()->instantiate<Model>(nullptr);
  EXPECT_EQ(model->path(), "model");
  EXPECT_EQ(model->block().dense().path(), "model.block.dense");
  std::vector<std::string> names;
  for (Module* c : model->child("block").children()) names.push_back(c->name());
  EXPECT_EQ(names, (std::vector<std::string>{"dense", "norm", "noise"}));
  EXPECT_EQ(error_of([&] { model->child("blocks"); }),
            "model has no child 'blocks' (children: block)");
  EXPECT_EQ(model->path_to_descendant(model->block().norm()),
            (std::vector<std::string>{"block", "norm"}));
  EXPECT_THROW(model->block().path_to_descendant(*model), Error);
}

TEST(ModuleTest, NamesAreValidated) {
  auto cfg = model_config();
  cfg->name = "Model";
  EXPECT_EQ(error_of([&] { cfg->instantiate<Model>(nullptr); }),
            "invalid module name 'Model' (must match ^[a-z][a-z0-9_]*$)");
  auto root = Module::default_config().set("name", "root")->instantiate<Module>(nullptr);
  EXPECT_EQ(error_of([&] { root->add_child("2x", Dense::default_config()); }),
            "invalid child name '2x' (must match ^[a-z][a-z0-9_]*$)");
}

TEST(ModuleTest, AddChildChecksNamesAndConfigs) {
  auto root = Module::default_config().set("name", "root")->instantiate<Module>(nullptr);
  root->add_child("probe", Probe::default_config());
  EXPECT_EQ(error_of([&] { root->add_child("probe", Probe::default_config()); }),
            "root: child 'probe' already exists");
  EXPECT_EQ(
      error_of([&] { root->add_child("other", Probe::default_config().set("name", "something")); }),
      "root: the config of child 'other' already has a different name: 'something'");
  EXPECT_NE(error_of([&] {
              root->add_child("init", Initializer::Config{});
            }).find("root: add_child('init') expects a Module config"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { root->add_child<Dense>("p2", Probe::default_config()); }),
            "root.p2 is not a module_test::Dense");
}

TEST(ModuleTest, RequiredFieldLeftUnsetFailsWithTheFullPath) {
  auto cfg = model_config();
  cfg->block->dense->output_dim = 3;
  cfg->block->norm = RMSNorm::default_config();
  auto ok = cfg->instantiate<Model>(nullptr);  // the block fills dense.input_dim and norm.input_dim
  EXPECT_EQ(ok->block().norm().config().input_dim, 3);

  auto missing = Model::default_config();
  missing->name = "model";
  EXPECT_EQ(error_of([&] { missing->instantiate<Model>(nullptr); }),
            "cannot instantiate the config of 'axlearn.test.Block': missing value for REQUIRED "
            "field model.block.dim");
}

TEST(ModuleTest, FunctionalIsPure) {
  auto model = model_config()->instantiate<Model>(nullptr);
  const NestedTensor params = model->initialize_parameters_recursively(random::key(1));
  const NestedTensor in{{"x", inputs(3, 4)}};
  auto run = [&](uint64_t seed) {
    return functional(*model, params, in, random::key(seed), /*is_training=*/true);
  };
  auto a = run(5);
  auto b = run(5);
  EXPECT_EQ(bits_of(a.outputs.at("y").tensor()), bits_of(b.outputs.at("y").tensor()));
  EXPECT_EQ(bits_of(a.output_collection.summary("loss").value()),
            bits_of(b.output_collection.summary("loss").value()));
  // The key matters (the noise layer draws from it) and nothing leaked between calls.
  auto c = run(6);
  EXPECT_NE(bits_of(a.outputs.at("y").tensor()), bits_of(c.outputs.at("y").tensor()));
  EXPECT_EQ(current_context(), nullptr);
  // Not training: no noise, so the key does not matter.
  auto e1 = functional(*model, params, in, random::key(5), false);
  auto e2 = functional(*model, params, in, random::key(6), false);
  EXPECT_EQ(bits_of(e1.outputs.at("y").tensor()), bits_of(e2.outputs.at("y").tensor()));
}

TEST(ModuleTest, OutputsMatchADirectComputation) {
  auto model = model_config(2)->instantiate<Model>(nullptr);
  NestedTensor params = model->initialize_parameters_recursively(random::key(0));
  const Tensor x = inputs(2, 2);
  auto out = functional(*model, params, {{"x", x}}, std::nullopt, false);
  // Reference in f64 loops: dense, layer norm (scale 1, bias 0 at init), out_scale 1.
  const auto w = params.at_path("block/dense/weight").tensor().to_vector<double>();
  const auto xv = x.to_vector<double>();
  const auto y = out.outputs.at("y").tensor().to_vector<double>();
  for (int b = 0; b < 2; ++b) {
    double h[2];
    for (int j = 0; j < 2; ++j) h[j] = xv[b * 2] * w[j] + xv[b * 2 + 1] * w[2 + j];
    const double m = (h[0] + h[1]) / 2;
    const double var = ((h[0] - m) * (h[0] - m) + (h[1] - m) * (h[1] - m)) / 2;
    for (int j = 0; j < 2; ++j) {
      EXPECT_NEAR(y[b * 2 + j], (h[j] - m) / std::sqrt(var + 1e-6), 1e-4);
    }
  }
}

TEST(ModuleTest, SummariesStateUpdatesAndOutputsLandAtTheirPaths) {
  auto model = model_config()->instantiate<Model>(nullptr);
  const NestedTensor params = model->initialize_parameters_recursively(random::key(1));
  auto out = functional(*model, params, {{"x", inputs(3, 4)}}, random::key(2), true);
  std::vector<std::string> paths;
  for (const auto& [p, s] : out.output_collection.summaries()) paths.push_back(p);
  EXPECT_EQ(paths, (std::vector<std::string>{"block/dense/output_mean", "loss"}));
  const Summary& loss = out.output_collection.summary("loss");
  EXPECT_EQ(loss.kind(), Summary::Kind::kScalar);
  const double y_sq = mean(square(out.outputs.at("y").tensor())).item<double>();
  EXPECT_NEAR(loss.value().item<double>(), y_sq, 1e-6);
  EXPECT_NE(error_of([&] {
              out.output_collection.summary("block/loss");
            }).find("(summaries: block/dense/output_mean, loss)"),
            std::string::npos);

  const NestedTensor updates = out.output_collection.state_updates();
  EXPECT_EQ(updates.at_path("block/moving_mean").tensor().shape(), (Shape{4}));
  EXPECT_FALSE(updates.contains("loss"));
  // Children with nothing to report are left out of the trees.
  EXPECT_FALSE(updates.at("block").contains("dense"));
}

TEST(ModuleTest, SiblingsGetDifferentKeysAndTheSameModuleTheSameKey) {
  auto root = Module::default_config().set("name", "root")->instantiate<Module>(nullptr);
  auto& p1 = root->add_child<Probe>("linear1", Probe::default_config());
  auto& p2 = root->add_child<Probe>("linear2", Probe::default_config());
  const json& fi = vectors()["fold_in"];
  const Tensor key = array(fi["root"].get<std::vector<uint32_t>>(), {2});
  auto run = [&] {
    return functional_call(*root, {}, key, true, [&] {
      p1.record();
      p2.record();
      return 0;
    });
  };
  auto a = run();
  auto b = run();
  const NestedTensor outs = a.output_collection.module_outputs();
  const auto k1 = outs.at_path("linear1/key").tensor().to_vector<uint32_t>();
  const auto k2 = outs.at_path("linear2/key").tensor().to_vector<uint32_t>();
  EXPECT_NE(k1, k2);
  EXPECT_EQ(
      k1,
      b.output_collection.module_outputs().at_path("linear1/key").tensor().to_vector<uint32_t>());
  // The keys are AXLearn's: fold_in(key, md5(name) % (2**31 - 1)), as jax computes them.
  EXPECT_EQ(k1, fi["linear1"].get<std::vector<uint32_t>>());
  EXPECT_EQ(k2, fi["linear2"].get<std::vector<uint32_t>>());
}

TEST(ModuleTest, NestedChildKeysFoldInEachName) {
  auto root = Module::default_config().set("name", "root")->instantiate<Module>(nullptr);
  auto& outer = root->add_child<Probe>("linear1", Probe::default_config());
  auto& inner = outer.add_child<Probe>("inner", Probe::default_config());
  const json& fi = vectors()["fold_in"];
  auto out =
      functional_call(*root, {}, array(fi["root"].get<std::vector<uint32_t>>(), {2}), true, [&] {
        inner.record();
        return 0;
      });
  EXPECT_EQ(out.output_collection.module_outputs()
                .at_path("linear1/inner/key")
                .tensor()
                .to_vector<uint32_t>(),
            fi["linear1/inner"].get<std::vector<uint32_t>>());
}

TEST(ModuleTest, SeedsAndMd5MatchPython) {
  for (const auto& pair : vectors()["md5"]) {
    EXPECT_EQ(md5_hex(pair[0].get<std::string>()), pair[1].get<std::string>());
  }
  for (const auto& pair : vectors()["seeds"]) {
    EXPECT_EQ(seed_from_name(pair[0].get<std::string>()), pair[1].get<uint32_t>()) << pair[0];
  }
}

TEST(ModuleTest, DuplicateModuleOutputIsAnError) {
  auto root = Module::default_config().set("name", "root")->instantiate<Module>(nullptr);
  auto& probe = root->add_child<Probe>("probe", Probe::default_config());
  // Two outputs of one name from one context.
  EXPECT_EQ(error_of([&] {
              functional_call(probe, {}, random::key(0), false, [&] {
                probe.record("key");
                probe.record("key");
                return 0;
              });
            }),
            "root: output collection: outputs of name 'key' already exist");
  // Calling the child twice from its parent's context conflicts earlier: on the child's name.
  EXPECT_NE(error_of([&] {
              functional_call(*root, {}, random::key(0), false, [&] {
                probe.record("a");
                probe.record("b");
                return 0;
              });
            }).find("'probe' is already present"),
            std::string::npos);
  EXPECT_EQ(current_context(), nullptr);  // contexts were popped on the way out
}

TEST(ModuleTest, CallingAChildTwiceNeedsDistinctContextNames) {
  auto model = model_config()->instantiate<Model>(nullptr);
  const NestedTensor params = model->initialize_parameters_recursively(random::key(1));
  const Dense& dense = model->block().dense();
  const Tensor x = inputs(2, 4);
  const NestedTensor block_params = params.at("block");
  EXPECT_NE(error_of([&] {
              functional_call(model->child("block"), block_params, std::nullopt, false, [&] {
                dense.forward(x);
                return dense.forward(x);
              });
            }).find("'dense' is already present"),
            std::string::npos);
  // With a named child context per call, each call has its own place in the outputs.
  auto out = functional_call(model->child("block"), block_params, std::nullopt, false, [&] {
    for (const char* name : {"call0", "call1"}) {
      auto s = child_context(
          name, {.module = const_cast<Dense*>(&dense), .state = &block_params.at("dense")});
      dense.forward(x);
    }
    return 0;
  });
  std::vector<std::string> paths;
  for (const auto& [p, s] : out.output_collection.summaries()) paths.push_back(p);
  EXPECT_EQ(paths, (std::vector<std::string>{"call0/output_mean", "call1/output_mean"}));
}

TEST(ModuleTest, ContextErrors) {
  auto model = model_config()->instantiate<Model>(nullptr);
  EXPECT_EQ(error_of([&] { model->state(); }),
            "model: no invocation context. Did you invoke the module inside functional(...)?");
  const NestedTensor params = model->initialize_parameters_recursively(random::key(1));
  // A method that forgot enter_context() runs in its parent's context.
  EXPECT_EQ(error_of([&] {
              functional_call(*model, params, std::nullopt, false,
                              [&] { return model->block().dense().parameter("weight"); });
            }),
            "model.block.dense: the current invocation context (root) belongs to model. Does the "
            "method start with `auto scope = enter_context();`?");
  EXPECT_EQ(error_of([&] {
              functional_call(*model, params, std::nullopt, true,
                              [&] { return model->forward(inputs(1, 4)); });
            }),
            "model.block.noise: this invocation has no PRNG key (functional was called without "
            "one)");
  EXPECT_EQ(error_of([&] { functional(*model, params, {}, std::nullopt, false, "predict"); }),
            "model has no method 'predict' (registered: forward)");
  EXPECT_EQ(error_of([&] {
              functional_call(*model, NestedTensor{}, std::nullopt, false,
                              [&] { return model->block().dense().forward(inputs(1, 4)); });
            }),
            "model.block.dense: no parameter 'weight' in the state (it has: nothing)");
}

TEST(ModuleTest, StateIsRoutedToChildrenByName) {
  auto model = model_config()->instantiate<Model>(nullptr);
  NestedTensor params = model->initialize_parameters_recursively(random::key(1));
  const Tensor marker = full({4}, 7.0);
  params["block"]["dense"]["bias"] = marker;
  auto out = functional_call(*model, params, std::nullopt, false, [&] {
    auto s = model->block().dense().enter_context();
    return model->block().dense().parameter("bias");
  });
  EXPECT_TRUE(out.outputs.same(marker));
}

class Sharer : public Module {
 public:
  AXLEARN_CONFIGURABLE(Sharer, "axlearn.test.Sharer")
  Sharer(const Config& cfg, Module* parent) : Module(cfg, parent) {
    auto& emb = add_child<Probe>("emb", Probe::default_config());
    auto& user = add_child<Module>("user", Module::default_config());
    user.add_child<Probe>("leaf", Probe::default_config());
    share_with_descendants(emb, "shared_emb");
  }
};

TEST(ModuleTest, SharedModulesAreFoundFromDescendants) {
  auto root = Sharer::default_config().set("name", "root")->instantiate<Sharer>(nullptr);
  const Module& leaf = root->child("user").child("leaf");
  NestedTensor state{{"emb", NestedTensor{{"w", full({2}, 3.0)}}}};
  auto out = functional_call(*root, state, std::nullopt, false, [&] {
    auto s = leaf.enter_context();
    Module::SharedModule shared = leaf.get_shared_module("shared_emb");
    EXPECT_EQ(shared.module, &root->child("emb"));
    return shared.state->at("w").tensor();
  });
  EXPECT_EQ(out.outputs.to_vector<float>(), (std::vector<float>{3, 3}));
  EXPECT_THROW(root->share_with_descendants(root->child("emb"), "shared_emb"), Error);
}

TEST(ModuleTest, SummaryKindsAreChecked) {
  EXPECT_EQ(Summary::scalar(2.5).kind(), Summary::Kind::kScalar);
  EXPECT_EQ(Summary::image(zeros({2, 8, 8, 3})).kind_name(), std::string("image"));
  EXPECT_EQ(Summary::histogram(ones({5})).kind(), Summary::Kind::kHistogram);
  EXPECT_EQ(error_of([] { Summary::scalar(zeros({2})); }),
            "Summary::scalar: expected one element, given shape (2,)");
  EXPECT_NE(error_of([] {
              Summary::image(zeros({8, 8, 2}));
            }).find("given shape (8, 8, 2)"),
            std::string::npos);
  EXPECT_THROW(Summary::histogram(zeros({0})), Error);
}

TEST(ModuleTest, OutputCollectionUpdateMergesTrees) {
  OutputCollection a, b;
  a.add_child("x").add_summary("s", Summary::scalar(1.0));
  b.add_child("x").add_summary("t", Summary::scalar(2.0));
  b.add_state_update("u", ones({1}));
  a.update(std::move(b));
  EXPECT_EQ(a.summaries().size(), 2u);
  EXPECT_TRUE(a.state_updates().contains("u"));
  EXPECT_THROW(a.add_state_update("x", ones({1})), Error);  // collides with child x
}

}  // namespace
}  // namespace axlearn::module_test
