#include "sensitivity/sweep.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/cluster.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/durable_file.h"
#include "io/hf_config.h"
#include "io/json_file.h"
#include "models/model.h"
#include "quant/formats.h"
#include "quant/quantize.h"
#include "sensitivity/journal.h"
#include "stats/logits.h"

namespace kllens {

using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

json mean_std_json(const MeanStd& m) { return {{"mean", m.mean}, {"stderr", m.stderr_}}; }

MeanStd mean_std_from(const json& j, const std::string& name) {
  if (!j.contains(name) || !j[name].is_object() || !j[name].contains("mean"))
    fail("metric '{}' is missing or malformed", name);
  MeanStd m;
  m.mean = j[name]["mean"].is_number() ? j[name]["mean"].get<double>() : NAN;
  m.stderr_ = j[name].value("stderr", 0.0);
  return m;
}

// An entry's identity: its component and the scheme as given.
std::string entry_key(const std::string& component, const std::string& scheme) {
  return component + "\n" + scheme;
}

// Where an entry for this component restarts: -1 = from the embedding (start()), n_layers =
// only the head, else the layer index.
int restart_layer(const Param& p, int n_layers) {
  if (p.role == Role::kHead) return n_layers;
  if (p.layer < 0) return -1;
  return p.layer;
}

}  // namespace

double SweepCostModel::entry_seconds(int from_layer) const {
  double s = head_seconds;
  if (from_layer < 0) s += start_seconds;
  for (size_t l = static_cast<size_t>(std::max(from_layer, 0)); l < layer_seconds.size(); ++l)
    s += layer_seconds[l];
  return s;
}

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names = {"kl", "rkl", "mse", "sqnr_db", "top1", "dnll"};
  return names;
}

double metric_value(const EntryMetrics& m, const std::string& name) {
  if (name == "kl") return m.kl.mean;
  if (name == "rkl") return m.rkl.mean;
  if (name == "mse") return m.mse.mean;
  if (name == "sqnr_db" || name == "sqnr") return m.sqnr_db.mean;
  if (name == "top1") return m.top1.mean;
  if (name == "dnll") return m.dnll.mean;
  throw UsageError(fmt::format("unknown metric '{}' (kl, rkl, mse, sqnr, top1, dnll)", name));
}

json entry_to_json(const SweepEntry& e) {
  json j = {{"component", e.component},
          {"layer", e.layer},
          {"role", e.role},
          {"shape", e.shape},
          {"params", e.params},
          {"scheme", e.scheme},
          {"bytes", e.bytes},
          {"seconds", e.seconds},
          {"metrics",
           {{"kl", mean_std_json(e.metrics.kl)},
            {"rkl", mean_std_json(e.metrics.rkl)},
            {"mse", mean_std_json(e.metrics.mse)},
            {"sqnr_db", mean_std_json(e.metrics.sqnr_db)},
            {"top1", mean_std_json(e.metrics.top1)},
            {"dnll", mean_std_json(e.metrics.dnll)}}}};
  if (!e.stored.empty()) j["stored"] = e.stored;
  if (e.windows > 0) j["windows"] = e.windows;
  return j;
}

namespace {
constexpr int64_t kMaxComponentParams = int64_t{1} << 48;
}  // namespace

