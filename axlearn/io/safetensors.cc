#include "axlearn/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "axlearn/core/transforms.h"

namespace axlearn::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace {

using Json = nlohmann::json;

constexpr struct {
  Dtype dtype;
  const char* name;
} kDtypeNames[] = {{bool_, "BOOL"},    {uint8, "U8"},    {uint32, "U32"},
                   {int32, "I32"},     {int64, "I64"},   {float16, "F16"},
                   {bfloat16, "BF16"}, {float32, "F32"}, {float64, "F64"}};

std::string prefix(const std::string& path) { return "safetensors file '" + path + "': "; }

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error a deferred write may surface at close.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Reads exactly n bytes at `offset`; fails (naming the offset) when the file ends first.
void read_at(int fd, const std::string& path, void* dst, uint64_t n, uint64_t offset) {
  char* p = static_cast<char*>(dst);
  uint64_t done = 0;
  while (done < n) {
    const size_t chunk = size_t(std::min<uint64_t>(n - done, uint64_t(1) << 30));
    const ssize_t r = ::pread(fd, p + done, chunk, off_t(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      fail(prefix(path), "read of ", n, " bytes at offset ", offset,
           " failed: ", std::strerror(errno));
    if (r == 0) {
      fail(prefix(path), "file truncated: expected ", n, " bytes at offset ", offset, ", found ",
           done);
    }
    done += uint64_t(r);
  }
}

void write_all(int fd, const std::string& path, const void* src, size_t n) {
  const char* p = static_cast<const char*>(src);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail(prefix(path), "write failed: ", std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;  // name order
  uint64_t data_start = 0;          // file offset of the data buffer
  uint64_t buffer_size = 0;
};

// Parses JSON, rejecting duplicate keys (which nlohmann would silently collapse) and nesting
// deeper than a safetensors header has (object > entry > shape array).
Json parse_json(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> keys;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= 3)
          fail(prefix(path), "header JSON is nested deeper than a safetensors header");
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!keys.back().insert(k).second) {
          fail(prefix(path), "duplicate key '", k, "' in the header",
               depth == 1 ? " (a tensor name given twice)" : "");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text, callback);
  } catch (const Json::exception& e) {
    fail(prefix(path), "header is not valid JSON: ", e.what());
  }
}

uint64_t json_u64(const std::string& path, const std::string& what, const Json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) fail(prefix(path), what, " is negative (", v.dump(), ")");
  fail(prefix(path), what, " must be a non-negative integer, got ", v.dump());
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const Json& entry) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object())
    fail(prefix(path), where, ": entry must be an object, got ", entry.dump());
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(prefix(path), where, ": unknown field '", key, "'");
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) fail(prefix(path), where, ": missing field '", key, "'");
  }
  TensorInfo info;
  info.name = name;
  const Json& dt = entry["dtype"];
  if (!dt.is_string()) fail(prefix(path), where, ": dtype must be a string, got ", dt.dump());
  try {
    info.dtype = dtype_from_safetensors_name(dt.get<std::string>());
  } catch (const Error& e) {
    fail(prefix(path), where, ": ", e.what());
  }

  const Json& shape = entry["shape"];
  if (!shape.is_array()) fail(prefix(path), where, ": shape must be an array, got ", shape.dump());
  uint64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const uint64_t d = json_u64(path, where + ": shape[" + std::to_string(i) + "]", shape[i]);
    if (d > uint64_t(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(count, d, &count))
      fail(prefix(path), where, ": shape ", shape.dump(), " overflows the element count");
    info.shape.push_back(int64_t(d));
  }
  uint64_t nbytes = 0;
  if (count > uint64_t(std::numeric_limits<int64_t>::max()) ||
      __builtin_mul_overflow(count, uint64_t(size_of(info.dtype)), &nbytes)) {
    fail(prefix(path), where, ": shape ", shape.dump(), " overflows the byte size");
  }

  const Json& off = entry["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    fail(prefix(path), where, ": data_offsets must be [begin, end], got ", off.dump());
  info.begin = json_u64(path, where + ": data_offsets[0]", off[0]);
  info.end = json_u64(path, where + ": data_offsets[1]", off[1]);
  if (info.begin > info.end) {
    fail(prefix(path), where, ": data_offsets [", info.begin, ", ", info.end, "] begin after end");
  }
  if (info.end - info.begin != nbytes) {
    fail(prefix(path), where, ": data_offsets [", info.begin, ", ", info.end, "] hold ",
         info.end - info.begin, " bytes but ", safetensors_dtype_name(info.dtype), " shape ",
         shape.dump(), " needs ", nbytes);
  }
  return info;
}

// Every byte of the buffer must belong to exactly one tensor.
void check_coverage(const std::string& path, const Header& h) {
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : h.tensors) {
    if (t.end > h.buffer_size) {
      fail(prefix(path), "tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
           "] extend past the end of the data buffer (", h.buffer_size, " bytes from file offset ",
           h.data_start, "; file truncated?)");
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin > cursor) {
      fail(prefix(path), "gap in the data buffer: bytes [", cursor, ", ", t->begin,
           ") belong to no tensor (before tensor '", t->name, "')");
    }
    if (t->begin < cursor) {
      fail(prefix(path), "tensor '", t->name, "': data_offsets [", t->begin, ", ", t->end,
           "] overlap tensor '", prev->name, "' [", prev->begin, ", ", prev->end, "]");
    }
    cursor = t->end;
    prev = t;
  }
  if (cursor != h.buffer_size) {
    fail(prefix(path), "gap in the data buffer: bytes [", cursor, ", ", h.buffer_size,
         ") after the last tensor belong to no tensor");
  }
}

