#include "axlearn/data/mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "axlearn/core/error.h"
#include "axlearn/core/ops.h"

namespace axlearn::data {
namespace {

constexpr uint8_t kIdxUnsignedByte = 0x08;

// A gzFile that also reads plain files (zlib passes them through) and counts bytes consumed, so
// errors can say where in the (decompressed) stream they happened.
class IdxReader {
 public:
  explicit IdxReader(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) fail("read_idx: cannot open ", path_, ": ", std::strerror(errno));
    gzbuffer(file_, 1 << 17);
  }
  ~IdxReader() { gzclose(file_); }
  IdxReader(const IdxReader&) = delete;
  IdxReader& operator=(const IdxReader&) = delete;

  // Reads up to n bytes; returns how many were read (< n only at the end of the stream).
  size_t read_some(void* dst, size_t n) {
    size_t done = 0;
    auto* out = static_cast<char*>(dst);
    while (done < n) {
      // gzread takes an unsigned int length.
      unsigned chunk = unsigned(std::min<size_t>(n - done, 1u << 30));
      int got = gzread(file_, out + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        fail("read_idx: ", path_, ": ", where(done), ": ", compression(), " error: ", msg);
      }
      if (got == 0) break;
      done += size_t(got);
    }
    offset_ += done;
    return done;
  }

  // Reads exactly n bytes; `what` names them in the error for a short read.
  void read_exact(void* dst, size_t n, const std::string& what) {
    uint64_t start = offset_;
    size_t got = read_some(dst, n);
    if (got != n) {
      fail("read_idx: ", path_, ": truncated at byte offset ", start + got, stream_suffix(),
           ": expected ", n, " bytes of ", what, " starting at offset ", start, ", found ", got);
    }
  }

  uint32_t read_be32(const char* what) {
    uint8_t b[4];
    read_exact(b, 4, what);
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
  }

  bool at_end() {
    char c;
    size_t got = read_some(&c, 1);
    if (got) --offset_;  // report trailing data at its first byte
    return got == 0;
  }

  uint64_t offset() const { return offset_; }
  const std::string& path() const { return path_; }
  // gzdirect is reliable once something has been read.
  const char* stream_suffix() const { return gzdirect(file_) ? "" : " (decompressed)"; }

 private:
  std::string where(size_t extra) const {
    return detail::str_cat("byte offset ", offset_ + extra, stream_suffix());
  }
  const char* compression() const { return gzdirect(file_) ? "read" : "gzip"; }

  std::string path_;
  gzFile file_ = nullptr;
  uint64_t offset_ = 0;
};

std::string find_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  for (const std::string& name : {stem + ".gz", stem}) {
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  fail("load_mnist_dir: ", dir, " has no ", stem, ".gz (nor ", stem,
       "); on Debian, `apt-get install dataset-fashion-mnist` provides ", kFashionMnistDir);
}

}  // namespace

IdxArray read_idx(const std::string& path, int expected_ndim) {
  IdxReader in(path);
  uint8_t magic[4];
  in.read_exact(magic, 4, "IDX magic number");
  if (magic[0] != 0 || magic[1] != 0) {
    fail("read_idx: ", path, ": bad magic number at byte offset 0", in.stream_suffix(),
         ": the first two bytes must be 0, found 0x", std::hex, int(magic[0]), " 0x", int(magic[1]),
         std::dec, " (not an IDX file)");
  }
  if (magic[2] != kIdxUnsignedByte) {
    fail("read_idx: ", path, ": unsupported element type 0x", std::hex, int(magic[2]), std::dec,
         " at byte offset 2; only 0x08 (unsigned byte) is supported");
  }
  int ndim = magic[3];
  if (ndim == 0) fail("read_idx: ", path, ": IDX header at byte offset 3 declares 0 dimensions");
  if (expected_ndim >= 0 && ndim != expected_ndim) {
    fail("read_idx: ", path, ": byte offset 3 declares ", ndim, " dimensions, expected ",
         expected_ndim);
  }

  IdxArray out;
  uint64_t total = 1;
  for (int i = 0; i < ndim; ++i) {
    uint32_t d = in.read_be32("IDX dimension");
    out.dims.push_back(int64_t(d));
    // Refuse sizes no real file has before trying to allocate them (a corrupt header).
    constexpr uint64_t kMaxElements = uint64_t(1) << 40;
    if (d != 0 && total > kMaxElements / d) {
      fail("read_idx: ", path, ": dimensions ", shape_str(out.dims), " in the header (up to byte ",
           "offset ", in.offset(), ") describe more than 2^40 elements");
    }
    total *= d;
  }
  out.data.resize(size_t(total));
  in.read_exact(out.data.data(), out.data.size(), "data for shape " + shape_str(out.dims));
  if (!in.at_end()) {
    fail("read_idx: ", path, ": unexpected data after the ", total, " elements of shape ",
         shape_str(out.dims), ", at byte offset ", in.offset(), in.stream_suffix());
  }
  return out;
}

MnistSplit load_mnist_split(const std::string& images_path, const std::string& labels_path,
                            int num_classes) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    fail("load_mnist_split: ", images_path, " has ", images.dims[0], " images but ", labels_path,
         " has ", labels.dims[0], " labels");
  }
  // Header: 4 magic bytes + one u32 per dimension; label i is at byte 8 + i.
  constexpr int64_t kLabelHeaderBytes = 8;
  std::vector<int32_t> label_values(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= num_classes) {
      fail("load_mnist_split: ", labels_path, ": label ", int(labels.data[i]), " at byte offset ",
           kLabelHeaderBytes + int64_t(i), " is not below ", num_classes);
    }
    label_values[i] = labels.data[i];
  }
  const int64_t n = images.dims[0], pixels = images.dims[1] * images.dims[2];
  std::vector<float> pixel_values(images.data.size());
  for (size_t i = 0; i < images.data.size(); ++i) pixel_values[i] = images.data[i] / 255.0f;

  MnistSplit split;
  split.images = from_buffer(pixel_values.data(), {n, pixels}, float32);
  split.labels = from_buffer(label_values.data(), {n}, int32);
  return split;
}

MnistDataset load_mnist_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    fail("load_mnist_dir: data directory ", dir, " does not exist; on Debian, ",
         "`apt-get install dataset-fashion-mnist` provides ", kFashionMnistDir);
  }
  MnistDataset ds;
  ds.train = load_mnist_split(find_file(dir, "train-images-idx3-ubyte"),
                              find_file(dir, "train-labels-idx1-ubyte"));
  ds.test = load_mnist_split(find_file(dir, "t10k-images-idx3-ubyte"),
                             find_file(dir, "t10k-labels-idx1-ubyte"));
  return ds;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

}  // namespace axlearn::data
