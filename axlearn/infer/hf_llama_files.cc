// Export and import of Hugging Face model directories (see hf_llama.h): sharding, the index,
// and validation of names, shapes and dtypes from the safetensors headers.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/core/transforms.h"
#include "axlearn/infer/hf_llama.h"
#include "axlearn/io/safetensors.h"

namespace axlearn::infer {
namespace fs = std::filesystem;

namespace {

std::string join_names(const std::vector<std::string>& names, size_t limit = 8) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) {
    out += (i ? ", '" : "'") + names[i] + "'";
  }
  if (names.size() > limit) out += " and " + std::to_string(names.size() - limit) + " more";
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Json parse_json_file(const std::string& path) {
  try {
    return Json::parse(read_text(path));
  } catch (const Json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) fail("cannot write ", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("cannot rename ", tmp, " to ", path, ": ", ec.message());
}

const char* kSingleFile = "model.safetensors";
const char* kIndexFile = "model.safetensors.index.json";

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

bool is_weight_file(const std::string& name) {
  static const std::regex shard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return name == kSingleFile || name == kIndexFile || std::regex_match(name, shard);
}

// Where each HF tensor lives: file name (relative to the dir) and header entry.
struct Located {
  std::string file;
  io::TensorInfo info;
};

// Reads the headers of the dir's weight files, checking an index's weight_map against them.
std::map<std::string, Located> locate_tensors(const std::string& dir) {
  const std::string index_path = dir + "/" + kIndexFile;
  const std::string single_path = dir + "/" + kSingleFile;
  const bool has_index = fs::exists(index_path), has_single = fs::exists(single_path);
  if (has_index && has_single) {
    fail(dir, ": holds both ", kSingleFile, " and ", kIndexFile,
         "; remove the stale one so that the weights are unambiguous");
  }
  std::map<std::string, Located> out;
  if (has_single) {
    for (io::TensorInfo& info : io::read_safetensors_header(single_path)) {
      const std::string name = info.name;
      out[name] = {kSingleFile, std::move(info)};
    }
    return out;
  }
  if (!has_index) {
    fail(dir, ": no Hugging Face weights (neither ", kSingleFile, " nor ", kIndexFile, ")");
  }
  const Json index = parse_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    fail(index_path, ": needs an object \"weight_map\" of tensor name -> shard file");
  }
  std::map<std::string, std::vector<std::string>> by_file;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) fail(index_path, ": weight_map entry '", name, "' is not a file name");
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
      fail(index_path, ": weight_map entry '", name, "' names '", f,
           "', not a file in the same directory");
    }
    by_file[f].push_back(name);
  }
  for (const auto& [file, names] : by_file) {
    if (!fs::exists(dir + "/" + file)) {
      fail(index_path, ": weight_map names ", file, " (for tensor '", names.front(),
           "'), which does not exist");
    }
  }
  for (const auto& [file, names] : by_file) {
    const std::string path = dir + "/" + file;
    std::map<std::string, io::TensorInfo> header;
    for (io::TensorInfo& info : io::read_safetensors_header(path)) {
      const std::string name = info.name;
      header[name] = std::move(info);
    }
    for (const std::string& name : names) {
      auto it = header.find(name);
      if (it == header.end()) {
        fail(path, ": has no tensor '", name, "', which ", kIndexFile, " places in this file");
      }
      out[name] = {file, std::move(it->second)};
      header.erase(it);
    }
    if (!header.empty()) {
      std::vector<std::string> extra;
      for (const auto& [name, info] : header) extra.push_back(name);
      fail(path, ": tensor ", join_names(extra), " is missing from the weight_map of ", index_path);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> export_hf(const std::string& dir, const layers::Model::Config& model,
                                   const NestedTensor& params, const HfExportOptions& options) {
  const LlamaSpec spec = llama_spec(model);
  const Dtype dtype = options.dtype.value_or(spec.param_dtype);
  const std::string torch_dtype = hf_torch_dtype(dtype);
  if (options.max_shard_size == 0) fail("export_hf: max_shard_size must be positive");
  HfTensors tensors = to_hf_tensors(spec, params);
  for (auto& [name, t] : tensors) {
    if (t.dtype() == dtype) continue;
    Tensor cast = astype(t, dtype);
    if (dtype == float16) {
      // Finite weights beyond f16's range would silently become inf.
      Tensor overflow = any(logical_and(isfinite(t), logical_not(isfinite(cast))));
      if (overflow.item<bool>()) {
        fail("export_hf: tensor '", name, "' has values beyond float16's range (max |x| ",
             max(abs(astype(t, float32))).item<float>(), "); export as bfloat16 or float32");
      }
    }
    t = cast;
  }

  // Shards in state_dict order: a new shard starts when the next tensor would overflow this one.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t total = 0, current = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = uint64_t(tensors[i].second.size()) * size_of(dtype);
    if (current > 0 && current + bytes > options.max_shard_size) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
    total += bytes;
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create ", dir, ": ", ec.message());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && is_weight_file(name)) fs::remove(entry.path());
  }
  if (ec) fail("cannot list ", dir, ": ", ec.message());

  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  std::vector<std::string> files;
  Json weight_map = Json::object();
  std::map<std::string, std::string> file_of;
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string file = shards.size() == 1 ? kSingleFile : shard_name(k, shards.size());
    std::vector<std::pair<std::string, Tensor>> part;
    for (size_t i : shards[k]) {
      part.push_back(tensors[i]);
      file_of[tensors[i].first] = file;
    }
    io::save_safetensors(dir + "/" + file, part, metadata);
    files.push_back(file);
  }
  if (shards.size() > 1) {
    for (const auto& [name, file] : file_of) weight_map[name] = file;  // sorted, as HF writes
    Json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    write_text_atomically(dir + "/" + kIndexFile, index.dump(2) + "\n");
    files.push_back(kIndexFile);
  }
  write_text_atomically(
      dir + "/config.json",
      hf_config_json(spec, dtype, options.max_position_embeddings).dump(2) + "\n");
  return files;
}

