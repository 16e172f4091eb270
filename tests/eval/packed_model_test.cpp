// eval/packed_model: a model packed in memory runs on the packed kernels
// and gives the logits of fake quantization (float32 panels: the panels hold exactly the
// fake-quantized weights, so only the summation order differs; the default integer path is
// bounded through perplexity in tests/export/packed_file_test.cpp), holds the quantized bytes,
// and refuses what it cannot do.
#include "eval/packed_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/quantized_eval.h"
#include "models/model.h"
#include "quant/qmatmul.h"
#include "test_util.h"

namespace kllens {
namespace {

std::vector<int32_t> ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  uint32_t x = 777;
  for (auto& id : out) {
    x = x * 1664525u + 1013904223u;
    id = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return out;
}

struct FloatPrefill {
  FloatPrefill() { set_prefill_path(PrefillPath::kFloatPanels); }
  ~FloatPrefill() { set_prefill_path(PrefillPath::kAuto); }
};

TEST(PackedModel, HymbaMixedPlanEqualsFakeQuantization) {
  FloatPrefill float_prefill;  // the exact comparison; the integer path is bounded below
  const std::string folder = test::repo_path("data/models/demo-hymba");
  auto reference = load_model(folder);
  auto packed = load_model(folder);
  SchemeAssignment a;
  const char* schemes[] = {"int4:g32", "q8_0", "int4:g64:asym", "bf16", "int8:g0:s32", "int3:g32"};
  int i = 0;
  for (const Param* p : reference->weights().components()) {
    const QuantScheme s = QuantScheme::parse(p->role == Role::kConv1d ? "int8:g0" : schemes[i++ % 6]);
    if (s.supports(p->cols())) a[p->name] = s;
  }
  const PackResult r = pack_model(*packed, a);
  EXPECT_GT(r.packed, 0);
  EXPECT_GT(r.fake_quantized, 0);  // conv1d (and meta tokens are not in the plan)
  EXPECT_LT(r.weight_bytes_after, r.weight_bytes_before / 3);
  for (const auto& p : packed->weights().all()) {
    if (!p->is_packed()) continue;
    EXPECT_TRUE(packable_role(p->role)) << p->name;
    // q8_0/q4_0 are held in the equivalent int8/int4:g32 layout (blocks_as_int_layout).
    const QuantScheme asked = a.at(p->name);
    EXPECT_EQ(p->packed->scheme, asked.is_block() ? QuantScheme::make_int(asked.bits, 32) : asked) << p->name;
  }

  const auto tokens = ids(77, reference->info().vocab);
  WeightSwap swap(*reference);
  swap.apply(a);
  const auto want = reference->forward(tokens);
  const auto got = packed->forward(tokens);
  ASSERT_EQ(got.size(), want.size());
  float scale = 0, worst = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    scale = std::max(scale, std::fabs(want[k]));
    worst = std::max(worst, std::fabs(got[k] - want[k]));
  }
  // Same weights, different float32 summation order in the products (panel widths): rounding
  // differences of ~1e-7 relative per product, carried through 4 layers; 1e-4 of the logit
  // range is three orders of magnitude above that and far below any quantization effect (the
  // int4 logits differ from the float ones by ~1e-1 of the range).
  EXPECT_LE(worst, 1e-4f * scale) << "max |Δlogit| " << worst << " of range " << scale;
}

TEST(PackedModel, RefusesASecondQuantizationAndPlansForOtherModels) {
  const std::string folder = test::repo_path("data/models/demo-mamba");
  auto model = load_model(folder);
  SchemeAssignment a;
  a["backbone.layers.0.mixer.in_proj.weight"] = QuantScheme::parse("q4_0");
  pack_model(*model, a);
  EXPECT_THROW(WeightSwap swap(*model), Error);  // sensitivity/eval need the float weights
  SchemeAssignment bad;
  bad["no.such.weight"] = QuantScheme::parse("q4_0");
  EXPECT_THROW(pack_model(*model, bad), Error);
}

}  // namespace
}  // namespace kllens
