// Sentencepiece tokenization for the text input pipeline, and where the built-in data lives:
// `data_dir()` (AXLEARN_DATA_DIR, else the build tree's data/ that scripts/make_corpus fills) and
// "{data_dir}" paths in configs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace axlearn::data {

// $AXLEARN_DATA_DIR when set and non-empty, else <build dir>/data (fixed at compile time).
std::string data_dir();

// `path` with a leading "{data_dir}" replaced by data_dir(); other paths are returned unchanged.
std::string expand_data_path(const std::string& path);

// A sentencepiece model (sentencepiece::SentencePieceProcessor behind a pointer, so including this
// header does not pull in sentencepiece). Ids are int32 as the model stores them; -1 means the
// model has no such special piece. Encoding and decoding are const and safe from several threads.
class SentencePieceTokenizer {
 public:
  SentencePieceTokenizer();  // empty: load() before use
  // Loads the model at `path` ("{data_dir}" expanded); throws Error naming the file.
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer();
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;

  // Replaces the model by the one at `path` ("{data_dir}" expanded); throws Error naming the file
  // when it is missing or not a sentencepiece model (the current model is then kept).
  void load(const std::string& path);
  bool loaded() const;
  // The expanded path of the loaded model ("" when none).
  const std::string& path() const { return path_; }

  // Text -> ids, without BOS / EOS (the packer adds EOS).
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text; control ids (pad, eos) decode to nothing. Throws Error naming an id outside
  // [0, vocab_size).
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const;
  int32_t pad_id() const;
  int32_t eos_id() const;
  int32_t bos_id() const;
  int32_t unk_id() const;
  // The piece's text, e.g. "▁the"; throws Error for an id outside [0, vocab_size).
  std::string id_to_piece(int32_t id) const;

 private:
  struct Impl;
  const Impl& impl(const char* op) const;  // throws Error when nothing is loaded
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace axlearn::data
