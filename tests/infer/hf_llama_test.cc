// Hugging Face LLaMA interop (axlearn/infer/hf_llama.h) on fuji-test's model: bitwise round trips
// for every supported layout, the name / shape mapping element by element against naive
// indexing, bf16 / f16 rounding, config.json checks, unsupported models and malformed
// directories refused with errors naming the config path, file and tensor; and `axlearn convert`
// as a process (import, fine-tune with `axlearn train`, export).
#include "axlearn/infer/hf_llama.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/random.h"
#include "axlearn/core/transforms.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/io/safetensors.h"
#include "axlearn/train/checkpointer.h"
#include "axlearn/train/trainer.h"

namespace axlearn::infer {
namespace {

namespace fs = std::filesystem;
using layers::Model;

struct Variant {
  bool stacked = false;
  bool tied = false;
  bool grouped = false;  // GroupedQKVLinear instead of FusedGroupedQKVLinear
  std::string name() const {
    return std::string(stacked ? "stacked" : "repeated") + (tied ? "/tied" : "/untied") +
           (grouped ? "/grouped" : "/fused");
  }
};

const char* kQkvKlass =
    "decoder.transformer.layer.self_attention.attention.input_linear."
    "input_linear.klass";

// fuji-test's model (dim 32, 2 layers, 4 heads, 2 kv heads, head_dim 8, ffn 96, vocab 4096).
ConfigPtr<Model::Config> model_config(const Variant& v = {},
                                      const std::vector<std::string>& overrides = {}) {
  ConfigPtr<Model::Config> cfg = experiments::trainer_config("fuji-test")->model.get();
  if (v.stacked) {
    apply_override(*cfg,
                   "decoder.transformer.klass=axlearn.common.attention.StackedTransformerLayer");
  }
  if (v.tied) apply_override(*cfg, "decoder.lm_head=None");
  if (v.grouped) {
    apply_override(*cfg, std::string(kQkvKlass) + "=axlearn.common.attention.GroupedQKVLinear");
  }
  apply_overrides(*cfg, overrides);
  return cfg;
}

std::unique_ptr<Model> instantiate(const Model::Config& cfg) {
  auto c = cfg.clone();
  c->name = "model";
  return c->instantiate<Model>(nullptr);
}

// Every parameter drawn from N(0, 1) (norm scales included, so no two tensors look alike).
NestedTensor random_params(const Model::Config& cfg, uint64_t seed) {
  std::unique_ptr<Model> m = instantiate(cfg);
  NestedTensor init = m->initialize_parameters_recursively(random::key(seed));
  uint32_t i = 0;
  NestedTensor params = init.map([&](const Tensor& t) {
    return random::normal(random::fold_in(random::key(seed + 1), i++), t.shape(), t.dtype());
  });
  eval(params);
  return params;
}

std::vector<uint32_t> f32_bits_of(const Tensor& t) {
  std::vector<uint32_t> out;
  for (float f : astype(t, float32).to_vector<float>()) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

void expect_bitwise_equal(const NestedTensor& a, const NestedTensor& b) {
  const auto fa = a.flatten_with_paths(), fb = b.flatten_with_paths();
  ASSERT_EQ(fa.size(), fb.size());
  for (size_t i = 0; i < fa.size(); ++i) {
    ASSERT_EQ(fa[i].first, fb[i].first);
    EXPECT_EQ(fa[i].second.dtype(), fb[i].second.dtype()) << fa[i].first;
    EXPECT_EQ(fa[i].second.shape(), fb[i].second.shape()) << fa[i].first;
    EXPECT_TRUE(f32_bits_of(fa[i].second) == f32_bits_of(fb[i].second)) << fa[i].first;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream(path) << j.dump(2);
}

// All tensors of an HF dir (either layout), by name.
std::map<std::string, Tensor> load_hf_dir(const std::string& dir) {
  std::map<std::string, Tensor> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    for (auto& [name, t] : io::load_safetensors(entry.path().string()).tensors) out[name] = t;
  }
  return out;
}

// The message of the Error fn throws (a failure when it throws nothing).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an axlearn::Error";
  return "";
}

class HfLlamaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "axlearn_hf_llama.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { fs::remove_all(tmp_); }
  std::string dir(const std::string& name) const { return tmp_ + "/" + name; }

