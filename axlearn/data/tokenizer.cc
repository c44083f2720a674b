#include "axlearn/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <filesystem>

#include "axlearn/core/error.h"

#ifndef AXLEARN_DEFAULT_DATA_DIR
#define AXLEARN_DEFAULT_DATA_DIR "data"
#endif

namespace axlearn::data {

namespace {
constexpr std::string_view kDataDirToken = "{data_dir}";
}  // namespace

std::string data_dir() {
  const char* env = std::getenv("AXLEARN_DATA_DIR");
  if (env && *env) return env;
  return AXLEARN_DEFAULT_DATA_DIR;
}

std::string expand_data_path(const std::string& path) {
  if (!path.starts_with(kDataDirToken)) return path;
  return data_dir() + path.substr(kDataDirToken.size());
}

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceTokenizer::SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path) { load(path); }
SentencePieceTokenizer::~SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept =
    default;

void SentencePieceTokenizer::load(const std::string& path) {
  const std::string full = expand_data_path(path);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(full, ec)) {
    const std::string hint = full != path ? " (from '" + path + "')" : "";
    fail("SentencePieceTokenizer: cannot load '", full, "'", hint,
         ": no such file (the built-in models are made by scripts/make_corpus; data_dir is '",
         data_dir(), "', set AXLEARN_DATA_DIR to change it)");
  }
  auto impl = std::make_unique<Impl>();
  const auto status = impl->sp.Load(full);
  if (!status.ok()) {
    fail("SentencePieceTokenizer: cannot load '", full, "': not a sentencepiece model (",
         status.ToString(), ")");
  }
  impl_ = std::move(impl);
  path_ = full;
}

bool SentencePieceTokenizer::loaded() const { return impl_ != nullptr; }

const SentencePieceTokenizer::Impl& SentencePieceTokenizer::impl(const char* op) const {
  if (!impl_) fail("SentencePieceTokenizer::", op, ": no model loaded (call load(path) first)");
  return *impl_;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = impl("encode").sp.Encode(text, &ids);
  if (!status.ok()) fail("SentencePieceTokenizer::encode (", path_, "): ", status.ToString());
  static_assert(sizeof(int) == sizeof(int32_t));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = impl("decode");
  const int n = m.sp.GetPieceSize();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= n) {
      fail("SentencePieceTokenizer::decode: id ", ids[i], " at index ", i,
           " is outside the vocabulary [0, ", n, ") of ", path_);
    }
  }
  std::string text;
  const auto status = m.sp.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) fail("SentencePieceTokenizer::decode (", path_, "): ", status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl("vocab_size").sp.GetPieceSize(); }
int32_t SentencePieceTokenizer::pad_id() const { return impl("pad_id").sp.pad_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return impl("eos_id").sp.eos_id(); }
int32_t SentencePieceTokenizer::bos_id() const { return impl("bos_id").sp.bos_id(); }
int32_t SentencePieceTokenizer::unk_id() const { return impl("unk_id").sp.unk_id(); }

std::string SentencePieceTokenizer::id_to_piece(int32_t id) const {
  const Impl& m = impl("id_to_piece");
  if (id < 0 || id >= m.sp.GetPieceSize()) {
    fail("SentencePieceTokenizer::id_to_piece: id ", id, " is outside the vocabulary [0, ",
         m.sp.GetPieceSize(), ") of ", path_);
  }
  return m.sp.IdToPiece(id);
}

}  // namespace axlearn::data