SweepEntry entry_from_json(const json& j) {
  try {
    SweepEntry e;
    e.component = j.at("component").get<std::string>();
    // Integers through json_integer: get<int64_t>() would cast a float (undefined out of range).
    e.layer = static_cast<int>(json_integer(j.at("layer"), "entry \"layer\"",
                                            std::numeric_limits<int>::min(),
                                            std::numeric_limits<int>::max()));
    e.role = j.at("role").get<std::string>();
    // Sizes are positive and consistent, within bounds no model reaches, so the planner's sums
    // (2 x params for bf16, bytes over all components) cannot overflow: a component's dimensions
    // are config values (at most kMaxConfigInt each), it holds at most 2^48 parameters, and no
    // scheme stores more than 4 bytes per parameter (8 allowed).
    if (!j.at("shape").is_array() || j["shape"].empty())
      fail("entry \"shape\" must be a non-empty list, got {}", j["shape"].dump());
    int64_t numel = 1;
    for (const json& d : j["shape"]) {
      e.shape.push_back(json_integer(d, "entry \"shape\"", 1, kMaxConfigInt));
      numel = e.shape.back() > kMaxComponentParams / numel ? kMaxComponentParams + 1
                                                           : numel * e.shape.back();
    }
    e.params = json_integer(j.at("params"), "entry \"params\"", 1, kMaxComponentParams);
    if (e.params != numel)
      fail("entry \"params\" is {} but its \"shape\" {} holds {} elements", e.params,
           j["shape"].dump(), numel > kMaxComponentParams ? "more than 2^48" : std::to_string(numel));
    e.scheme = j.at("scheme").get<std::string>();
    e.bytes = json_integer(j.at("bytes"), "entry \"bytes\"", 1, 8 * e.params);
    e.stored = j.value("stored", std::string());
    if (j.contains("windows")) e.windows = json_integer(j["windows"], "entry \"windows\"", 1, int64_t{1} << 30);
    e.seconds = j.value("seconds", 0.0);
    const json& m = j.at("metrics");
    e.metrics.kl = mean_std_from(m, "kl");
    e.metrics.rkl = mean_std_from(m, "rkl");
    e.metrics.mse = mean_std_from(m, "mse");
    e.metrics.sqnr_db = mean_std_from(m, "sqnr_db");
    e.metrics.top1 = mean_std_from(m, "top1");
    e.metrics.dnll = mean_std_from(m, "dnll");
    return e;
  } catch (const json::exception& ex) {
    fail("malformed sensitivity entry: {}", ex.what());
  }
}

std::vector<const Param*> sweep_components(const Model& model, const SweepOptions& options) {
  std::optional<std::regex> re;
  if (options.component_regex) {
    try {
      re.emplace(*options.component_regex);
    } catch (const std::regex_error& e) {
      throw UsageError(fmt::format("--components: invalid regular expression '{}': {}",
                                   *options.component_regex, e.what()));
    }
  }
  std::vector<const Param*> out;
  for (const Param* p : model.weights().components())
    if (!re || std::regex_search(p->name, *re)) out.push_back(p);
  if (out.empty())
    throw UsageError(fmt::format("no component matches --components '{}'",
                                 options.component_regex.value_or("")));
  return out;
}

namespace {

int64_t tokens_in(const std::vector<std::vector<int32_t>>& windows, size_t n) {
  int64_t t = 0;
  for (size_t w = 0; w < n && w < windows.size(); ++w) t += static_cast<int64_t>(windows[w].size());
  return t;
}

// Whether an entry measured on the first `first` windows needs the rest. Its uncertainty is
// taken between windows (the standard error of the per-window mean KLs): positions within a
// window are correlated, so the per-position standard error would understate it. An entry
// whose mean KL is below 1% of the largest of its component's schemes is never refined: the
// component's choice between schemes does not hinge on its exact value.
bool needs_more_windows(const LogitComparison& cmp, const std::vector<std::vector<int32_t>>& windows,
                        size_t first, double kl_max, double rse) {
  const double mean = cmp.results().kl_forward.mean;
  if (!(mean > 0) || mean < 0.01 * kl_max) return false;
  if (first < 2) return true;  // no spread to estimate from
  const std::vector<float>& kl = cmp.kl_values();
  RunningStat per_window;
  size_t at = 0;
  for (size_t w = 0; w < first; ++w) {
    double sum = 0;
    for (size_t t = 0; t < windows[w].size(); ++t) sum += kl[at + t];
    at += windows[w].size();
    per_window.add(sum / static_cast<double>(windows[w].size()));
  }
  return per_window.std_error() > rse * mean;
}

}  // namespace