  std::string tmp_;
};

// ---- round trips ----

TEST_F(HfLlamaTest, RoundTripIsBitwiseForEveryLayoutInOneFileAndSharded) {
  for (bool stacked : {false, true}) {
    for (bool tied : {false, true}) {
      for (bool grouped : {false, true}) {
        const Variant v{stacked, tied, grouped};
        SCOPED_TRACE(v.name());
        auto cfg = model_config(v);
        const NestedTensor params = random_params(*cfg, 7);
        const std::string single = dir("single"), sharded = dir("sharded");
        EXPECT_EQ(export_hf(single, *cfg, params), std::vector<std::string>{"model.safetensors"});
        expect_bitwise_equal(import_hf(single, *cfg), params);

        // 60 kB shards: each 512 kB embedding alone, then about one 49 kB layer per shard.
        HfExportOptions opts;
        opts.max_shard_size = 60'000;
        const std::vector<std::string> files = export_hf(sharded, *cfg, params, opts);
        ASSERT_GE(files.size(), 4u);
        EXPECT_EQ(files.back(), "model.safetensors.index.json");
        EXPECT_FALSE(fs::exists(sharded + "/model.safetensors"));
        const auto index = read_json(sharded + "/model.safetensors.index.json");
        uint64_t total = 0;
        std::set<std::string> in_map;
        for (const auto& [name, shape] : hf_tensor_shapes(llama_spec(*cfg))) {
          int64_t n = 1;
          for (int64_t d : shape) n *= d;
          total += uint64_t(n) * 4;
          ASSERT_TRUE(index["weight_map"].contains(name)) << name;
          in_map.insert(index["weight_map"][name].get<std::string>());
        }
        EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
        EXPECT_EQ(index["weight_map"].size(), hf_tensor_shapes(llama_spec(*cfg)).size());
        const std::regex shard_re(R"(model-0000\d-of-0000\d\.safetensors)");
        for (const std::string& f : in_map) EXPECT_TRUE(std::regex_match(f, shard_re)) << f;
        EXPECT_EQ(in_map.size(), files.size() - 1);
        for (size_t i = 0; i + 1 < files.size(); ++i) {
          // No shard above the limit unless it holds one tensor.
          const auto header = io::read_safetensors_header(sharded + "/" + files[i]);
          uint64_t bytes = 0;
          for (const auto& info : header) bytes += info.end - info.begin;
          EXPECT_TRUE(bytes <= opts.max_shard_size || header.size() == 1) << files[i];
        }
        expect_bitwise_equal(import_hf(sharded, *cfg), params);
        fs::remove_all(single);
        fs::remove_all(sharded);
      }
    }
  }
}

TEST_F(HfLlamaTest, ReexportInTheOtherLayoutReplacesTheOldFiles) {
  auto cfg = model_config();
  const NestedTensor params = random_params(*cfg, 3);
  HfExportOptions opts;
  opts.max_shard_size = 100'000;
  export_hf(dir("hf"), *cfg, params, opts);
  export_hf(dir("hf"), *cfg, params);  // one file now: the shards and index must go
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir("hf"))) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"config.json", "model.safetensors"}));
  expect_bitwise_equal(import_hf(dir("hf"), *cfg), params);
}

// Repeated (one [L, ...] tensor per weight) and stacked (layer{i}) models read the same HF dir:
// the same logits, and re-exporting the stacked import gives the same tensors bit for bit.
TEST_F(HfLlamaTest, RepeatedExportImportsIntoAStackedModelWithTheSameLogits) {
  auto repeated = model_config();
  auto stacked = model_config(Variant{.stacked = true});
  const NestedTensor params = random_params(*repeated, 11);
  export_hf(dir("a"), *repeated, params);
  const NestedTensor stacked_params = import_hf(dir("a"), *stacked);
  EXPECT_TRUE(stacked_params.contains("decoder"));
  export_hf(dir("b"), *stacked, stacked_params);
  EXPECT_EQ(read_file(dir("a") + "/model.safetensors"), read_file(dir("b") + "/model.safetensors"));

  const Tensor ids = array(std::vector<int32_t>{5, 17, 300, 4095, 2, 9, 77, 1000}, {2, 4});
  auto logits = [&](const Model::Config& cfg, const NestedTensor& p) {
    std::unique_ptr<Model> m = instantiate(cfg);
    return functional_call(*m, p, std::nullopt, false, [&] { return m->forward(ids, ids).logits; })
        .outputs.to_vector<float>();
  };
  const std::vector<float> a = logits(*repeated, params), b = logits(*stacked, stacked_params);
  ASSERT_EQ(a.size(), size_t(2 * 4 * 4096));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5 * (1 + std::abs(a[i]))) << i;
}