Header read_header(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(prefix(path), "stat failed: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(prefix(path), "not a regular file");
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    fail(prefix(path), "file truncated: ", file_size,
         " bytes, shorter than the 8-byte header length");
  }
  unsigned char len_bytes[8];
  read_at(fd, path, len_bytes, 8, 0);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxSafetensorsHeaderBytes) {
    fail(prefix(path), "header length ", n, " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
         " bytes");
  }
  if (n > file_size - 8) {
    fail(prefix(path), "header length ", n, " is larger than the ", file_size - 8,
         " bytes after the length field (file truncated?)");
  }
  std::string text(size_t(n), '\0');
  read_at(fd, path, text.data(), n, 8);
  // JSON has no raw NUL, and nlohmann would take one as the end of the input.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    fail(prefix(path), "header is not valid JSON: NUL byte at file offset ", 8 + nul);
  }
  const Json j = parse_json(path, text);
  if (!j.is_object()) fail(prefix(path), "header must be a JSON object, got ", j.type_name());

  Header h;
  h.data_start = 8 + n;
  h.buffer_size = file_size - h.data_start;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(prefix(path), "__metadata__ must be an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          fail(prefix(path), "__metadata__ value of '", mk, "' must be a string, got ", mv.dump());
        }
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(path, key, value));
  }
  check_coverage(path, h);
  return h;
}

Tensor read_tensor(int fd, const std::string& path, const Header& h, const TensorInfo& t) {
  Array a = Array::empty(t.shape, t.dtype);
  read_at(fd, path, a.raw(), t.end - t.begin, h.data_start + t.begin);
  if (t.dtype == bool_) {
    // Any byte but 0 or 1 read as a C++ bool is undefined behaviour.
    const auto* p = static_cast<const unsigned char*>(a.raw());
    for (uint64_t i = 0; i < t.end - t.begin; ++i) {
      if (p[i] > 1) {
        fail(prefix(path), "tensor '", t.name, "': BOOL byte ", unsigned(p[i]), " at offset ",
             h.data_start + t.begin + i, " is neither 0 nor 1");
      }
    }
  }
  return Tensor(std::move(a));
}

Fd open_for_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(prefix(path), "cannot open: ", std::strerror(errno));
  return Fd(fd);
}

void fsync_parent_dir(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // the rename is done; a directory we cannot open cannot be synced
  ::fsync(fd);
  ::close(fd);
}

std::string temp_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

}  // namespace

const char* safetensors_dtype_name(Dtype dtype) {
  for (const auto& d : kDtypeNames) {
    if (d.dtype == dtype) return d.name;
  }
  fail("safetensors: no dtype name for ", dtype);
}

Dtype dtype_from_safetensors_name(const std::string& name) {
  for (const auto& d : kDtypeNames) {
    if (name == d.name) return d.dtype;
  }
  fail("unsupported dtype '", name, "' (supported: BOOL, U8, U32, I32, I64, F16, BF16, F32, F64)");
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });
  for (size_t i = 0; i < order.size(); ++i) {
    const std::string& name = tensors[order[i]].first;
    if (name.empty()) fail(prefix(path), "cannot save a tensor with an empty name");
    if (name == "__metadata__") fail(prefix(path), "'__metadata__' is reserved, not a tensor name");
    if (i > 0 && name == tensors[order[i - 1]].first)
      fail(prefix(path), "tensor name '", name, "' given twice");
    if (!tensors[order[i]].second.defined()) fail(prefix(path), "tensor '", name, "' is undefined");
  }
  std::vector<Tensor> values;
  for (const auto& [name, t] : tensors) values.push_back(t);
  eval(values);

  Json header = Json::object();
  std::vector<Array> arrays;
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    arrays.push_back(contiguous(t.array()));
    const uint64_t nbytes = arrays.back().nbytes();
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const Json::exception& e) {
    fail(prefix(path), "tensor names and metadata must be valid UTF-8: ", e.what());
  }
  // The data buffer starts 8-byte aligned, so a reader may map it and view it in place.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = (uint64_t(text.size()) >> (8 * i)) & 0xff;

  const std::string tmp = temp_path_for(path);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
  if (fd.get() < 0) fail(prefix(path), "cannot create '", tmp, "': ", std::strerror(errno));
  try {
    write_all(fd.get(), path, len_bytes, 8);
    write_all(fd.get(), path, text.data(), text.size());
    for (const Array& a : arrays) write_all(fd.get(), path, a.raw(), a.nbytes());
    if (::fsync(fd.get()) != 0) fail(prefix(path), "fsync failed: ", std::strerror(errno));
    if (fd.close() != 0) fail(prefix(path), "close failed: ", std::strerror(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(prefix(path), "rename from '", tmp, "' failed: ", std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_parent_dir(path);
}

std::vector<TensorInfo> read_safetensors_header(const std::string& path) {
  Fd fd = open_for_read(path);
  return read_header(fd.get(), path).tensors;
}

SafetensorsFile load_safetensors(const std::string& path) {
  Fd fd = open_for_read(path);
  Header h = read_header(fd.get(), path);
  SafetensorsFile out;
  out.metadata = std::move(h.metadata);
  for (const TensorInfo& t : h.tensors)
    out.tensors.emplace_back(t.name, read_tensor(fd.get(), path, h, t));
  return out;
}

Tensor load_safetensors_tensor(const std::string& path, const std::string& name) {
  Fd fd = open_for_read(path);
  Header h = read_header(fd.get(), path);
  for (const TensorInfo& t : h.tensors) {
    if (t.name == name) return read_tensor(fd.get(), path, h, t);
  }
  fail(prefix(path), "no tensor named '", name, "' (", h.tensors.size(), " tensors in the file)");
}

}  // namespace axlearn::io
