#include "axlearn/train/checkpointer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"
#include "axlearn/dist/collectives.h"
#include "axlearn/dist/sharding.h"
#include "axlearn/train/crc32c.h"

namespace axlearn {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kIndexName = "index.json";
constexpr const char* kFormat = "axlearn-checkpoint-v1";

std::string errno_str() { return std::strerror(errno); }

// A file descriptor closed on scope exit, so every error path releases it.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("checkpoint: cannot write ", path, ": ", errno_str());
    }
    p += w;
    n -= size_t(w);
  }
}

// Writes and fsyncs a whole file.
void write_file_synced(const std::string& path, const void* data, size_t n) {
  Fd f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) fail("checkpoint: cannot create ", path, ": ", errno_str());
  write_all(f.fd, static_cast<const char*>(data), n, path);
  if (::fsync(f.fd) != 0) fail("checkpoint: fsync of ", path, " failed: ", errno_str());
}

void fsync_dir(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (f.fd < 0) fail("checkpoint: cannot open folder ", path, ": ", errno_str());
  // Some filesystems refuse fsync on folders (EINVAL); the rename is still ordered after data.
  if (::fsync(f.fd) != 0 && errno != EINVAL) {
    fail("checkpoint: fsync of folder ", path, " failed: ", errno_str());
  }
}

std::string read_file(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail("checkpoint: cannot open ", path, ": ", errno_str());
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(f.fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      fail("checkpoint: cannot read ", path, ": ", errno_str());
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  return out;
}

// Parses "step_%08d"; nullopt for any other name (temp files, stray folders).
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.size() < 13 || name.rfind("step_", 0) != 0) return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::string checkpoints_root(const std::string& dir) {
  return (fs::path(dir) / "checkpoints").string();
}

// All step folders, committed or not: step -> committed.
std::map<int64_t, bool> scan_steps(const std::string& dir) {
  std::map<int64_t, bool> out;
  std::error_code ec;
  fs::path root = checkpoints_root(dir);
  if (!fs::is_directory(root, ec)) return out;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    auto step = parse_step_name(it->path().filename().string());
    if (!step) continue;
    out[*step] = fs::is_regular_file(it->path() / kIndexName, ec);
  }
  if (ec) fail("checkpoint: cannot list ", root.string(), ": ", ec.message());
  return out;
}

// Uncommits (removes the index first, durably) then deletes a step folder.
void remove_step_dir(const fs::path& step_dir) {
  std::error_code ec;
  fs::path index = step_dir / kIndexName;
  if (fs::exists(index, ec)) {
    if (!fs::remove(index, ec))
      fail("checkpoint: cannot remove ", index.string(), ": ", ec.message());
    fsync_dir(step_dir.string());
  }
  fs::remove_all(step_dir, ec);
  if (ec) fail("checkpoint: cannot remove ", step_dir.string(), ": ", ec.message());
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

json shape_json(const Shape& s) {
  json a = json::array();
  for (int64_t d : s) a.push_back(d);
  return a;
}

}  // namespace

std::string checkpoint_step_dir(const std::string& dir, int64_t step) {
  if (step < 0) fail("checkpoint: step must be non-negative, got ", step);
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return (fs::path(checkpoints_root(dir)) / name).string();
}