// ---- the mapping, element by element ----

// Our parameter at (layer, index...) read naively from the flat vector of its tree leaf.
class OursReader {
 public:
  OursReader(const NestedTensor& params, bool stacked) : stacked_(stacked) {
    for (const auto& [path, t] : params.flatten_with_paths()) {
      values_[path] = t.to_vector<float>();
      shapes_[path] = t.shape();
    }
  }
  float top(const std::string& path, std::vector<int64_t> idx) const {
    return at(path, std::move(idx));
  }
  float layer(int64_t l, const std::string& path, std::vector<int64_t> idx) const {
    if (stacked_) return at("decoder/transformer/layer" + std::to_string(l) + "/" + path, idx);
    idx.insert(idx.begin(), l);
    return at("decoder/transformer/repeat/layer/" + path, idx);
  }

 private:
  float at(const std::string& path, const std::vector<int64_t>& idx) const {
    const Shape& shape = shapes_.at(path);
    EXPECT_EQ(idx.size(), shape.size()) << path;
    int64_t flat = 0;
    for (size_t k = 0; k < idx.size(); ++k) flat = flat * shape[k] + idx[k];
    return values_.at(path).at(size_t(flat));
  }
  bool stacked_;
  std::map<std::string, std::vector<float>> values_;
  std::map<std::string, Shape> shapes_;
};

