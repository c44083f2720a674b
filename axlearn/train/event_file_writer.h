// TensorBoard event files: `EventFileWriter` appends Event protocol buffers (scalars, histograms,
// text) in TFRecord framing to <dir>/events.out.tfevents.<time>.<host>. The protobuf wire format
// is encoded by hand; the field numbers are those of tensorflow's event.proto and summary.proto.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace axlearn {

// One TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data), little-endian.
std::string tfrecord_frame(const std::string& data);

class EventFileWriter {
 public:
  // Creates `dir` if needed and opens a new event file there, writing the file_version record.
  explicit EventFileWriter(const std::string& dir);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  // A histogram of `values` over `num_buckets` equal-width buckets between their min and max.
  // Throws Error on a NaN or Inf value.
  void add_histogram(const std::string& tag, const std::vector<double>& values, int64_t step,
                     int num_buckets = 30);
  // A text summary (TensorBoard's text plugin: a scalar string tensor).
  void add_text(const std::string& tag, const std::string& text, int64_t step);
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace axlearn