namespace {

json parse_extra(int64_t step, const std::string& extra_json) {
  try {
    return json::parse(extra_json);
  } catch (const json::exception& e) {
    fail("checkpoint: extra state for step ", step, " is not valid JSON: ", e.what());
  }
}

fs::path fresh_step_dir(const std::string& dir, int64_t step) {
  const fs::path step_dir = checkpoint_step_dir(dir, step);
  std::error_code ec;
  if (fs::exists(step_dir, ec)) remove_step_dir(step_dir);
  fs::create_directories(step_dir, ec);
  if (ec) fail("checkpoint: cannot create ", step_dir.string(), ": ", ec.message());
  return step_dir;
}

// Writes `a` (dense) as `fname` in the step folder and returns its index record.
json write_block(const fs::path& step_dir, const std::string& fname, const Array& a) {
  const size_t n = a.nbytes();
  write_file_synced((step_dir / fname).string(), n ? a.raw() : "", n);
  return {{"file", fname},
          {"shape", shape_json(a.shape)},
          {"nbytes", n},
          {"crc32c", hex32(crc32c(n ? a.raw() : "", n))}};
}

void commit_index(const std::string& dir, const fs::path& step_dir, const json& idx) {
  const std::string text = idx.dump(1);
  const fs::path tmp = step_dir / "index.json.tmp";
  write_file_synced(tmp.string(), text.data(), text.size());
  std::error_code ec;
  fs::rename(tmp, step_dir / kIndexName, ec);
  if (ec) fail("checkpoint: cannot commit ", (step_dir / kIndexName).string(), ": ", ec.message());
  fsync_dir(step_dir.string());
  fsync_dir(checkpoints_root(dir));
}

void check_leaf(const std::string& path, const Tensor& t) {
  if (!t.defined()) fail("checkpoint: tensor '", path, "' is undefined");
  if (t.is_placeholder()) fail("checkpoint: tensor '", path, "' is a placeholder with no data");
}

// Where this device's block of a tensor of `shape` sharded as `s` starts.
Shape block_start(const Sharding& s, const Shape& shape) {
  const Shape local = s.local_shape(shape);
  Shape start(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    start[d] = s.shard_index(int(d), current_device_rank()) * local[d];
  }
  return start;
}

// Of the devices holding the same block, the one at coordinate 0 of every axis the sharding
// does not use writes it.
bool writes_block(const Sharding& s) {
  const std::vector<int> used = s.used_axes();
  const std::vector<int64_t> c = s.mesh.coords(current_device_rank());
  for (int a = 0; a < s.mesh.ndim(); ++a) {
    if (c[size_t(a)] != 0 && std::find(used.begin(), used.end(), a) == used.end()) return false;
  }
  return true;
}

// Every device learns whether all succeeded; the first error seen here is rethrown, others
// report that another device failed.
void agree(const Mesh& mesh, const std::string& error, const char* what) {
  const double failed = dist::max_over_devices(mesh, error.empty() ? 0.0 : 1.0);
  if (!error.empty()) fail(error);
  if (failed != 0) fail("checkpoint: ", what, " failed on another device");
}

// Every device writes the blocks it is first to hold into the step folder and lists them in
// shards.<rank>.json; the first device then merges the lists into the index and commits it.
void save_sharded(const std::string& dir, int64_t step, const NestedTensor& tree, const json& extra,
                  const Mesh& mesh) {
  const int64_t rank = current_device_rank();
  const bool leader = rank == 0;
  const fs::path step_dir = checkpoint_step_dir(dir, step);
  std::string error;
  if (leader) {
    try {
      fresh_step_dir(dir, step);
    } catch (const Error& e) {
      error = e.what();
    }
  }
  agree(mesh, error, "preparing the step folder");

  json tensors = json::array();  // leader: the whole index, in tree order
  json mine = json::array();     // this device's blocks of sharded tensors
  int index = 0;
  try {
    for (auto [path, t] : tree.flatten_with_paths()) {
      check_leaf(path, t);
      char base[32];
      std::snprintf(base, sizeof(base), "t_%06d", index++);
      const Sharding* sh = t.is_sharded() ? t.sharding() : nullptr;
      if (sh && !sh->partial.empty()) {
        Sharding settled = *sh;
        settled.partial.clear();
        t = dist::with_sharding_constraint(t, settled);
        sh = t.sharding();
      }
      if (!sh || sh->is_replicated()) {
        if (!leader) continue;
        json rec = write_block(step_dir, std::string(base) + ".bin", contiguous(t.local().array()));
        rec["path"] = path;
        rec["dtype"] = dtype_name(t.dtype());
        tensors.push_back(rec);
        continue;
      }
      if (leader) {
        tensors.push_back(
            {{"path", path}, {"shape", shape_json(t.shape())}, {"dtype", dtype_name(t.dtype())}});
      }
      if (!writes_block(*sh)) continue;
      char fname[48];
      std::snprintf(fname, sizeof(fname), "%s.r%05lld.bin", base, static_cast<long long>(rank));
      json rec = write_block(step_dir, fname, contiguous(t.local().array()));
      rec["path"] = path;
      rec["start"] = shape_json(block_start(*sh, t.shape()));
      mine.push_back(rec);
    }
    char list[32];
    std::snprintf(list, sizeof(list), "shards.%05lld.json", static_cast<long long>(rank));
    const std::string text = mine.dump();
    write_file_synced((step_dir / list).string(), text.data(), text.size());
  } catch (const Error& e) {
    error = e.what();
  }
  agree(mesh, error, "writing tensor blocks");

  if (leader) {
    try {
      std::map<std::string, json> shards;
      for (int64_t r = 0; r < mesh.size(); ++r) {
        char list[32];
        std::snprintf(list, sizeof(list), "shards.%05lld.json", static_cast<long long>(r));
        const fs::path f = step_dir / list;
        for (json& rec : json::parse(read_file(f.string()))) {
          const std::string path = rec["path"].get<std::string>();
          rec.erase("path");
          shards[path].push_back(std::move(rec));
        }
        fs::remove(f);
      }
      for (json& entry : tensors) {
        auto it = shards.find(entry["path"].get<std::string>());
        if (it != shards.end()) entry["shards"] = std::move(it->second);
      }
      commit_index(dir, step_dir,
                   {{"format", kFormat}, {"step", step}, {"tensors", tensors}, {"extra", extra}});
    } catch (const std::exception& e) {
      error = std::string("checkpoint: committing step ") + std::to_string(step) + ": " + e.what();
    }
  }
  agree(mesh, error, "committing the index");
}

}  // namespace

