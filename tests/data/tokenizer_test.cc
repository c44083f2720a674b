// SentencePieceTokenizer against a small model trained here with sentencepiece's own trainer:
// round trips, special ids, errors naming the file, and "{data_dir}" expansion.
#include "axlearn/data/tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "axlearn/core/error.h"

namespace axlearn::data {
namespace {

namespace fs = std::filesystem;

// Sets an environment variable for the scope of a test and puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string expect_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected axlearn::Error";
  return "";
}

// A small unigram model trained here, with the ids the built-in model uses: pad 0, eos 1, unk 2,
// no bos.
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("axlearn_tokenizer_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::ofstream text(dir_ / "text.txt");
    const char* lines[] = {"the quick brown fox jumps over the lazy dog",
                           "a stitch in time saves nine", "all that glitters is not gold",
                           "the early bird catches the worm", "brown dogs and quick foxes"};
    for (int rep = 0; rep < 20; ++rep) {
      for (const char* l : lines) text << l << "\n";
    }
    text.close();
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + (dir_ / "text.txt").string() + " --model_prefix=" + (dir_ / "m").string() +
        " --vocab_size=60 --hard_vocab_limit=false --model_type=unigram --pad_id=0 --eos_id=1"
        " --unk_id=2 --bos_id=-1 --num_threads=1 --minloglevel=2");
    ASSERT_TRUE(status.ok()) << status.ToString();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string model() { return (dir_ / "m.model").string(); }
  static fs::path dir_;
};
fs::path TokenizerTest::dir_;

TEST_F(TokenizerTest, EncodeDecodeRoundTripsAndIdsAreInVocab) {
  SentencePieceTokenizer tok(model());
  EXPECT_TRUE(tok.loaded());
  EXPECT_EQ(tok.path(), model());
  for (const std::string text :
       {"the quick brown fox", "gold is not all that glitters", "a lazy bird saves the worm"}) {
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_FALSE(ids.empty());
    for (int32_t id : ids) {
      EXPECT_GE(id, 3) << "text never encodes to pad / eos / unk here";
      EXPECT_LT(id, tok.vocab_size());
    }
    EXPECT_EQ(tok.decode(ids), text);
    // The pieces spell the text, with "▁" for the spaces (and the dummy prefix).
    std::string spelled;
    for (int32_t id : ids) spelled += tok.id_to_piece(id);
    std::string expected = "\xe2\x96\x81" + text;
    for (size_t p = expected.find(' '); p != std::string::npos; p = expected.find(' ', p)) {
      expected.replace(p, 1, "\xe2\x96\x81");
    }
    EXPECT_EQ(spelled, expected);
  }
}

TEST_F(TokenizerTest, SpecialIdsAreThoseTheModelWasTrainedWith) {
  SentencePieceTokenizer tok(model());
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.unk_id(), 2);
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.id_to_piece(0), "<pad>");
  EXPECT_EQ(tok.id_to_piece(1), "</s>");
  EXPECT_EQ(tok.id_to_piece(2), "<unk>");
  // Control pieces decode to nothing; a character never seen is <unk>.
  const std::vector<int32_t> fox = tok.encode("fox");
  std::vector<int32_t> with_eos = fox;
  with_eos.push_back(tok.eos_id());
  with_eos.push_back(tok.pad_id());
  EXPECT_EQ(tok.decode(with_eos), "fox");
  const std::vector<int32_t> unk = tok.encode("\xce\xa9");  // Greek capital omega
  EXPECT_NE(std::find(unk.begin(), unk.end(), tok.unk_id()), unk.end());
}

TEST_F(TokenizerTest, MoveKeepsTheModel) {
  SentencePieceTokenizer a(model());
  const auto ids = a.encode("quick brown");
  SentencePieceTokenizer b = std::move(a);
  EXPECT_EQ(b.encode("quick brown"), ids);
}

TEST_F(TokenizerTest, MissingFileErrorNamesThePath) {
  const std::string path = (dir_ / "no_such.model").string();
  const std::string msg = expect_error([&] { SentencePieceTokenizer tok(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST_F(TokenizerTest, NonModelFileErrorNamesThePathAndKeepsTheLoadedModel) {
  SentencePieceTokenizer tok(model());
  const std::string path = (dir_ / "text.txt").string();
  const std::string msg = expect_error([&] { tok.load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a sentencepiece model"), std::string::npos) << msg;
  EXPECT_EQ(tok.path(), model());
  EXPECT_EQ(tok.decode(tok.encode("the lazy dog")), "the lazy dog");
}

TEST_F(TokenizerTest, OutOfRangeIdsAreErrors) {
  SentencePieceTokenizer tok(model());
  const int64_t n = tok.vocab_size();
  const std::string msg = expect_error([&] { tok.decode({3, int32_t(n)}); });
  EXPECT_NE(msg.find("id " + std::to_string(n) + " at index 1"), std::string::npos) << msg;
  EXPECT_NE(expect_error([&] { tok.decode({-1}); }).find("id -1"), std::string::npos);
  EXPECT_NE(expect_error([&] { tok.id_to_piece(int32_t(n)); }).find("outside the vocabulary"),
            std::string::npos);
}

TEST_F(TokenizerTest, UnloadedTokenizerIsAnError) {
  SentencePieceTokenizer tok;
  EXPECT_FALSE(tok.loaded());
  EXPECT_NE(expect_error([&] { tok.encode("x"); }).find("no model loaded"), std::string::npos);
}

TEST_F(TokenizerTest, DataDirPlaceholderIsExpandedFromTheEnvironment) {
  {
    ScopedEnv env("AXLEARN_DATA_DIR", dir_.c_str());
    EXPECT_EQ(data_dir(), dir_.string());
    EXPECT_EQ(expand_data_path("{data_dir}/m.model"), model());
    SentencePieceTokenizer tok("{data_dir}/m.model");
    EXPECT_EQ(tok.path(), model());
  }
  // Only a leading placeholder is replaced.
  EXPECT_EQ(expand_data_path("/x/{data_dir}/y"), "/x/{data_dir}/y");
  EXPECT_EQ(expand_data_path("relative/path"), "relative/path");
  // Unset (or empty): the build tree's data directory.
  ScopedEnv env("AXLEARN_DATA_DIR", "");
  EXPECT_TRUE(data_dir().ends_with("/data")) << data_dir();
  EXPECT_EQ(expand_data_path("{data_dir}/kjv/spm.model"), data_dir() + "/kjv/spm.model");
}

// The model scripts/make_corpus builds (skipped when it has not been run for this build dir).
TEST(BuiltInTokenizerTest, KjvModelHasTheDecoderSpecialIds) {
  const std::string path = expand_data_path("{data_dir}/kjv/spm.model");
  if (!fs::exists(path)) GTEST_SKIP() << path << " not built (run scripts/make_corpus)";
  SentencePieceTokenizer tok(path);
  EXPECT_EQ(tok.vocab_size(), 4096);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.unk_id(), 2);
  EXPECT_EQ(tok.bos_id(), -1);
  const std::string verse = "In the beginning God created the heaven and the earth.";
  const auto ids = tok.encode(verse);
  EXPECT_LT(ids.size(), 16u) << "common words should be single pieces";
  EXPECT_EQ(tok.decode(ids), verse);
}

}  // namespace
}  // namespace axlearn::data