std::vector<SweepEntry> run_sweep(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                  const SweepOptions& options, const json& header,
                                  SweepStats* stats_out) {
  SweepStats stats;
  const auto t_total = Clock::now();
  if (windows.empty()) fail("the sweep needs at least one calibration window");
  std::vector<QuantScheme> schemes;
  for (const auto& s : options.schemes) schemes.push_back(QuantScheme::parse(s));
  if (schemes.empty()) throw UsageError("--schemes: give at least one scheme");
  const auto components = sweep_components(model, options);
  const int L = static_cast<int>(model.info().n_layers);
  const int64_t V = model.info().vocab;

  const Cluster& cluster = options.cluster ? *options.cluster : Cluster::alone();
  const bool sharded = options.cluster && cluster.size() > 1;
  std::map<std::string, SweepEntry> done;
  SweepJournal journal(
      sharded && !options.journal_path.empty()
          ? fmt::format("{}.rank{}", options.journal_path, cluster.rank())
          : options.journal_path,
      header, options.resume);
  for (const json& record : journal.records()) {
    SweepEntry e;
    try {
      e = entry_from_json(record);
    } catch (const std::exception& ex) {  // intact checksum, yet not an entry: not ours
      fail("{}: a journal record is not a sweep entry: {}", options.journal_path, ex.what());
    }
    done[entry_key(e.component, e.scheme)] = e;
  }
  // Every rank learns what every journal holds.
  const auto share = [&](const std::vector<SweepEntry>& mine) {
    json list = json::array();
    for (const SweepEntry& e : mine) list.push_back(entry_to_json(e));
    for (const std::string& part : cluster.all_gather(list.dump()))
      for (const json& j : json::parse(part)) {
        SweepEntry e = entry_from_json(j);
        done.emplace(entry_key(e.component, e.scheme), std::move(e));
      }
  };
  if (sharded) {
    std::vector<SweepEntry> mine;
    for (const auto& [key, e] : done) mine.push_back(e);
    share(mine);
  }
  stats.entries_resumed = static_cast<int64_t>(done.size());
  stats.journal_dropped_lines = journal.recovery().dropped_lines;

  // Full-precision pass: logits per window and the states before every (stride-th) layer.
  const auto t_fp = Clock::now();
  std::vector<std::vector<float>> fp_logits(windows.size());
  // states[w][k] = state before layer k * stride (k * stride <= L; index L = after the last).
  std::vector<std::vector<std::unique_ptr<ForwardState>>> states(windows.size());
  int stride = 1;
  if (options.prefix_reuse) {
    auto probe = model.start(windows[0]);
    int64_t per_window = 0;
    for (int l = 0; l < L; ++l) {
      per_window += static_cast<int64_t>(probe->bytes());
      model.run_layer(l, *probe);
    }
    per_window += static_cast<int64_t>(probe->bytes());
    const int64_t total = per_window * static_cast<int64_t>(windows.size());
    while (stride < L + 1 && total / stride > options.cache_budget_bytes) ++stride;
  }
  stats.cache_stride = stride;
  double fp_nll = 0;
  int64_t fp_targets = 0;
  // The pass's own times per stage are the cost model of the entries (the progress ETA).
  SweepCostModel cost;
  cost.layer_seconds.assign(static_cast<size_t>(L), 0.0);
  for (size_t w = 0; w < windows.size(); ++w) {
    auto t_stage = Clock::now();
    auto state = model.start(windows[w]);
    cost.start_seconds += seconds_since(t_stage);
    for (int l = 0; l <= L; ++l) {
      if (options.prefix_reuse && (l % stride == 0 || l == L)) {
        if (states[w].size() <= static_cast<size_t>(l)) states[w].resize(static_cast<size_t>(L + 1));
        states[w][static_cast<size_t>(l)] = state->clone();
        stats.cache_bytes += static_cast<int64_t>(states[w][static_cast<size_t>(l)]->bytes());
      }
      if (l < L) {
        t_stage = Clock::now();
        model.run_layer(l, *state);
        cost.layer_seconds[static_cast<size_t>(l)] += seconds_since(t_stage);
      }
    }
    t_stage = Clock::now();
    fp_logits[w].resize(windows[w].size() * static_cast<size_t>(V));
    model.finish(*state, fp_logits[w].data());
    for (size_t t = 0; t + 1 < windows[w].size(); ++t) {
      fp_nll += nll(fp_logits[w].data() + t * static_cast<size_t>(V), static_cast<int>(V),
                    windows[w][t + 1]);
      ++fp_targets;
    }
    cost.head_seconds += seconds_since(t_stage);
  }
  stats.fp_seconds = seconds_since(t_fp);
  stats.fp_ppl = fp_targets ? std::exp(fp_nll / static_cast<double>(fp_targets)) : 0;

  // Where an entry's passes start: -1 = start(), else the cached state before that layer.
  auto first_layer = [&](const Param& p) {
    const int restart = options.prefix_reuse ? restart_layer(p, L) : -1;
    if (restart < 0 || restart == L) return restart;
    return (restart / stride) * stride;
  };
  // The entries still to compute, in table order, and the rank that computes each. A
  // component's entries go to one rank together: an adaptive sweep decides on them side by side.
  std::vector<double> item_cost;
  std::vector<size_t> item_component;
  for (size_t c = 0; c < components.size(); ++c)
    for (size_t si = 0; si < schemes.size(); ++si)
      if (!done.count(entry_key(components[c]->name, options.schemes[si]))) {
        item_cost.push_back(cost.entry_seconds(first_layer(*components[c])));
        item_component.push_back(c);
      }
  std::vector<int> owner(item_cost.size(), 0);
  if (sharded) {
    // Rank 0's measured costs decide, so that every rank computes the same assignment.
    json assignment = json::array();
    if (cluster.rank() == 0) {
      std::vector<double> component_cost(components.size(), 0.0);
      for (size_t i = 0; i < item_cost.size(); ++i) component_cost[item_component[i]] += item_cost[i];
      std::vector<size_t> order(components.size());
      for (size_t c = 0; c < order.size(); ++c) order[c] = c;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return component_cost[a] > component_cost[b]; });
      std::vector<double> load(static_cast<size_t>(cluster.size()), 0.0);
      std::vector<int> component_owner(components.size(), 0);
      for (size_t c : order) {
        if (component_cost[c] == 0) continue;  // nothing left of it
        const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
        component_owner[c] = static_cast<int>(r);
        load[r] += component_cost[c];
      }
      for (size_t i = 0; i < item_cost.size(); ++i) owner[i] = component_owner[item_component[i]];
      assignment = owner;
    }
    owner = json::parse(cluster.broadcast(assignment.dump())).get<std::vector<int>>();
    if (owner.size() != item_cost.size()) fail("the ranks disagree on the entries left to compute");
  }
  int64_t to_compute = 0;
  double expected_seconds = 0;
  for (size_t i = 0; i < item_cost.size(); ++i)
    if (owner[i] == cluster.rank() || !sharded) {
      ++to_compute;
      expected_seconds += item_cost[i];
    }
  size_t item = 0;
  std::vector<SweepEntry> computed;
  // Adaptive: every entry first on the first `first` windows; the rest only for those whose
  // estimate is too uncertain to place (needs_more below).
  const size_t W = windows.size();
  const size_t first = options.adaptive_windows > 0
                           ? std::min(W, static_cast<size_t>(options.adaptive_windows))
                           : W;
  const double stage_share = static_cast<double>(first) / static_cast<double>(W);
  std::vector<SweepEntry> entries;
  Progress progress("sensitivity", to_compute, expected_seconds * stage_share);
  std::vector<float> logits;
  // Windows [w0, w1) of the model with p fake-quantized in `scheme`, added to cmp.
  const auto measure = [&](Param& p, const QuantScheme& scheme, int from_layer, size_t w0,
                           size_t w1, LogitComparison& cmp) {
    const std::vector<float> original = p.value;
    const float* importance = options.importance ? options.importance(p) : nullptr;
    fake_quantize(scheme, p.data(), p.rows(), p.cols(), importance);
    try {
      for (size_t w = w0; w < w1; ++w) {
        std::unique_ptr<ForwardState> state;
        int from = from_layer;
        if (from < 0) {
          state = model.start(windows[w]);
          from = 0;
        } else {
          state = states[w][static_cast<size_t>(from)]->clone();
        }
        for (int l = from; l < L; ++l) model.run_layer(l, *state);
        logits.resize(windows[w].size() * static_cast<size_t>(V));
        model.finish(*state, logits.data());
        for (size_t t = 0; t < windows[w].size(); ++t) {
          const int target = t + 1 < windows[w].size() ? windows[w][t + 1] : -1;
          cmp.add(fp_logits[w].data() + t * static_cast<size_t>(V),
                  logits.data() + t * static_cast<size_t>(V), static_cast<int>(V), target);
        }
      }
    } catch (...) {
      p.value = original;
      throw;
    }
    p.value = original;
  };
  struct Pending {
    size_t si;
    QuantScheme scheme;
    LogitComparison cmp;
    double seconds = 0;
    size_t measured_windows = 0;
  };
  // An entry is final: journaled (on disk when this returns) and counted.
  const auto finish_entry = [&](const Param& p, int from_layer, const Pending& pe) {
    const LogitResults r = pe.cmp.results();
    SweepEntry e;
    e.component = p.name;
    e.layer = p.layer;
    e.role = std::string(role_name(p.role));
    e.shape = p.shape;
    e.params = p.numel();
    e.scheme = options.schemes[pe.si];
    if (!(pe.scheme == schemes[pe.si])) e.stored = pe.scheme.to_string();
    e.bytes = pe.scheme.storage_bytes(p.rows(), p.cols());
    e.seconds = pe.seconds;
    e.metrics = {r.kl_forward, r.kl_reverse, r.logit_mse, r.sqnr_db, r.top1, r.delta_nll};
    if (first < W) e.windows = static_cast<int64_t>(pe.measured_windows);
    journal.append(entry_to_json(e));
    computed.push_back(e);
    done.emplace(entry_key(e.component, e.scheme), e);
    ++stats.entries_computed;
    if (options.on_entry) options.on_entry(e);
    if (options.show_progress) progress.advance(1, cost.entry_seconds(from_layer) * stage_share);
  };
  for (const Param* cp : components) {
    Param& p = model.weights().get(cp->name);
    const int from_layer = first_layer(p);
    std::vector<Pending> pending;
    for (size_t si = 0; si < schemes.size(); ++si) {
      const std::string key = entry_key(p.name, options.schemes[si]);
      if (done.count(key)) continue;
      if (sharded && owner[item++] != cluster.rank()) continue;  // another rank's
      // A block format that cannot divide the rows is measured (and sized) as the file will hold
      // it: llama-quantize's fallback for the shape (quant/formats.h), recorded in the entry.
      const QuantScheme scheme = stored_scheme(schemes[si], p.cols());
      if (!scheme.supports(p.cols())) {
        std::fprintf(stderr, "note: %s cannot be stored as %s (row length %lld); skipped\n",
                     p.name.c_str(), options.schemes[si].c_str(), static_cast<long long>(p.cols()));
        if (options.show_progress) progress.advance(1, cost.entry_seconds(from_layer) * stage_share);
        continue;
      }
      Pending e{si, scheme, {}, 0, first};
      const auto t_entry = Clock::now();
      measure(p, scheme, from_layer, 0, first, e.cmp);
      e.seconds = seconds_since(t_entry);
      // Without stages an entry is final at once: a sweep killed now loses only the entry it
      // is computing.
      if (first == W) finish_entry(p, from_layer, e);
      else pending.push_back(std::move(e));
    }
    if (first < W && !pending.empty()) {
      // The component's estimates side by side: its schemes' mean KLs (resumed ones included).
      std::vector<double> kl_of_component;
      for (const Pending& e : pending) kl_of_component.push_back(e.cmp.results().kl_forward.mean);
      for (size_t si = 0; si < schemes.size(); ++si)
        if (auto it = done.find(entry_key(p.name, options.schemes[si])); it != done.end())
          kl_of_component.push_back(it->second.metrics.kl.mean);
      const double kl_max = *std::max_element(kl_of_component.begin(), kl_of_component.end());
      for (Pending& e : pending) {
        if (!needs_more_windows(e.cmp, windows, first, kl_max, options.adaptive_rse)) continue;
        const auto t_more = Clock::now();
        if (options.show_progress) progress.add_work(cost.entry_seconds(from_layer) * (1 - stage_share));
        measure(p, e.scheme, from_layer, first, W, e.cmp);
        e.seconds += seconds_since(t_more);
        e.measured_windows = W;
      }
    }
    for (const Pending& pe : pending) finish_entry(p, from_layer, pe);
  }
  // Every entry in table order: resumed and computed (other ranks' come in below).
  for (const Param* cp : components)
    for (size_t si = 0; si < schemes.size(); ++si)
      if (auto it = done.find(entry_key(cp->name, options.schemes[si])); it != done.end())
        entries.push_back(it->second);
  progress.finish();
  if (sharded) {
    // Every rank's entries, in table order, on every rank.
    share(computed);
    entries.clear();
    for (const Param* cp : components)
      for (size_t si = 0; si < schemes.size(); ++si)
        if (auto it = done.find(entry_key(cp->name, options.schemes[si])); it != done.end())
          entries.push_back(it->second);
  }
  // Over every entry of the result (resumed and other ranks' ones included), so that the file
  // says the same whoever computed what.
  for (const SweepEntry& e : entries) {
    stats.tokens_measured += tokens_in(windows, e.windows > 0 ? static_cast<size_t>(e.windows) : W);
    stats.tokens_full += tokens_in(windows, W);
  }
  stats.expected_entry_seconds = expected_seconds;
  stats.total_seconds = seconds_since(t_total);
  if (stats_out) *stats_out = stats;
  if (options.on_complete) {
    // Still holding the journal's lock: no second process can resume it while the result is
    // written, and the journal goes only once the result is on disk (every rank's only once rank
    // 0 has written it).
    if (cluster.rank() == 0) options.on_complete(entries, stats);
    cluster.barrier();
    journal.remove();
  }
  return entries;
}

