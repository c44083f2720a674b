#include "axlearn/train/event_file_writer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "axlearn/core/error.h"
#include "axlearn/train/crc32c.h"

namespace axlearn {
namespace fs = std::filesystem;

namespace {

// ---- protobuf wire format (proto3): tag = field << 3 | wire type ----
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void put_tag(std::string& out, uint32_t field, Wire wire) { put_varint(out, field << 3 | wire); }
template <typename T>
void put_le(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as the format is
  out.append(buf, sizeof(T));
}
void put_double(std::string& out, uint32_t field, double v) {
  put_tag(out, field, kFixed64);
  put_le(out, v);
}
void put_float(std::string& out, uint32_t field, float v) {
  put_tag(out, field, kFixed32);
  put_le(out, v);
}
void put_int(std::string& out, uint32_t field, int64_t v) {
  put_tag(out, field, kVarint);
  put_varint(out, uint64_t(v));
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_tag(out, field, kLen);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_packed_doubles(std::string& out, uint32_t field, const std::vector<double>& v) {
  std::string body;
  for (double d : v) put_le(body, d);
  put_bytes(out, field, body);
}

double wall_time() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Event { wall_time = 1; step = 2; file_version = 3; summary = 5 }.
std::string event_header(int64_t step) {
  std::string e;
  put_double(e, 1, wall_time());
  put_int(e, 2, step);
  return e;
}
// Summary { repeated Value value = 1 }, with one value.
std::string summary_event(int64_t step, const std::string& value) {
  std::string summary;
  put_bytes(summary, 1, value);
  std::string e = event_header(step);
  put_bytes(e, 5, summary);
  return e;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

}  // namespace

std::string tfrecord_frame(const std::string& data) {
  std::string out;
  std::string len;
  put_le(len, uint64_t(data.size()));
  out += len;
  put_le(out, mask_crc32c(crc32c(len)));
  out += data;
  put_le(out, mask_crc32c(crc32c(data)));
  return out;
}

EventFileWriter::EventFileWriter(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("EventFileWriter: cannot create ", dir, ": ", ec.message());
  const std::string base =
      "events.out.tfevents." + std::to_string(int64_t(wall_time())) + "." + host_name();
  fs::path p = fs::path(dir) / base;
  // Two writers opened in the same second must not share (and clobber) a file.
  for (int i = 1; fs::exists(p, ec); ++i) {
    p = fs::path(dir) / (base + "." + std::to_string(::getpid()) + "." + std::to_string(i));
  }
  path_ = p.string();
  out_.open(path_, std::ios::binary | std::ios::out | std::ios::trunc);
  if (!out_) fail("EventFileWriter: cannot create ", path_, ": ", std::strerror(errno));
  std::string e = event_header(0);
  put_bytes(e, 3, "brain.Event:2");
  write_event(e);
  flush();
}

EventFileWriter::~EventFileWriter() {
  if (out_.is_open()) out_.flush();
}

void EventFileWriter::write_event(const std::string& event) {
  out_ << tfrecord_frame(event);
  if (!out_) fail("EventFileWriter: cannot write ", path_);
}

void EventFileWriter::flush() {
  out_.flush();
  if (!out_) fail("EventFileWriter: cannot flush ", path_);
}

void EventFileWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  // Value { tag = 1; simple_value = 2 (float) }
  std::string v;
  put_bytes(v, 1, tag);
  put_float(v, 2, float(value));
  write_event(summary_event(step, v));
}

void EventFileWriter::add_histogram(const std::string& tag, const std::vector<double>& values,
                                  int64_t step, int num_buckets) {
  if (num_buckets < 1) fail("EventFileWriter::add_histogram(", tag, "): num_buckets < 1");
  double lo = 0, hi = 0, sum = 0, sum_sq = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double x = values[i];
    if (!std::isfinite(x)) {
      fail("EventFileWriter::add_histogram(", tag, "): value ", i, " is not finite (", x, ")");
    }
    lo = i ? std::min(lo, x) : x;
    hi = i ? std::max(hi, x) : x;
    sum += x;
    sum_sq += x * x;
  }
  // Bucket i counts [lo + i * width, lo + (i + 1) * width), the last one max too; its limit is
  // its right edge. All-equal values make one bucket.
  std::vector<double> limits, counts;
  if (!values.empty()) {
    const int n = hi > lo ? num_buckets : 1;
    const double width = (hi - lo) / n;
    counts.assign(size_t(n), 0.0);
    for (int i = 1; i <= n; ++i) limits.push_back(i == n ? hi : lo + width * i);
    for (double x : values) {
      int b = width > 0 ? int((x - lo) / width) : 0;
      counts[size_t(std::clamp(b, 0, n - 1))] += 1;
    }
  }
  // HistogramProto { min 1; max 2; num 3; sum 4; sum_squares 5; bucket_limit 6; bucket 7 }
  std::string h;
  put_double(h, 1, lo);
  put_double(h, 2, hi);
  put_double(h, 3, double(values.size()));
  put_double(h, 4, sum);
  put_double(h, 5, sum_sq);
  put_packed_doubles(h, 6, limits);
  put_packed_doubles(h, 7, counts);
  // Value { tag = 1; histo = 5 }
  std::string v;
  put_bytes(v, 1, tag);
  put_bytes(v, 5, h);
  write_event(summary_event(step, v));
}

void EventFileWriter::add_text(const std::string& tag, const std::string& text, int64_t step) {
  // SummaryMetadata { plugin_data = 1 : PluginData { plugin_name = 1 } }
  std::string plugin, metadata;
  put_bytes(plugin, 1, "text");
  put_bytes(metadata, 1, plugin);
  // TensorProto { dtype = 1 (DT_STRING = 7); tensor_shape = 2 (scalar: empty); string_val = 8 }
  std::string tensor;
  put_int(tensor, 1, 7);
  put_bytes(tensor, 2, "");
  put_bytes(tensor, 8, text);
  // Value { tag = 1; tensor = 8; metadata = 9 }
  std::string v;
  put_bytes(v, 1, tag);
  put_bytes(v, 9, metadata);
  put_bytes(v, 8, tensor);
  write_event(summary_event(step, v));
}

}  // namespace axlearn