void save_checkpoint(const std::string& dir, int64_t step, const NestedTensor& tree,
                     const std::string& extra_json) {
  const json extra = parse_extra(step, extra_json);
  for (const Tensor& t : tree.leaves()) {
    if (t.defined() && t.is_sharded() && t.sharding()->mesh.size() > 1) {
      save_sharded(dir, step, tree, extra, t.sharding()->mesh);
      return;
    }
  }
  const fs::path step_dir = fresh_step_dir(dir, step);
  json tensors = json::array();
  int index = 0;
  for (const auto& [path, t] : tree.flatten_with_paths()) {
    check_leaf(path, t);
    char fname[32];
    std::snprintf(fname, sizeof(fname), "t_%06d.bin", index++);
    json rec = write_block(step_dir, fname, contiguous(t.array()));
    rec["path"] = path;
    rec["dtype"] = dtype_name(t.dtype());
    tensors.push_back(rec);
  }
  commit_index(dir, step_dir,
               {{"format", kFormat}, {"step", step}, {"tensors", tensors}, {"extra", extra}});
}

std::vector<int64_t> committed_steps(const std::string& dir) {
  std::vector<int64_t> out;
  for (const auto& [step, committed] : scan_steps(dir)) {
    if (committed) out.push_back(step);
  }
  return out;
}

std::optional<int64_t> latest_step(const std::string& dir) {
  auto steps = committed_steps(dir);
  if (steps.empty()) return std::nullopt;
  return steps.back();
}