TEST_F(HfLlamaTest, NamesShapesAndElementsMatchNaiveIndexing) {
  constexpr int64_t V = 4096, D = 32, L = 2, N = 4, K = 2, H = 8, F = 96;
  for (const Variant& v : {Variant{}, Variant{.stacked = true, .tied = true, .grouped = true}}) {
    SCOPED_TRACE(v.name());
    auto cfg = model_config(v);
    const NestedTensor params = random_params(*cfg, 5);
    export_hf(dir("hf"), *cfg, params);
    const std::map<std::string, Tensor> hf = load_hf_dir(dir("hf"));
    const OursReader ours(params, v.stacked);

    // The names and shapes LlamaForCausalLM has, written out.
    std::map<std::string, Shape> expected{{"model.embed_tokens.weight", {V, D}},
                                          {"model.norm.weight", {D}}};
    if (!v.tied) expected["lm_head.weight"] = {V, D};
    for (int l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      expected[p + "input_layernorm.weight"] = {D};
      expected[p + "post_attention_layernorm.weight"] = {D};
      expected[p + "self_attn.q_proj.weight"] = {N * H, D};
      expected[p + "self_attn.k_proj.weight"] = {K * H, D};
      expected[p + "self_attn.v_proj.weight"] = {K * H, D};
      expected[p + "self_attn.o_proj.weight"] = {D, N * H};
      expected[p + "mlp.gate_proj.weight"] = {F, D};
      expected[p + "mlp.up_proj.weight"] = {F, D};
      expected[p + "mlp.down_proj.weight"] = {D, F};
    }
    ASSERT_EQ(hf.size(), expected.size());
    for (const auto& [name, shape] : expected) {
      ASSERT_TRUE(hf.count(name)) << name;
      EXPECT_EQ(hf.at(name).shape(), shape) << name;
      EXPECT_EQ(hf.at(name).dtype(), float32) << name;
    }

    auto check = [&](const std::string& name, auto&& ref) {
      const Shape& s = hf.at(name).shape();
      const std::vector<float> got = hf.at(name).to_vector<float>();
      const int64_t rows = s[0], cols = s.size() == 2 ? s[1] : 1;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(got[size_t(r * cols + c)], ref(r, c)) << name << " [" << r << ", " << c << "]";
        }
      }
    };
    check("model.embed_tokens.weight", [&](int64_t r, int64_t c) {
      return ours.top("decoder/emb/token_emb/weight", {r, c});
    });
    check("model.norm.weight",
          [&](int64_t r, int64_t) { return ours.top("decoder/output_norm/scale", {r}); });
    if (!v.tied) {
      check("lm_head.weight", [&](int64_t r, int64_t c) {
        return ours.top("decoder/lm_head/weight", {r, c});
      });
    }
    const std::string qkv = "self_attention/attention/input_linear/input_linear/";
    for (int64_t l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // proj[n*H + j, i] = ours[i, head, j]: the fused tensor holds q heads, then k, then v.
      auto heads_in = [&](const char* sep, int64_t offset) {
        return [&, sep, offset](int64_t r, int64_t c) {
          const int64_t n = r / H, j = r % H;
          if (v.grouped) return ours.layer(l, qkv + sep + "_proj/weight", {c, n, j});
          return ours.layer(l, qkv + "qkv_proj/weight", {c, offset + n, j});
        };
      };
      check(p + "self_attn.q_proj.weight", heads_in("q", 0));
      check(p + "self_attn.k_proj.weight", heads_in("k", N));
      check(p + "self_attn.v_proj.weight", heads_in("v", N + K));
      check(p + "self_attn.o_proj.weight", [&](int64_t r, int64_t c) {
        return ours.layer(l, "self_attention/attention/output_linear/weight", {r, c / H, c % H});
      });
      check(p + "mlp.gate_proj.weight", [&](int64_t r, int64_t c) {
        return ours.layer(l, "feed_forward/linear1_0/weight", {c, r});
      });
      check(p + "mlp.up_proj.weight", [&](int64_t r, int64_t c) {
        return ours.layer(l, "feed_forward/linear1_1/weight", {c, r});
      });
      check(p + "mlp.down_proj.weight", [&](int64_t r, int64_t c) {
        return ours.layer(l, "feed_forward/linear2/weight", {c, r});
      });
      check(p + "input_layernorm.weight",
            [&](int64_t r, int64_t) { return ours.layer(l, "self_attention/norm/scale", {r}); });
      check(p + "post_attention_layernorm.weight",
            [&](int64_t r, int64_t) { return ours.layer(l, "feed_forward/norm/scale", {r}); });
    }
    fs::remove_all(dir("hf"));
  }
}

// ---- dtypes ----

// Round to nearest, ties to even, of the upper 16 bits (no NaNs in the data).
float bf16_rne(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xffff0000u);
}

TEST_F(HfLlamaTest, Bf16AndF16ExportsAreOurF32RoundedToNearestEven) {
  auto cfg = model_config();
  const NestedTensor params = random_params(*cfg, 9);
  export_hf(dir("f32"), *cfg, params);
  HfExportOptions bf16_opts, f16_opts;
  bf16_opts.dtype = bfloat16;
  f16_opts.dtype = float16;
  export_hf(dir("bf16"), *cfg, params, bf16_opts);
  export_hf(dir("f16"), *cfg, params, f16_opts);
  EXPECT_EQ(read_json(dir("bf16") + "/config.json")["torch_dtype"], "bfloat16");
  EXPECT_EQ(read_json(dir("f16") + "/config.json")["torch_dtype"], "float16");
  const auto f32 = load_hf_dir(dir("f32")), bf16 = load_hf_dir(dir("bf16")),
             f16 = load_hf_dir(dir("f16"));
  int64_t rounded = 0;
  for (const auto& [name, t] : f32) {
    ASSERT_EQ(bf16.at(name).dtype(), bfloat16) << name;
    ASSERT_EQ(f16.at(name).dtype(), float16) << name;
    const std::vector<float> ref = t.to_vector<float>();
    const std::vector<float> got_bf16 = astype(bf16.at(name), float32).to_vector<float>();
    const std::vector<float> got_f16 = astype(f16.at(name), float32).to_vector<float>();
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(got_bf16[i]), std::bit_cast<uint32_t>(bf16_rne(ref[i])))
          << name << "[" << i << "] = " << ref[i];
      ASSERT_EQ(got_f16[i], float(static_cast<_Float16>(ref[i]))) << name << "[" << i << "]";
      rounded += got_bf16[i] != ref[i];
    }
  }
  EXPECT_GT(rounded, 1000);  // the data did need rounding

  // Imports cast to the parameter dtype: f32 holding the bf16 values.
  const NestedTensor back = import_hf(dir("bf16"), *cfg);
  const auto expected = params.map([](const Tensor& t) {
    std::vector<float> v = t.to_vector<float>();
    for (float& x : v) x = bf16_rne(x);
    return array(v, t.shape());
  });
  expect_bitwise_equal(back, expected);
}

