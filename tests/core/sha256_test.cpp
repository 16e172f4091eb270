// SHA-256: the incremental interface against the one-shot one, and FIPS 180-2's example.
#include "core/sha256.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace kllens {
namespace {

TEST(Sha256, PublishedExample) {
  // FIPS 180-2, appendix B.1: the message "abc".
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, IncrementalEqualsOneShotForAnySplit) {
  std::mt19937 rng(99);
  std::string data(10007, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const std::string whole = sha256_hex(data);
  for (int trial = 0; trial < 20; ++trial) {
    Sha256 h;
    size_t pos = 0;
    while (pos < data.size()) {
      const size_t n = std::min(data.size() - pos, std::uniform_int_distribution<size_t>(0, 700)(rng));
      h.update(data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(h.hex(), whole);
  }
  Sha256 empty;
  EXPECT_EQ(empty.hex(), sha256_hex(""));
}

}  // namespace
}  // namespace kllens