namespace {

// One file of a tensor: the whole tensor, or (sharded saves) one block starting at `start`.
struct IndexEntry {
  std::string path, file, crc;
  Shape shape;
  Dtype dtype = float32;
  size_t nbytes = 0;
  Shape start;                     // blocks only
  std::vector<IndexEntry> blocks;  // a tensor saved as blocks (then file is empty)
};

void check_file_name(const IndexEntry& e, const std::string& index_path) {
  // The file must stay inside the step folder.
  if (e.file.empty() || e.file.find('/') != std::string::npos || e.file == "." || e.file == "..") {
    fail("checkpoint: tensor '", e.path, "' in ", index_path, " names a bad file '", e.file, "'");
  }
}

IndexEntry parse_entry(const json& e, const std::string& index_path) {
  IndexEntry out;
  try {
    out.path = e.at("path").get<std::string>();
    out.shape = e.at("shape").get<Shape>();
    out.dtype = dtype_from_name(e.at("dtype").get<std::string>());
    if (e.contains("shards")) {
      for (const json& b : e.at("shards")) {
        IndexEntry blk;
        blk.path = out.path;
        blk.dtype = out.dtype;
        blk.file = b.at("file").get<std::string>();
        blk.shape = b.at("shape").get<Shape>();
        blk.start = b.at("start").get<Shape>();
        blk.nbytes = b.at("nbytes").get<size_t>();
        blk.crc = b.at("crc32c").get<std::string>();
        out.blocks.push_back(std::move(blk));
      }
    } else {
      out.file = e.at("file").get<std::string>();
      out.nbytes = e.at("nbytes").get<size_t>();
      out.crc = e.at("crc32c").get<std::string>();
    }
  } catch (const json::exception& ex) {
    fail("checkpoint: malformed entry in ", index_path, ": ", ex.what());
  } catch (const Error& ex) {
    fail("checkpoint: malformed entry in ", index_path, ": ", ex.what());
  }
  for (int64_t d : out.shape) {
    if (d < 0) fail("checkpoint: tensor '", out.path, "' in ", index_path, " has a negative dim");
  }
  if (out.blocks.empty()) {
    check_file_name(out, index_path);
    return out;
  }
  for (const IndexEntry& b : out.blocks) {
    check_file_name(b, index_path);
    bool inside = b.shape.size() == out.shape.size() && b.start.size() == out.shape.size();
    for (size_t d = 0; inside && d < out.shape.size(); ++d) {
      inside = b.start[d] >= 0 && b.shape[d] >= 0 && b.start[d] + b.shape[d] <= out.shape[d];
    }
    if (!inside) {
      fail("checkpoint: tensor '", out.path, "' in ", index_path, ": block ", b.file, " (start ",
           shape_str(b.start), ", shape ", shape_str(b.shape), ") lies outside ",
           shape_str(out.shape));
    }
  }
  return out;
}

// Copies the part of `src` (a dense block at src_start of some tensor) that falls inside `dst`
// (a dense block at dst_start); returns the number of elements copied.
int64_t copy_overlap(const Array& src, const Shape& src_start, Array& dst, const Shape& dst_start) {
  const size_t nd = dst.shape.size();
  Shape lo(nd), hi(nd);
  int64_t count = 1;
  for (size_t d = 0; d < nd; ++d) {
    lo[d] = std::max(src_start[d], dst_start[d]);
    hi[d] = std::min(src_start[d] + src.shape[d], dst_start[d] + dst.shape[d]);
    if (hi[d] <= lo[d]) return 0;
    count *= hi[d] - lo[d];
  }
  const size_t es = size_of(dst.dtype);
  const Strides ss = row_major_strides(src.shape), ds = row_major_strides(dst.shape);
  const size_t run = nd ? size_t(hi[nd - 1] - lo[nd - 1]) * es : es;
  Shape at = lo;  // current position (global coordinates); the last axis is one memcpy
  const char* sp = static_cast<const char*>(src.raw());
  char* dp = static_cast<char*>(dst.raw());
  while (true) {
    int64_t so = 0, doff = 0;
    for (size_t d = 0; d < nd; ++d) {
      so += (at[d] - src_start[d]) * ss[d];
      doff += (at[d] - dst_start[d]) * ds[d];
    }
    std::memcpy(dp + size_t(doff) * es, sp + size_t(so) * es, run);
    int d = int(nd) - 2;
    for (; d >= 0; --d) {
      if (++at[size_t(d)] < hi[size_t(d)]) break;
      at[size_t(d)] = lo[size_t(d)];
    }
    if (d < 0) break;
  }
  return count;
}

Tensor read_tensor(const IndexEntry& e, const fs::path& step_dir) {
  const std::string file = (step_dir / e.file).string();
  const size_t expect = size_t(num_elements(e.shape)) * size_of(e.dtype);
  if (e.nbytes != expect) {
    fail("checkpoint: tensor '", e.path, "' (", file, "): index says ", e.nbytes,
         " bytes but shape ", shape_str(e.shape), " of ", dtype_name(e.dtype), " needs ", expect);
  }
  Fd f;
  f.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail("checkpoint: tensor '", e.path, "': cannot open ", file, ": ", errno_str());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail("checkpoint: cannot stat ", file, ": ", errno_str());
  const size_t size = size_t(st.st_size);
  if (size < expect) {
    fail("checkpoint: tensor '", e.path, "' (", file, ") is truncated: ", size, " of ", expect,
         " bytes");
  }
  if (size > expect) {
    fail("checkpoint: tensor '", e.path, "' (", file, ") has ", size, " bytes, expected ", expect);
  }
  // Read straight into the tensor's storage: checkpoints can be as large as memory allows.
  Array a = Array::empty(e.shape, e.dtype);
  char* p = expect ? static_cast<char*>(a.raw()) : nullptr;
  for (size_t done = 0; done < expect;) {
    ssize_t r = ::read(f.fd, p + done, expect - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("checkpoint: cannot read ", file, ": ", errno_str());
    if (r == 0) fail("checkpoint: tensor '", e.path, "' (", file, ") is truncated while reading");
    done += size_t(r);
  }
  const std::string crc = hex32(crc32c(p ? p : "", expect));
  if (crc != e.crc) {
    fail("checkpoint: tensor '", e.path, "' (", file, ") fails its checksum: crc32c ", crc,
         ", index says ", e.crc);
  }
  if (e.dtype == Dtype::kBool) {
    // Only 0/1 are valid bool bytes; anything else would be undefined behaviour when read.
    for (size_t i = 0; i < expect; ++i) {
      if (static_cast<unsigned char>(p[i]) > 1)
        fail("checkpoint: tensor '", e.path, "' (", file, ") holds a bad bool byte");
    }
  }
  return Tensor(std::move(a));
}

// The region [start, start + shape) of the tensor `e`, assembled from its file or blocks.
Array read_region(const IndexEntry& e, const fs::path& step_dir, const Shape& start,
                  const Shape& shape) {
  Array out = Array::empty(shape, e.dtype);
  const std::vector<IndexEntry> whole = {e};
  const std::vector<IndexEntry>& parts = e.blocks.empty() ? whole : e.blocks;
  int64_t covered = 0;
  for (const IndexEntry& b : parts) {
    const Shape bstart = e.blocks.empty() ? Shape(shape.size(), 0) : b.start;
    bool overlaps = true;
    for (size_t d = 0; d < shape.size(); ++d) {
      overlaps = overlaps && bstart[d] < start[d] + shape[d] && start[d] < bstart[d] + b.shape[d];
    }
    if (!overlaps && num_elements(shape) > 0) continue;
    Array block = read_tensor(b, step_dir).array();
    covered += copy_overlap(block, bstart, out, start);
  }
  if (covered != num_elements(shape)) {
    fail("checkpoint: tensor '", e.path, "' in ", step_dir.string(), ": its blocks cover ", covered,
         " of the ", num_elements(shape), " elements this device needs");
  }
  return out;
}

// The restored leaf: the whole tensor, or this device's block when `like` is sharded.
Tensor read_leaf(const IndexEntry& e, const fs::path& step_dir, const Tensor& like) {
  if (e.blocks.empty() && !(like.defined() && like.is_sharded())) return read_tensor(e, step_dir);
  if (!like.defined() || !like.is_sharded()) {
    return Tensor(read_region(e, step_dir, Shape(e.shape.size(), 0), e.shape));
  }
  Sharding s = *like.sharding();
  s.partial.clear();
  const Shape local = s.local_shape(e.shape);
  Tensor block(read_region(e, step_dir, block_start(s, e.shape), local));
  return dist::from_local(block, e.shape, s);
}

}  // namespace

RestoredCheckpoint restore_checkpoint(const std::string& dir, int64_t step,
                                      const NestedTensor& like_tree) {
  const fs::path step_dir = checkpoint_step_dir(dir, step);
  const std::string index_path = (step_dir / kIndexName).string();
  std::error_code ec;
  if (!fs::is_regular_file(index_path, ec)) {
    fail("checkpoint: step ", step, " is not committed (no ", index_path, ")");
  }
  json idx;
  try {
    idx = json::parse(read_file(index_path));
  } catch (const json::exception& e) {
    fail("checkpoint: cannot parse ", index_path, ": ", e.what());
  }
  if (!idx.is_object() || idx.value("format", "") != kFormat || !idx.contains("tensors") ||
      !idx["tensors"].is_array()) {
    fail("checkpoint: ", index_path, " is not an ", kFormat, " index");
  }
  std::map<std::string, IndexEntry> entries;
  for (const json& e : idx["tensors"]) {
    IndexEntry entry = parse_entry(e, index_path);
    std::string p = entry.path;
    if (!entries.emplace(p, std::move(entry)).second) {
      fail("checkpoint: tensor '", p, "' appears twice in ", index_path);
    }
  }

  const auto like = like_tree.flatten_with_paths();
  std::vector<std::string> missing, unexpected;
  std::set<std::string> wanted;
  for (const auto& [path, t] : like) {
    wanted.insert(path);
    if (!entries.count(path)) missing.push_back(path);
  }
  for (const auto& [path, e] : entries) {
    if (!wanted.count(path)) unexpected.push_back(path);
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", '" : "'") + v[i] + "'";
    if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
    return s;
  };
  if (!missing.empty()) {
    fail("checkpoint: ", index_path, " lacks tensors ", join(missing));
  }
  if (!unexpected.empty()) {
    fail("checkpoint: ", index_path, " has tensors not in the model: ", join(unexpected));
  }