NestedTensor import_hf(const std::string& dir, const layers::Model::Config& model) {
  const LlamaSpec spec = llama_spec(model);
  const std::string config_path = dir + "/config.json";
  if (!fs::exists(config_path)) fail(dir, ": no config.json (not a Hugging Face model dir)");
  check_hf_config(spec, parse_json_file(config_path), config_path);

  // Names, shapes and dtypes from the headers first: errors name the file, nothing is loaded.
  const std::map<std::string, Located> where = locate_tensors(dir);
  std::vector<std::string> unexpected;
  for (const auto& [name, loc] : where) {
    if (is_hf_derived_buffer(name)) continue;
    unexpected.push_back(name);
  }
  const auto shapes = hf_tensor_shapes(spec);
  std::vector<std::string> missing;
  for (const auto& [name, shape] : shapes) {
    auto it = where.find(name);
    if (it == where.end()) {
      missing.push_back(name);
      continue;
    }
    unexpected.erase(std::find(unexpected.begin(), unexpected.end(), name));
    const io::TensorInfo& info = it->second.info;
    const std::string file = dir + "/" + it->second.file;
    if (info.shape != shape) {
      fail(file, ": tensor '", name, "' has shape ", shape_str(info.shape), ", the model needs ",
           shape_str(shape));
    }
    if (info.dtype != float32 && info.dtype != bfloat16 && info.dtype != float16 &&
        info.dtype != float64) {
      fail(file, ": tensor '", name, "' has dtype ", io::safetensors_dtype_name(info.dtype),
           "; weights must be F32, BF16, F16 or F64");
    }
  }
  if (!missing.empty()) {
    fail(dir, ": missing tensor ", join_names(missing), " (LlamaForCausalLM with ", spec.num_layers,
         " layers", spec.tie_word_embeddings ? ", tied embeddings" : "", ")");
  }
  if (!unexpected.empty()) {
    const std::string& first = unexpected.front();
    fail(dir + "/" + where.at(first).file, ": unexpected tensor ", join_names(unexpected),
         " (not in LlamaForCausalLM with this config",
         first == "lm_head.weight" ? "; config.json ties the embeddings" : "", ")");
  }

  std::set<std::string> files;
  for (const auto& [name, loc] : where) files.insert(loc.file);
  HfTensors tensors;
  for (const std::string& file : files) {
    io::SafetensorsFile f = io::load_safetensors(dir + "/" + file);
    for (auto& [name, t] : f.tensors) {
      if (!is_hf_derived_buffer(name)) tensors.emplace_back(name, std::move(t));
    }
  }
  NestedTensor params = from_hf_tensors(spec, tensors);
  tensors.clear();
  eval(params);
  return params;
}

}  // namespace axlearn::infer
