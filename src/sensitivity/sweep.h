// The one-component-at-a-time sensitivity sweep: for every component and every candidate
// scheme, fake-quantize only that component, run the model on calibration windows and measure
// how far its next-token distributions move from the full-precision model's.
//
// Prefix reuse: the full-precision pass keeps, per window, the forward state before every layer
// (hidden rows, plus K/V a later layer of a Hymba reuse group reads). An entry whose component
// lives in layer L restarts from the state before L and recomputes layers L..end only; the
// embedding (tied or not) restarts from the start, an untied head from the state after the last
// layer. Cost: windows x layers x state bytes (reported as cache_bytes). When that exceeds
// --cache-mb, only every k-th layer's state is kept and an entry restarts from the nearest
// kept layer at or before its own (k = the smallest stride that fits).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "quant/scheme.h"
#include "stats/running_stat.h"

namespace kllens {

class Cluster;
class Model;
struct Param;

struct EntryMetrics {
  MeanStd kl, rkl, mse, sqnr_db, top1, dnll;
};

struct SweepEntry {
  std::string component;
  int layer = -1;
  std::string role;
  std::vector<int64_t> shape;
  int64_t params = 0;
  std::string scheme;  // as given on the command line
  // The scheme the entry was measured and sized in when the file cannot hold `scheme` for this
  // shape (llama-quantize's fallback, quant/formats.h stored_scheme); "" when it is `scheme`.
  std::string stored;
  int64_t bytes = 0;   // exact packed size of the component as stored (the GGUF tensor's bytes)
  // Windows the metrics are over, in an adaptive sweep (the first ones); 0: every window.
  int64_t windows = 0;
  double seconds = 0;
  EntryMetrics metrics;
};

// What an entry costs, from the full-precision pass's own times (all windows): an entry reruns
// the layers from where its cached state starts, then the head (final norm, lm_head, the logit
// comparison). For the progress bar's ETA: a layer-0 entry of a 32-layer model costs many times
// a last-layer one.
struct SweepCostModel {
  double start_seconds = 0;           // embedding (and Hymba's meta tokens)
  std::vector<double> layer_seconds;  // per layer
  double head_seconds = 0;
  // from_layer: -1 = from the embedding, n_layers = the head only, else that layer onwards.
  double entry_seconds(int from_layer) const;
};

struct SweepStats {
  int64_t cache_bytes = 0;
  int cache_stride = 1;
  int64_t entries_computed = 0;
  int64_t entries_resumed = 0;
  int64_t journal_dropped_lines = 0;  // damaged journal lines dropped on resume (recomputed)
  double expected_entry_seconds = 0;  // the cost model's total for the entries computed
  double fp_seconds = 0;
  double total_seconds = 0;
  double fp_ppl = 0;  // full-precision perplexity on the calibration windows
  // Calibration tokens the result's entries were measured on, and what a full sweep measures.
  int64_t tokens_measured = 0, tokens_full = 0;
};

struct SweepOptions {
  std::vector<std::string> schemes;          // texts as given (parsed with QuantScheme::parse)
  std::optional<std::string> component_regex;  // std::regex_search on the HF tensor name
  bool prefix_reuse = true;
  // Adaptive sweep: every entry on the first `adaptive_windows` windows, then the rest of them
  // only for an entry whose standard error (between windows) exceeds adaptive_rse times its mean
  // KL, unless that KL is below 1% of the largest of its component's schemes. 0: every entry on
  // every window. A refined entry equals the full sweep's bit for bit (same windows, same order).
  int64_t adaptive_windows = 0;
  double adaptive_rse = 0.05;
  int64_t cache_budget_bytes = int64_t{4} << 30;
  std::string journal_path;  // empty: no journal
  bool resume = false;
  bool show_progress = true;
  // The importance vector (cols floats) ggml's quantizers use for a component, or nullptr; unset:
  // none. The journal header must name the importance matrix so a resume cannot mix two.
  std::function<const float*(const Param&)> importance;
  // Called after each finished entry (tests use it to simulate a crash).
  std::function<void(const SweepEntry&)> on_entry;
  // Called with every entry once the sweep is complete, while the journal is still locked: write
  // the result here. When it returns, the journal is deleted. Unset: the journal is kept. In an
  // MPI job only rank 0 calls it (with every rank's entries).
  std::function<void(const std::vector<SweepEntry>&, const SweepStats&)> on_complete;
  // The ranks the entries are split across (core/cluster.h); nullptr: this process alone. Each
  // rank journals its own entries to journal_path + ".rank<R>", all ranks learn the entries
  // every journal holds, rank 0 assigns the rest by their expected cost, a component's entries
  // together (longest first, each to the least loaded rank: a layer-0 entry reruns every layer,
  // a last-layer one almost none),
  // and every rank ends with all entries in table order, as one process would compute them.
  const Cluster* cluster = nullptr;
};

// Components the sweep covers (every 2+D *.weight tensor, filtered by the regex), in table order.
std::vector<const Param*> sweep_components(const Model& model, const SweepOptions& options);

// Runs the sweep over the given windows (each a token sequence; all positions compared, the
// next token of each position, when inside the window, is the target for dNLL). The journal
// (sensitivity/journal.h) describes the sweep by `header` (model, calibration, schemes):
// resuming a journal whose header differs, or one another process holds, is an error. Entries
// come back in component-table order, then scheme order.
std::vector<SweepEntry> run_sweep(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                  const SweepOptions& options, const nlohmann::json& header,
                                  SweepStats* stats = nullptr);

nlohmann::json entry_to_json(const SweepEntry& e);
SweepEntry entry_from_json(const nlohmann::json& j);

// SENS.json: {"model", "calibration", "schemes", "sweep", "entries"}.
struct SensitivityReport {
  nlohmann::json model, calibration, sweep;
  std::vector<std::string> schemes;
  std::vector<SweepEntry> entries;
};
void write_sensitivity_json(const std::string& path, const SensitivityReport& report);
SensitivityReport read_sensitivity_json(const std::string& path);  // validates; throws Error
// The same for a parsed file; `what` names it in errors.
SensitivityReport sensitivity_from_json(const nlohmann::json& j, const std::string& what);
void write_sensitivity_csv(const std::string& path, const std::vector<SweepEntry>& entries);

// Reads a metric by name: kl, rkl, mse, sqnr_db (or sqnr), top1, dnll.
double metric_value(const EntryMetrics& m, const std::string& name);
const std::vector<std::string>& metric_names();

}  // namespace kllens
