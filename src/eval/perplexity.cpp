#include "eval/perplexity.h"

#include <cmath>

#include "core/error.h"
#include "core/progress.h"
#include "models/model.h"

namespace kllens {

std::vector<std::vector<int32_t>> make_windows(std::span<const int32_t> ids, int64_t ctx,
                                               int64_t max_windows) {
  if (ctx < 2) fail("context length must be at least 2, got {}", ctx);
  const int64_t n = static_cast<int64_t>(ids.size()) / ctx;
  if (n == 0) fail("the text has {} tokens, fewer than one window of {}", ids.size(), ctx);
  const int64_t count = max_windows > 0 ? std::min(n, max_windows) : n;
  std::vector<std::vector<int32_t>> out;
  for (int64_t w = 0; w < count; ++w)
    out.emplace_back(ids.begin() + w * ctx, ids.begin() + (w + 1) * ctx);
  return out;
}

double token_nll(const float* logits, int64_t vocab, int32_t target) {
  double maxv = logits[0];
  for (int64_t v = 1; v < vocab; ++v) maxv = std::max(maxv, static_cast<double>(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - maxv);
  return (maxv + std::log(sum)) - static_cast<double>(logits[target]);
}

PerplexityResult perplexity(const Model& model, const std::vector<std::vector<int32_t>>& windows,
                            bool show_progress) {
  PerplexityResult r;
  const int64_t V = model.info().vocab;
  double nll = 0;
  Progress progress("ppl", static_cast<int64_t>(windows.size()));
  for (const auto& w : windows) {
    const auto logits = model.forward(w);
    for (size_t t = 0; t + 1 < w.size(); ++t) {
      nll += token_nll(logits.data() + t * static_cast<size_t>(V), V, w[t + 1]);
      ++r.tokens;
    }
    ++r.windows;
    if (show_progress) progress.advance();
  }
  r.ctx = windows.empty() ? 0 : static_cast<int64_t>(windows[0].size());
  r.mean_nll = r.tokens ? nll / static_cast<double>(r.tokens) : 0;
  r.ppl = std::exp(r.mean_nll);
  return r;
}

}  // namespace kllens
