// The Fuji family (AXLearn's experiments/text/gpt/fuji.py): LLaMA-style decoders with RMSNorm,
// rotary GQA attention, SwiGLU feed-forward layers, AdamW with global-norm clipping and a
// cosine schedule. Sizes 1B/3B/8B follow AXLearn's v3 dimensions, 7B/70B its v2 dimensions.
#include <optional>

#include "axlearn/config/format.h"
#include "axlearn/core/error.h"
#include "axlearn/data/tokenizer.h"
#include "axlearn/experiments/experiments.h"
#include "axlearn/module/param_init.h"
#include "axlearn/optim/optimizers.h"
#include "axlearn/optim/schedule.h"

namespace axlearn::experiments {
namespace {

using layers::Decoder;
using layers::FusedGroupedQKVLinear;
using layers::GroupedQueryAttention;
using layers::HiddenDimFnConfig;
using layers::LmHead;
using layers::Model;
using layers::MultiheadInputLinear;
using layers::RepeatedTransformerLayer;
using layers::RMSNorm;
using layers::RoFormerQKVLinear;
using layers::ScaleFn;
using layers::TransformerLayer;
using train::SpmdTrainer;

struct FujiDims {
  int64_t num_layers;
  int64_t dim;
  int64_t num_heads;
  int64_t num_kv_heads;
  // Feed-forward hidden dim: a fixed number, or dim * ffn_scale rounded up to ffn_round.
  std::optional<int64_t> ffn_dim;
  double ffn_scale = 0;
  int64_t ffn_round = 256;
  int64_t vocab_size;
  int64_t max_len;
  double rope_theta;
  bool tied_head;
};

struct FujiTraining {
  int64_t global_batch_size;
  int64_t max_step;
  double peak_lr;
  // adamw_decoupled applies weight_decay with the update schedule but not the learning rate,
  // so 0.1 * peak_lr decays as AdamW's usual 0.1 does at the peak.
  double weight_decay;
  int64_t warmup_steps;
  int64_t save_every_n_steps;
  int64_t eval_every_n_steps;
  int64_t log_every_n_steps;
  std::vector<int64_t> mesh_shape;
  std::optional<Dtype> train_dtype;
  bool builtin_corpus;  // train on the King James Bible of scripts/make_corpus
};

ConfigPtr<Model::Config> fuji_model(const FujiDims& d) {
  // AXLearn's Fuji partition specs: weights split over the FSDP axes on the model dimension and
  // over 'model' on heads / hidden units (Megatron-style column and row splits). Set before a
  // config is placed in its parent, which keeps a copy.
  const MeshAxis fsdp = std::vector<std::string>{"expert", "fsdp", "seq"};
  const MeshAxis tp = std::string("model");
  const MeshAxis none = std::monostate{};
  auto attn = GroupedQueryAttention::default_config();
  attn->num_heads = d.num_heads;
  attn->causal = true;
  auto qkv = FusedGroupedQKVLinear::default_config().set("num_kv_heads", d.num_kv_heads);
  qkv->set("layer", MultiheadInputLinear::default_config().set("bias", false));
  qkv->layer->param_partition_spec = MeshAxes{fsdp, tp, none};
  auto rope = RoFormerQKVLinear::default_config();
  rope->input_linear = qkv;
  rope->rope_pos_emb_layer->theta = d.rope_theta;
  attn->input_linear = rope;
  attn->output_linear->bias = false;
  attn->output_linear->param_partition_spec = MeshAxes{fsdp, tp, none};

  auto layer = TransformerLayer::default_config();
  layer->self_attention->attention = attn;
  layer->self_attention->norm = RMSNorm::default_config().set("eps", 1e-5);
  if (d.ffn_dim) {
    layer->feed_forward->hidden_dim = *d.ffn_dim;
  } else {
    layer->feed_forward->hidden_dim = ConfigPtr<HiddenDimFnConfig>(
        ScaleFn::default_config().set("scale", d.ffn_scale).set("round_up_to_multiples_of",
                                                                 d.ffn_round));
  }
  layer->feed_forward->activation = std::vector<std::string>{"nn.silu", "linear"};
  layer->feed_forward->norm = RMSNorm::default_config().set("eps", 1e-5);
  layer->feed_forward->linear1->bias = false;
  layer->feed_forward->linear2->bias = false;
  layer->feed_forward->linear1->param_partition_spec = MeshAxes{fsdp, tp};
  layer->feed_forward->linear2->param_partition_spec = MeshAxes{tp, fsdp};

  auto stack = RepeatedTransformerLayer::default_config();
  stack->num_layers = d.num_layers;
  stack->layer = layer;

  auto dec = Decoder::default_config();
  dec->dim = d.dim;
  dec->vocab_size = d.vocab_size;
  dec->transformer = stack;
  dec->output_norm = RMSNorm::default_config().set("eps", 1e-5);
  if (!d.tied_head) dec->lm_head = LmHead::default_config();
  // Token embeddings drawn with fan_out scaling, every other weight with fan_in (as Fuji).
  auto emb_init = DefaultInitializer::default_config();
  emb_init->init_by_param_name = OrderedDict<ConfigPtr<Initializer::Config>>{
      {".*weight$", WeightInitializer::default_config()
                        .set("fan", std::string("fan_out"))
                        .set("distribution", std::string("normal"))}};
  dec->emb->token_emb->param_init = emb_init;

  dec->emb->token_emb->param_partition_spec = MeshAxes{fsdp, tp};
  if (dec->lm_head.get()) dec->lm_head->param_partition_spec = MeshAxes{tp, fsdp};

  auto model = Model::default_config();
  model->decoder = dec;
  auto init = DefaultInitializer::default_config();
  init->init_by_param_name = OrderedDict<ConfigPtr<Initializer::Config>>{
      {".*weight$", WeightInitializer::default_config()
                        .set("fan", std::string("fan_in"))
                        .set("distribution", std::string("normal"))}};
  model->param_init = init;
  model->dtype = Dtype(float32);
  return model;
}

ConfigPtr<data::Input::Config> corpus_input(const std::string& file, const FujiDims& d,
                                            int64_t batch, bool is_training) {
  auto in = data::Input::default_config();
  in->sources = std::vector<std::string>{"{data_dir}/kjv/" + file};
  in->vocab = std::string("{data_dir}/kjv/spm.model");
  in->max_len = d.max_len;
  in->global_batch_size = batch;
  in->is_training = is_training;
  return in;
}

ConfigPtr<SpmdTrainer::Config> fuji_trainer(const FujiDims& d, const FujiTraining& t) {
  auto cfg = SpmdTrainer::default_config();
  cfg->name = "gpt_trainer";
  cfg->model = fuji_model(d);
  cfg->max_step = t.max_step;
  cfg->log_every_n_steps = t.log_every_n_steps;
  cfg->train_dtype = t.train_dtype;
  cfg->mesh_axis_names =
      std::vector<std::string>{"pipeline", "data", "expert", "fsdp", "seq", "model"};
  cfg->mesh_shape = t.mesh_shape;
  // --mesh_selector picks a layout per platform (AXLearn's mesh_rules): FSDP over every CPU
  // device; on 8-GPU hosts FSDP within a host and data parallelism across hosts.
  cfg->mesh_rules = OrderedDict<std::vector<std::string>>{
      {"cpu(-.*)?", {"mesh_shape=[1,1,1,-1,1,1]"}},
      {"gpu-(p5\\.48xlarge|p4de\\.24xlarge|8xh100)-.*", {"mesh_shape=[1,-1,1,8,1,1]"}}};
  cfg->batch_axis_names = std::vector<std::string>{"data", "expert", "fsdp"};
  cfg->seq_axis_names = std::vector<std::string>{"seq"};

  // AdamW (decoupled) with global-norm clipping and a cosine schedule with linear warmup.
  auto schedule = optim::CosineWithLinearWarmup::default_config();
  schedule->peak_lr = 1.0;
  schedule->max_step = t.max_step;
  schedule->warmup_steps = t.warmup_steps;
  schedule->alpha = 0.1;
  auto adamw = optim::AdamWDecoupledOptimizer::default_config();
  adamw->learning_rate = t.peak_lr;
  adamw->b1 = 0.9;
  adamw->b2 = 0.95;
  adamw->eps = 1e-8;
  adamw->update_schedule = schedule;
  adamw->weight_decay = t.weight_decay;
  auto clip = optim::ClipByGlobalNorm::default_config();
  clip->max_norm = 1.0;
  auto chain = optim::Chain::default_config();
  chain->args = std::vector<ConfigPtr<optim::TransformationConfig>>{clip, adamw};
  auto learner = optim::Learner::default_config();
  learner->optimizer = chain;
  cfg->learner = learner;

  auto save = train::EveryNStepsAndLastPolicy::default_config();
  save->n = t.save_every_n_steps;
  save->max_step = t.max_step;
  cfg->checkpointer->save_policy = save;
  cfg->checkpointer->keep_every_n_steps = 0;
  cfg->summary_writer->write_every_n_steps = t.log_every_n_steps;

  if (t.builtin_corpus) {
    cfg->input = corpus_input("train.txt", d, t.global_batch_size, /*is_training=*/true);
    cfg->save_input_iterator = true;
    auto ev = train::SpmdEvaler::default_config();
    ev->input = corpus_input("eval.txt", d, t.global_batch_size, /*is_training=*/false);
    auto policy = train::EveryNStepsAndLastPolicy::default_config();
    policy->n = t.eval_every_n_steps;
    policy->max_step = t.max_step;
    ev->eval_policy = policy;
    cfg->evalers = std::map<std::string, ConfigPtr<train::SpmdEvaler::Config>>{{"validation", ev}};
  } else {
    // Real-size configs name their data by the same fields; point sources at your own text.
    cfg->input = corpus_input("train.txt", d, t.global_batch_size, /*is_training=*/true);
  }
  return cfg;
}

// Parameter-count-relevant dimensions of AXLearn's Fuji models.
FujiDims fuji_1b() { return {16, 2048, 32, 8, 8192, 0, 256, 131072, 8192, 5e5, true}; }
FujiDims fuji_3b() { return {28, 3072, 24, 8, 8192, 0, 256, 131072, 8192, 5e5, true}; }
FujiDims fuji_7b() { return {32, 4096, 32, 8, std::nullopt, 8.0 / 3, 256, 32768, 4096, 5e5, false}; }
FujiDims fuji_8b() { return {32, 4096, 32, 8, 14336, 0, 256, 131072, 8192, 5e5, false}; }
FujiDims fuji_70b() { return {80, 8192, 64, 8, std::nullopt, 3.5, 256, 32768, 4096, 5e5, false}; }

FujiTraining big_training(int64_t fsdp, int64_t batch, int64_t max_step, double peak_lr,
                          double weight_decay) {
  return {batch, max_step, peak_lr, weight_decay, 2000, 5000, 5000, 100,
          {1, -1, 1, fsdp, 1, 1}, Dtype(bfloat16), false};
}

}  // namespace

const std::vector<Experiment>& registered_experiments() {
  static const std::vector<Experiment> all = [] {
    std::vector<Experiment> e;
    e.push_back({"fuji-test",
                 "tiny Fuji (2 layers, dim 32) on the built-in corpus; for tests",
                 [] {
                   FujiDims d{2, 32, 4, 2, std::nullopt, 8.0 / 3, 16, 4096, 32, 5e5, false};
                   FujiTraining t{8, 30, 2e-2, 2e-3, 5, 10, 30, 5, {1, 1, 1, 1, 1, 1}, std::nullopt,
                                  true};
                   auto cfg = fuji_trainer(d, t);
                   // A handful of evaluation batches keeps tests fast.
                   cfg->evalers.mut().at("validation")->input->max_eval_batches = 4;
                   return cfg;
                 },
                 true});
    e.push_back({"fuji-nano",
                 "small Fuji (4 layers, dim 256, GQA 8/4 heads) trained on the King James Bible; "
                 "about four minutes on 2 CPU cores",
                 [] {
                   FujiDims d{4, 256, 8, 4, std::nullopt, 8.0 / 3, 64, 4096, 128, 1e4, false};
                   FujiTraining t{16, 300, 2e-3, 2e-4, 30, 150, 150, 20, {1, 1, 1, 1, 1, 1},
                                  std::nullopt, true};
                   return fuji_trainer(d, t);
                 },
                 true});
    e.push_back({"fuji-1B", "AXLearn's fuji-1B-v3 dimensions (tied embeddings)",
                 [] { return fuji_trainer(fuji_1b(), big_training(8, 512, 983040, 3e-4, 3e-5)); }});
    e.push_back({"fuji-3B", "AXLearn's fuji-3B-v3 dimensions (tied embeddings)",
                 [] { return fuji_trainer(fuji_3b(), big_training(8, 512, 983040, 3e-4, 3e-5)); }});
    e.push_back({"fuji-7B", "AXLearn's fuji-7B-v2 dimensions",
                 [] { return fuji_trainer(fuji_7b(), big_training(8, 1024, 500000, 3e-4, 3e-5)); }});
    e.push_back({"fuji-8B", "AXLearn's fuji-8B-v3 dimensions",
                 [] { return fuji_trainer(fuji_8b(), big_training(8, 1024, 983040, 3e-4, 3e-5)); }});
    e.push_back({"fuji-70B", "AXLearn's fuji-70B-v2 dimensions",
                 [] { return fuji_trainer(fuji_70b(), big_training(64, 1024, 500000, 1.5e-4, 1.5e-5)); }});
    return e;
  }();
  return all;
}

ConfigPtr<SpmdTrainer::Config> trainer_config(const std::string& name) {
  std::vector<std::string> names;
  for (const Experiment& e : registered_experiments()) {
    if (e.name == name) return e.make_config();
    names.push_back(e.name);
  }
  fail("unknown config '", name, "'", suggest_names(name, names),
       "; `axlearn configs list` shows them all");
}

int64_t count_parameters(const layers::Model::Config& model) {
  auto cfg = model.clone();
  cfg->name = "model";
  std::unique_ptr<layers::Model> m = cfg->instantiate<layers::Model>(nullptr);
  int64_t n = 0;
  for (const auto& [path, spec] : m->create_parameter_specs_recursively().flatten_with_paths()) {
    int64_t size = 1;
    for (int64_t d : spec.shape) size *= d;
    n += size;
  }
  return n;
}

}  // namespace axlearn::experiments