TEST_F(HfLlamaTest, F16ExportRefusesWeightsBeyondItsRange) {
  auto cfg = model_config();
  NestedTensor params = random_params(*cfg, 2);
  NestedTensor& w = params["decoder"]["output_norm"]["scale"];
  w = NestedTensor(w.tensor() * 1e5);
  HfExportOptions opts;
  opts.dtype = float16;
  const std::string msg = error_of([&] { export_hf(dir("hf"), *cfg, params, opts); });
  EXPECT_NE(msg.find("'model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("float16"), std::string::npos) << msg;
}

// ---- config.json ----

TEST_F(HfLlamaTest, ConfigJsonDescribesFujiTest) {
  const LlamaSpec spec = llama_spec(*model_config());
  const Json j = hf_config_json(spec, bfloat16, 32);
  EXPECT_EQ(j["architectures"], Json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 32);
  EXPECT_EQ(j["intermediate_size"], 96);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 8);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["vocab_size"], 4096);
  EXPECT_EQ(j["rms_norm_eps"], 1e-5);
  EXPECT_EQ(j["rope_theta"], 5e5);
  EXPECT_EQ(j["max_position_embeddings"], 32);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["mlp_bias"], false);
  EXPECT_EQ(j["eos_token_id"], 1);
  EXPECT_EQ(j["bos_token_id"], 1);
  EXPECT_EQ(j["pad_token_id"], 0);
  EXPECT_NO_THROW(check_hf_config(spec, j, "config.json"));
  EXPECT_TRUE(llama_spec(*model_config(Variant{.tied = true})).tie_word_embeddings);
}

TEST_F(HfLlamaTest, ConfigCheckNamesEveryMismatchingField) {
  const LlamaSpec spec = llama_spec(*model_config());
  Json j = hf_config_json(spec, float32, 32);
  // LlamaConfig's defaults stand in for absent fields: head_dim = hidden / heads.
  j.erase("head_dim");
  j.erase("attention_bias");
  EXPECT_NO_THROW(check_hf_config(spec, j, "x/config.json"));
  j["hidden_size"] = 64;
  j["num_key_value_heads"] = 4;
  j["rope_theta"] = 10000.0;
  j["tie_word_embeddings"] = true;
  j["hidden_act"] = "gelu";
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  j["model_type"] = "mistral";
  const std::string msg = error_of([&] { check_hf_config(spec, j, "x/config.json"); });
  for (const char* field :
       {"x/config.json", "hidden_size is 64", "model.decoder.dim", "num_key_value_heads is 4",
        "rope_theta", "tie_word_embeddings", "hidden_act", "rope_scaling", "model_type"}) {
    EXPECT_NE(msg.find(field), std::string::npos) << field << " not in: " << msg;
  }
  // The defaults are checked too: an absent num_key_value_heads means num_attention_heads (4).
  Json k = hf_config_json(spec, float32, 32);
  k.erase("num_key_value_heads");
  EXPECT_NE(error_of([&] { check_hf_config(spec, k, "c"); }).find("num_key_value_heads"),
            std::string::npos);
}

// ---- unsupported models ----