void write_sensitivity_json(const std::string& path, const SensitivityReport& report) {
  json entries = json::array();
  for (const auto& e : report.entries) entries.push_back(entry_to_json(e));
  const json j = {{"format", "kllens-sensitivity"}, {"version", 1},
                  {"model", report.model},          {"calibration", report.calibration},
                  {"schemes", report.schemes},      {"sweep", report.sweep},
                  {"entries", entries}};
  write_json_file_atomic(path, j);
}

SensitivityReport read_sensitivity_json(const std::string& path) {
  return sensitivity_from_json(read_json_file(path), path);
}

SensitivityReport sensitivity_from_json(const json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("format") || j["format"] != "kllens-sensitivity")
    fail("{}: not a kllens sensitivity file (no \"format\": \"kllens-sensitivity\")", path);
  SensitivityReport r;
  try {
    r.model = j.at("model");
    r.calibration = j.at("calibration");
    r.sweep = j.value("sweep", json::object());
    r.schemes = j.at("schemes").get<std::vector<std::string>>();
    for (const auto& e : j.at("entries")) r.entries.push_back(entry_from_json(e));
  } catch (const json::exception& e) {
    fail("{}: malformed sensitivity file: {}", path, e.what());
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  return r;
}

void write_sensitivity_csv(const std::string& path, const std::vector<SweepEntry>& entries) {
  std::ostringstream out;
  out << "component,layer,role,params,scheme,bytes,seconds";
  for (const auto& m : metric_names()) out << "," << m << "," << m << "_stderr";
  out << "\n";
  for (const auto& e : entries) {
    out << e.component << "," << e.layer << "," << e.role << "," << e.params << "," << e.scheme
        << "," << e.bytes << "," << fmt::format("{:.4f}", e.seconds);
    for (const MeanStd* m : {&e.metrics.kl, &e.metrics.rkl, &e.metrics.mse, &e.metrics.sqnr_db,
                             &e.metrics.top1, &e.metrics.dnll})
      out << "," << fmt::format("{:.9g},{:.9g}", m->mean, m->stderr_);
    out << "\n";
  }
  write_file_durably(path, out.str());
}

}  // namespace kllens