  std::vector<Tensor> leaves;
  leaves.reserve(like.size());
  for (const auto& [path, t] : like) {
    const IndexEntry& e = entries.at(path);
    const std::string file = (step_dir / e.file).string();
    if (t.defined() && t.shape() != e.shape) {
      fail("checkpoint: tensor '", path, "' (", file, ") has shape ", shape_str(e.shape),
           " but the model expects ", shape_str(t.shape()));
    }
    if (t.defined() && t.dtype() != e.dtype) {
      fail("checkpoint: tensor '", path, "' (", file, ") has dtype ", dtype_name(e.dtype),
           " but the model expects ", dtype_name(t.dtype()));
    }
    leaves.push_back(read_leaf(e, step_dir, t));
  }
  RestoredCheckpoint out;
  out.step = step;
  out.tree = like_tree.unflatten(leaves);
  out.extra_json = idx.contains("extra") ? idx["extra"].dump() : "null";
  return out;
}

std::vector<int64_t> garbage_collect_checkpoints(const std::string& dir, int keep_last_n,
                                                 int64_t keep_every_n_steps) {
  if (keep_last_n < 1) fail("checkpoint: keep_last_n must be at least 1, got ", keep_last_n);
  if (keep_every_n_steps < 0) {
    fail("checkpoint: keep_every_n_steps must be non-negative, got ", keep_every_n_steps);
  }
  const auto steps = scan_steps(dir);
  std::vector<int64_t> committed;
  for (const auto& [step, c] : steps) {
    if (c) committed.push_back(step);
  }
  std::vector<int64_t> removed;
  if (committed.empty()) return removed;
  const size_t first_kept =
      committed.size() > size_t(keep_last_n) ? committed.size() - size_t(keep_last_n) : 0;
  for (size_t i = 0; i < first_kept; ++i) {
    int64_t s = committed[i];
    if (keep_every_n_steps > 0 && s % keep_every_n_steps == 0) continue;
    remove_step_dir(checkpoint_step_dir(dir, s));
    removed.push_back(s);
  }
  for (const auto& [step, c] : steps) {
    if (!c && step < committed.back()) {
      remove_step_dir(checkpoint_step_dir(dir, step));
      removed.push_back(step);
    }
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

Checkpointer::Checkpointer(const Config& cfg)
    : Configurable(cfg),
      dir_(cfg.dir.get()),
      keep_last_n_(static_cast<int>(cfg.keep_last_n.get())),
      keep_every_n_steps_(cfg.keep_every_n_steps.get()) {
  if (dir_.empty()) fail("checkpointer.dir is empty");
  if (cfg.keep_last_n.get() < 1) {
    fail("checkpointer.keep_last_n must be at least 1, got ", cfg.keep_last_n.get());
  }
  if (keep_every_n_steps_ < 0) {
    fail("checkpointer.keep_every_n_steps must be non-negative, got ", keep_every_n_steps_);
  }
  if (cfg.save_policy.get()) {
    auto scope = InstantiationScope::child("save_policy");
    policy_ = cfg.save_policy.get()->instantiate();
  }
}

void Checkpointer::save(int64_t step, const NestedTensor& tree, const std::string& extra_json) {
  save_checkpoint(dir_, step, tree, extra_json);
  // With several devices the first one (which committed the step) collects garbage.
  if (current_device_rank() == 0) {
    garbage_collect_checkpoints(dir_, keep_last_n_, keep_every_n_steps_);
  }
}

std::optional<RestoredCheckpoint> Checkpointer::restore_latest(
    const NestedTensor& like_tree) const {
  auto step = latest_step();
  if (!step) return std::nullopt;
  return restore(*step, like_tree);
}

}  // namespace axlearn