TEST_F(HfLlamaTest, RejectsModelsLlamaCannotExpressNamingTheConfigPath) {
  const std::string layer = "decoder.transformer.layer.";
  const std::string attn = layer + "self_attention.attention.";
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases{
      {{layer + "feed_forward.activation=nn.relu"}, {"model." + layer + "feed_forward.activation"}},
      {{"decoder.output_norm.klass=axlearn.common.layers.LayerNorm"},
       {"model.decoder.output_norm.klass", "LayerNorm"}},
      {{std::string(kQkvKlass) + "=axlearn.common.attention.FusedQKVLinear"},
       {"model." + std::string(kQkvKlass), "FusedQKVLinear"}},
      {{attn + "input_linear=" +
        R"({"klass": "axlearn.common.attention.FusedGroupedQKVLinear", "num_kv_heads": 2})"},
       {"model." + attn + "input_linear.klass", "RoFormerQKVLinear"}},
      {{attn + "output_linear.bias=True", attn + "atten_logit_cap=30.0"},
       {"model." + attn + "output_linear.bias", "model." + attn + "atten_logit_cap"}},
      {{attn + "input_linear.rotary_value=True"}, {"model." + attn + "input_linear.rotary_value"}},
      {{layer + "feed_forward.norm.eps=1e-6"}, {"model." + layer + "feed_forward.norm.eps"}},
      {{layer + "feed_forward.linear2.bias=True"},
       {"model." + layer + "feed_forward.linear2.bias"}},
  };
  for (const auto& [overrides, needles] : cases) {
    SCOPED_TRACE(overrides.front());
    auto cfg = model_config({}, overrides);
    const std::string msg = error_of([&] { llama_spec(*cfg); });
    for (const std::string& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << n << " not in: " << msg;
    }
  }
}

// ---- malformed Hugging Face directories ----

class MalformedHfDirTest : public HfLlamaTest {
 protected:
  void SetUp() override {
    HfLlamaTest::SetUp();
    cfg_ = model_config();
    params_ = random_params(*cfg_, 4);
  }
  // Exports, then lets `edit` change the tensors of model.safetensors.
  void export_and_edit(
      const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    export_hf(dir("hf"), *cfg_, params_);
    const std::string file = dir("hf") + "/model.safetensors";
    auto tensors = io::load_safetensors(file).tensors;
    edit(tensors);
    io::save_safetensors(file, tensors);
  }
  // The error of importing after export_and_edit(edit).
  std::string import_error_after(
      const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    export_and_edit(edit);
    return error_of([&] { import_hf(dir("hf"), *cfg_); });
  }
  void expect_contains(const std::string& msg, const std::vector<std::string>& needles) {
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << n << " not in: " << msg;
  }

  ConfigPtr<Model::Config> cfg_;
  NestedTensor params_;
};

TEST_F(MalformedHfDirTest, MissingTensorIsNamed) {
  const std::string msg = import_error_after([](auto& ts) {
    std::erase_if(ts, [](const auto& p) { return p.first == "model.layers.1.mlp.up_proj.weight"; });
  });
  expect_contains(msg, {"missing tensor", "'model.layers.1.mlp.up_proj.weight'", dir("hf")});
}

TEST_F(MalformedHfDirTest, WrongShapeNamesTensorFileAndBothShapes) {
  const std::string msg = import_error_after([](auto& ts) {
    for (auto& [name, t] : ts) {
      if (name == "model.layers.0.self_attn.k_proj.weight") t = zeros({32, 32});
    }
  });
  expect_contains(msg, {"model.safetensors", "'model.layers.0.self_attn.k_proj.weight'", "(32, 32)",
                        "(16, 32)"});
}

TEST_F(MalformedHfDirTest, IntegerWeightsAreRefused) {
  const std::string msg = import_error_after([](auto& ts) {
    for (auto& [name, t] : ts) {
      if (name == "model.norm.weight") t = zeros({32}, int32);
    }
  });
  expect_contains(msg, {"'model.norm.weight'", "I32", "model.safetensors"});
}

TEST_F(MalformedHfDirTest, UnexpectedTensorIsNamedButRotaryBuffersAreIgnored) {
  std::string msg = import_error_after([](auto& ts) {
    ts.push_back({"model.layers.2.mlp.up_proj.weight", zeros({96, 32})});
  });
  expect_contains(msg, {"unexpected tensor", "'model.layers.2.mlp.up_proj.weight'"});
  // Old transformers versions saved the rotary inv_freq buffers; they carry no weights.
  msg = import_error_after([](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", zeros({4})});
    ts.push_back({"model.layers.1.mlp.up_proj.weight.bogus", zeros({4})});
  });
  expect_contains(msg, {"'model.layers.1.mlp.up_proj.weight.bogus'"});
  EXPECT_EQ(msg.find("inv_freq"), std::string::npos) << msg;
  export_and_edit([](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", zeros({4})});
  });
  expect_bitwise_equal(import_hf(dir("hf"), *cfg_), params_);
}

