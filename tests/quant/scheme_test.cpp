// QuantScheme: text form (parse / canonical print / errors), sizes and bits per weight.
#include "quant/scheme.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace kllens {
namespace {

TEST(QuantScheme, CanonicalSpellings) {
  const std::pair<const char*, const char*> cases[] = {
      {"int4", "int4:g0:sym:s16"},
      {"int4:g32", "int4:g32:sym:s16"},
      {"INT4:G32", "int4:g32:sym:s16"},
      {"int8:asym:g16:s32", "int8:g16:asym:s32"},
      {"int2:s32", "int2:g0:sym:s32"},
      {"int3:g128:asym", "int3:g128:asym:s16"},
      {"int8:g0:sym:s16", "int8:g0:sym:s16"},
      {"q8_0", "q8_0"},
      {"Q4_0", "q4_0"},
      {"bf16", "bf16"},
      {"f16", "f16"},
      {"f32", "f32"},
  };
  for (const auto& [text, canonical] : cases) {
    const QuantScheme s = QuantScheme::parse(text);
    EXPECT_EQ(s.to_string(), canonical) << text;
    EXPECT_EQ(QuantScheme::parse(s.to_string()), s) << text;
  }
}

TEST(QuantScheme, RoundTripsEveryIntScheme) {
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {0, 8, 16, 32, 64, 128, 4096})
      for (bool sym : {true, false})
        for (bool f16 : {true, false}) {
          const QuantScheme s = QuantScheme::make_int(bits, group, sym, f16);
          const QuantScheme back = QuantScheme::parse(s.to_string());
          EXPECT_EQ(back, s) << s.to_string();
          EXPECT_EQ(back.to_string(), s.to_string());
        }
}

TEST(QuantScheme, RemembersOnlyTheCanonicalFields) {
  // Spelling details (case, field order) are not kept: equal schemes compare equal.
  EXPECT_EQ(QuantScheme::parse("int4:s16:sym:g32"), QuantScheme::parse("INT4:G32"));
  EXPECT_EQ(QuantScheme::parse("int4"), QuantScheme::make_int(4, 0));
  EXPECT_EQ(QuantScheme{}, QuantScheme::parse("f32"));
  EXPECT_NE(QuantScheme::parse("int4:g32"), QuantScheme::parse("int4:g32:s32"));
}

TEST(QuantScheme, ParseErrorsListTheAcceptedForms) {
  for (const char* bad : {"", "int", "int1", "int9", "int16", "int4:g12", "int4:g4", "int4:g",
                          "int4:gx", "int4:g-8", "int4:sym:sym", "int4:g32:g32", "int4:s8",
                          "int4:s16:s32", "int4:g32:", "q7_0", "q4_k_m", "iq2_xxs", "fp16", "int4:sym:foo", "intx",
                          "int4 :g32", "q8_0:g32"}) {
    try {
      QuantScheme::parse(bad);
      ADD_FAILURE() << "'" << bad << "' parsed";
    } catch (const UsageError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("accepted forms"), std::string::npos) << msg;
      EXPECT_NE(msg.find("q4_0"), std::string::npos) << msg;
      EXPECT_EQ(e.exit_code(), 2);
    }
  }
}

TEST(QuantScheme, BitsPerWeight) {
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int4:g32:s16").bits_per_weight(4096), 4.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("q4_0").bits_per_weight(4096), 4.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("q8_0").bits_per_weight(4096), 8.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int8:g32").bits_per_weight(64), 8.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int4:g32:asym").bits_per_weight(64), 4.75);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int4:g64:s32").bits_per_weight(128), 4.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int8:g0:s32").bits_per_weight(100), 8.32);
  // 32 does not divide 48: one group (one scale) per row.
  EXPECT_DOUBLE_EQ(QuantScheme::parse("int4:g32").bits_per_weight(48), 4 + 16.0 / 48);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("bf16").bits_per_weight(7), 16);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("f32").bits_per_weight(7), 32);
}

TEST(QuantScheme, StorageBytes) {
  // int3 asym s32, [5, 48], g16: ceil(3*240/8) = 90 bytes of codes, 15 groups * (4 + 1).
  EXPECT_EQ(QuantScheme::parse("int3:g16:asym:s32").storage_bytes(5, 48), 90 + 15 * 5);
  // int5 sym s16, [3, 7], g8 does not divide 7: ceil(5*21/8) = 14 bytes, 3 groups * 2.
  EXPECT_EQ(QuantScheme::parse("int5:g8").storage_bytes(3, 7), 14 + 6);
  EXPECT_EQ(QuantScheme::parse("q8_0").storage_bytes(3, 64), 6 * 34);
  EXPECT_EQ(QuantScheme::parse("q4_0").storage_bytes(3, 64), 6 * 18);
  EXPECT_EQ(QuantScheme::parse("bf16").storage_bytes(3, 7), 42);
  EXPECT_EQ(QuantScheme::parse("f32").storage_bytes(3, 7), 84);
  EXPECT_EQ(QuantScheme::parse("int4:g32").storage_bytes(0, 64), 0);
}

TEST(QuantScheme, BlockFormatsNeedWholeBlocks) {
  const QuantScheme q4 = QuantScheme::parse("q4_0");
  EXPECT_TRUE(q4.supports(64));
  EXPECT_FALSE(q4.supports(48));
  EXPECT_TRUE(QuantScheme::parse("int4:g32").supports(48));
  try {
    q4.storage_bytes(2, 48);
    ADD_FAILURE() << "q4_0 accepted 48 columns";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of the 32-element block"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(QuantScheme::parse("q8_0").bits_per_weight(100), Error);
}

TEST(QuantScheme, EffectiveGroup) {
  EXPECT_EQ(QuantScheme::parse("int4:g32").effective_group(64), 32);
  EXPECT_EQ(QuantScheme::parse("int4:g32").effective_group(48), 48);
  EXPECT_EQ(QuantScheme::parse("int4:g0").effective_group(48), 48);
  EXPECT_EQ(QuantScheme::parse("int4:g32").groups_per_row(96), 3);
  EXPECT_EQ(QuantScheme::parse("int4:g32").groups_per_row(48), 1);
  EXPECT_EQ(QuantScheme::parse("q8_0").groups_per_row(96), 3);
}

}  // namespace
}  // namespace kllens
