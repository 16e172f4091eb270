// Perplexity protocol (the one the demo models' numbers in data/models/*/training.json use):
//   1. the whole text is tokenized at once with the model folder's tokenizer.json (no BOS added);
//   2. the ids are cut from the start into consecutive non-overlapping windows of ctx tokens;
//      a shorter tail is dropped (windows = floor(tokens / ctx));
//   3. each window is run from a fresh state (recurrent state / KV cache reset);
//   4. every token after the first of a window is scored: ctx - 1 predictions per window;
//   5. ppl = exp(mean NLL) over all scored tokens. Hymba's meta tokens are a prefix inside the
//      model and are never scored.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kllens {

class Model;

// Consecutive non-overlapping windows of ctx tokens; at most max_windows (<= 0: all).
std::vector<std::vector<int32_t>> make_windows(std::span<const int32_t> ids, int64_t ctx,
                                               int64_t max_windows = 0);

// Natural-log negative log-likelihood of target under logits (log-softmax in double).
double token_nll(const float* logits, int64_t vocab, int32_t target);

struct PerplexityResult {
  double ppl = 0;
  double mean_nll = 0;
  int64_t tokens = 0;   // scored tokens
  int64_t windows = 0;
  int64_t ctx = 0;
};

PerplexityResult perplexity(const Model& model, const std::vector<std::vector<int32_t>>& windows,
                            bool show_progress = true);

}  // namespace kllens