TEST_F(MalformedHfDirTest, LmHeadInATiedCheckpointIsUnexpected) {
  auto tied = model_config(Variant{.tied = true});
  export_hf(dir("hf"), *cfg_, params_);
  Json j = read_json(dir("hf") + "/config.json");
  j["tie_word_embeddings"] = true;
  write_json(dir("hf") + "/config.json", j);
  expect_contains(error_of([&] { import_hf(dir("hf"), *tied); }),
                  {"unexpected tensor 'lm_head.weight'", "ties the embeddings"});
}

TEST_F(MalformedHfDirTest, MismatchingConfigJsonFieldIsNamed) {
  export_hf(dir("hf"), *cfg_, params_);
  Json j = read_json(dir("hf") + "/config.json");
  j["num_hidden_layers"] = 3;
  write_json(dir("hf") + "/config.json", j);
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }),
                  {dir("hf") + "/config.json", "num_hidden_layers is 3", "2 in the model"});
  fs::remove(dir("hf") + "/config.json");
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }), {"no config.json"});
}

TEST_F(MalformedHfDirTest, IndexEntriesMustMatchTheShards) {
  HfExportOptions opts;
  opts.max_shard_size = 100'000;
  export_hf(dir("hf"), *cfg_, params_, opts);
  const std::string index_path = dir("hf") + "/model.safetensors.index.json";
  const Json good = read_json(index_path);
  const std::string name = "model.layers.0.mlp.down_proj.weight";

  Json j = good;
  j["weight_map"].erase(name);  // the shard still holds it
  write_json(index_path, j);
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }),
                  {"'" + name + "'", "weight_map", index_path});

  j = good;  // pointed at another shard
  j["weight_map"][name] = good["weight_map"]["model.embed_tokens.weight"];
  write_json(index_path, j);
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }),
                  {"no tensor '" + name + "'", "model.safetensors.index.json places"});

  j = good;  // a shard that does not exist
  j["weight_map"][name] = "model-00009-of-00009.safetensors";
  write_json(index_path, j);
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }),
                  {"model-00009-of-00009.safetensors", "does not exist", index_path});

  write_json(index_path, good);
  expect_bitwise_equal(import_hf(dir("hf"), *cfg_), params_);

  // Both layouts at once is ambiguous; neither is no model.
  export_hf(dir("one"), *cfg_, params_);
  fs::copy_file(dir("one") + "/model.safetensors", dir("hf") + "/model.safetensors");
  expect_contains(error_of([&] { import_hf(dir("hf"), *cfg_); }), {"both"});
  fs::remove(dir("one") + "/model.safetensors");
  expect_contains(error_of([&] { import_hf(dir("one"), *cfg_); }), {"no Hugging Face weights"});
}

// ---- `axlearn convert` end to end (the command line as a process) ----

#ifdef AXLEARN_CLI
struct CliResult {
  int status;
  std::string output;  // stdout and stderr
};

CliResult run_cli(const std::string& args) {
  const std::string cmd = std::string(AXLEARN_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  const int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

// HF dir -> trainer dir (step 0) -> HF dir reproduces the files; `axlearn train` fine-tunes from
// the converted checkpoint; the fine-tuned step exports sharded bf16 that imports again.
TEST_F(HfLlamaTest, ConvertImportsTrainsFromAndExportsCheckpoints) {
  auto cfg = model_config();
  const NestedTensor params = random_params(*cfg, 21);
  HfExportOptions opts;
  opts.max_position_embeddings = 32;  // fuji-test's max_len, which --to=hf reads
  export_hf(dir("hf0"), *cfg, params, opts);
  const std::string trainer_dir = dir("run");

  CliResult r = run_cli("convert --to=axlearn --hf_dir=" + dir("hf0") +
                        " --trainer_dir=" + trainer_dir + " --config=fuji-test");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step_00000000"), std::string::npos) << r.output;

  // A committed step 0: the imported model, a fresh learner state, the step in the extra JSON.
  auto tcfg = config_from_json_as<train::SpmdTrainer::Config>(
      nlohmann::ordered_json::parse(read_file(trainer_dir + "/trainer_config.json")));
  EXPECT_TRUE(*tcfg->model.get() == *cfg);
  tcfg->dir = trainer_dir;
  auto trainer = tcfg->instantiate<train::SpmdTrainer>(nullptr);
  const NestedTensor fresh = trainer->init_state();
  RestoredCheckpoint ckpt = restore_checkpoint(trainer_dir, 0, fresh);
  expect_bitwise_equal(ckpt.tree.at("model"), params);
  expect_bitwise_equal(ckpt.tree.at("learner"), fresh.at("learner"));
  EXPECT_EQ(nlohmann::json::parse(ckpt.extra_json), nlohmann::json({{"step", 0}}));

  r = run_cli("convert --to=hf --trainer_dir=" + trainer_dir + " --out=" + dir("hf1"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(dir("hf1") + "/model.safetensors"),
            read_file(dir("hf0") + "/model.safetensors"));
  EXPECT_EQ(read_json(dir("hf1") + "/config.json"), read_json(dir("hf0") + "/config.json"));

  r = run_cli("convert --to=axlearn --hf_dir=" + dir("hf0") + " --trainer_dir=" + trainer_dir +
              " --config=fuji-test");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("already holds checkpoints"), std::string::npos) << r.output;

  // Fine-tuning starts from the converted weights (the input from its beginning).
  r = run_cli("train --config fuji-test --trainer_dir " + trainer_dir + " --max_step 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step 0 has no input position"), std::string::npos) << r.output;
  EXPECT_EQ(committed_steps(trainer_dir).back(), 2);

  r = run_cli("convert --to=hf --trainer_dir=" + trainer_dir + " --out=" + dir("hf2") +
              " --dtype=bf16 --max_shard_size=100KB");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir("hf2") + "/model.safetensors.index.json"));
  // The export is step 2's weights rounded to bf16, and training moved them.
  const NestedTensor tuned = import_hf(dir("hf2"), *cfg);
  const NestedTensor step2 = restore_checkpoint(trainer_dir, 2, fresh).tree.at("model");
  expect_bitwise_equal(tuned, step2.map([](const Tensor& t) {
    std::vector<float> v = t.to_vector<float>();
    for (float& x : v) x = bf16_rne(x);
    return array(v, t.shape());
  }));
  EXPECT_NE(f32_bits_of(step2.at_path("decoder/output_norm/scale").tensor()),
            f32_bits_of(params.at_path("decoder/output_norm/scale").tensor()));

  r = run_cli("convert --to=hf --trainer_dir=" + trainer_dir + " --out=" + dir("x") + " --step=5");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no committed step 5 (committed: 0, 2)"), std::string::npos) << r.output;
}

TEST_F(HfLlamaTest, ConvertRefusesIncompleteOrMisdirectedFlags) {
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases{
      {"convert --to=hf --trainer_dir=" + dir("none") + " --out=" + dir("o"),
       dir("none") + "/trainer_config.json"},
      {"convert --to=hf --trainer_dir=" + dir("none"), "--to=hf needs --out"},
      {"convert --to=axlearn --trainer_dir=" + dir("t") + " --config=fuji-test",
       "--to=axlearn needs --hf_dir"},
      {"convert --to=axlearn --hf_dir=" + dir("nohf") + " --trainer_dir=" + dir("t") +
           " --config=fuji-test",
       dir("nohf") + ": no config.json"},
      {"convert --to=axlearn --hf_dir=x --trainer_dir=" + dir("t") + " --config=fuji-test --out=y",
       "--out does not apply to --to=axlearn"},
      {"convert --to=hf --trainer_dir=t --out=o --max_shard_size=5XB", "unknown unit in '5XB'"},
      {"convert --to=axlearn --hf_dir=x --trainer_dir=" + dir("t") + " --config=fuji-tst",
       "unknown config 'fuji-tst'"},
  };
  for (const Case& c : cases) {
    const CliResult r = run_cli(c.args);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(dir("t") + "/checkpoints"));
}
#endif  // AXLEARN_CLI

}  // namespace
}  // namespace axlearn::infer
