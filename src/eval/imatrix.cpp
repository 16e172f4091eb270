#include "eval/imatrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>

#include "core/error.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/llama_layout.h"
#include "models/model.h"

namespace kllens {

namespace {

const std::string kInSum2 = ".in_sum2";
const std::string kCounts = ".counts";
const std::string kInSum = ".in_sum";

bool strip_suffix(std::string* name, const std::string& suffix) {
  if (name->size() <= suffix.size() ||
      name->compare(name->size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  name->resize(name->size() - suffix.size());
  return true;
}

// A matrix linear() multiplies: every component but the embedding (which linear() sees only as a
// tied head; llama.cpp does not collect that either).
bool collected(const Param& p) {
  return p.is_component() && packable_role(p.role) && p.role != Role::kEmbed;
}

void fill_importance(ImatrixEntry& e) {
  const auto cols = static_cast<size_t>(e.cols);
  e.importance.assign(e.in_sum2.size(), 1.0f);
  for (size_t m = 0; m < e.counts.size(); ++m) {
    const float count = e.counts[m];
    if (count > 0.0f)
      for (size_t c = 0; c < cols; ++c)
        e.importance[m * cols + c] = e.in_sum2[m * cols + c] / count;
  }
}

// HF name -> name in the file, for this model (a stack's name for an expert: llama.cpp keeps one
// entry of n_expert matrices per stack).
std::function<std::string(const std::string&)> gguf_names(const Model& model) {
  return [&model](const std::string& hf) { return gguf_tensor_name(model, hf); };
}

// The expert index of a matrix in its file tensor (0 for an ordinary matrix) and the number of
// matrices the file tensor holds.
std::pair<int, int> expert_slot(const Model& model, const std::string& hf) {
  const LlamaLayout* layout = model.llama_layout();
  if (!layout) return {0, 1};
  const auto it = layout->tensors.find(hf);
  if (it == layout->tensors.end() || !it->second.stacked()) return {0, 1};
  return {it->second.expert, it->second.n_expert};
}

std::string model_summary(const Model& model) {
  return fmt::format("{}, {} layers", model.info().arch, model.info().n_layers);
}

class Collector : public LinearObserver {
 public:
  struct Sums {
    std::vector<double> sum2;
    int64_t rows = 0;
  };

  void observe(const Param& w, const float* x, int64_t T, int64_t K) override {
    if (!collected(w)) return;
    std::lock_guard<std::mutex> lock(mutex_);
    Sums& s = sums_[&w];
    if (s.sum2.empty()) s.sum2.assign(static_cast<size_t>(K), 0.0);
    KLLENS_CHECK(static_cast<int64_t>(s.sum2.size()) == K, "{} multiplied with {} columns, then {}",
                 w.name, s.sum2.size(), K);
    double* sum = s.sum2.data();
    for (int64_t t = 0; t < T; ++t) {
      const float* row = x + t * K;
      for (int64_t c = 0; c < K; ++c) {
        const double v = row[c];
        sum[c] += v * v;
      }
    }
    s.rows += T;
  }

  const Sums* find(const Param* p) const {
    const auto it = sums_.find(p);
    return it == sums_.end() ? nullptr : &it->second;
  }

 private:
  std::mutex mutex_;
  std::map<const Param*, Sums> sums_;
};

}  // namespace

const ImatrixEntry* ImportanceMatrix::find(const std::string& hf_name) const {
  const auto it = entries.find(hf_name);
  return it == entries.end() ? nullptr : &it->second;
}

const float* ImportanceMatrix::importance(const std::string& hf_name, int64_t cols) const {
  const ImatrixEntry* e = find(hf_name);
  if (!e) return nullptr;
  if (e->cols != cols || e->n_mat() != 1 ||
      e->importance.size() != static_cast<size_t>(cols))
    fail("{}: the importance matrix entry '{}' has {} columns ({} matrices), but the tensor {} has "
         "{}",
         path.empty() ? "importance matrix" : path, e->file_name, e->cols, e->n_mat(), hf_name,
         cols);
  return e->importance.data();
}

const float* ImportanceMatrix::importance(const Param& p) const {
  return importance(p.name, p.cols());
}

ImportanceMatrix collect_imatrix(const Model& model,
                                 const std::vector<std::vector<int32_t>>& windows,
                                 const std::string& dataset, bool show_progress) {
  ImportanceMatrix im;
  if (!dataset.empty()) im.datasets.push_back(dataset);
  im.chunk_count = static_cast<uint32_t>(windows.size());
  im.chunk_size = windows.empty() ? 0 : static_cast<uint32_t>(windows[0].size());
  bool untied_head = false;
  for (const Param* p : model.weights().components())
    if (p->role == Role::kHead) untied_head = true;

  Collector collector;
  {
    LinearObserverScope scope(collector);
    Progress progress("imatrix", static_cast<int64_t>(windows.size()));
    std::vector<float> logits;
    for (const auto& w : windows) {
      auto state = model.start(w);
      for (int l = 0; l < static_cast<int>(model.info().n_layers); ++l) model.run_layer(l, *state);
      if (untied_head) {
        logits.resize(w.size() * static_cast<size_t>(model.info().vocab));
        model.finish(*state, logits.data());
      }
      if (show_progress) progress.advance();
    }
  }

  const auto name_of = gguf_names(model);
  for (const Param* p : model.weights().components()) {
    if (!collected(*p)) continue;
    ImatrixEntry e;
    e.file_name = name_of(p->name);
    e.cols = p->cols();
    e.in_sum2.assign(static_cast<size_t>(e.cols), 0.0f);
    e.counts.assign(1, 0.0f);
    // A matrix no window reached (an expert no token was routed to) keeps count 0, as llama.cpp
    // writes such experts.
    if (const Collector::Sums* s = collector.find(p)) {
      for (int64_t c = 0; c < e.cols; ++c) {
        const double v = s->sum2[static_cast<size_t>(c)];
        if (!std::isfinite(v))
          fail("the activations multiplied with {} are not finite (column {}) on the calibration "
               "windows",
               p->name, c);
        e.in_sum2[static_cast<size_t>(c)] = static_cast<float>(v);
      }
      e.counts[0] = static_cast<float>(s->rows);
    }
    fill_importance(e);
    im.entries.emplace(p->name, std::move(e));
  }
  return im;
}

std::string imatrix_tensor_name(const Model& model, const std::string& hf_name) {
  return gguf_names(model)(hf_name);
}

void write_imatrix(ImportanceMatrix& im, const Model& model, const std::string& path) {
  const auto name_of = gguf_names(model);
  // llama.cpp writes names sorted; a stack of experts is one entry of n_expert matrices.
  std::map<std::string, std::vector<const ImatrixEntry*>> by_file_name;
  for (const auto& [hf, e] : im.entries) {
    const Param* p = model.weights().find(hf);
    if (!p || !collected(*p))
      fail("cannot write the importance matrix: '{}' is not a matrix of this model ({})", hf,
           model_summary(model));
    if (e.cols != p->cols() || e.n_mat() != 1 || e.in_sum2.size() != static_cast<size_t>(e.cols))
      fail("cannot write the importance matrix: the entry for {} has {} columns and {} sums for {} "
           "matrices, but the tensor {} is one matrix of {} columns",
           hf, e.cols, e.in_sum2.size(), e.n_mat(), shape_str(p->shape), p->cols());
    const std::string name = name_of(hf);
    if (name.size() + kInSum2.size() > gguf::kMaxNameLength)
      fail("cannot write the importance matrix: the tensor name '{}{}' is {} bytes, and GGUF (ggml) "
           "allows at most {}",
           name, kInSum2, name.size() + kInSum2.size(), gguf::kMaxNameLength);
    const auto [expert, n_expert] = expert_slot(model, hf);
    auto& slots = by_file_name[name];
    slots.resize(static_cast<size_t>(n_expert), nullptr);
    slots[static_cast<size_t>(expert)] = &e;
  }
  gguf::Writer w;
  w.set("general.type", "imatrix");
  w.set("imatrix.datasets", im.datasets);
  w.set("imatrix.chunk_count", uint32_t{im.chunk_count});
  w.set("imatrix.chunk_size", uint32_t{im.chunk_size});
  auto f32_bytes = [](const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  // A dense matrix: ne {cols} and {1}; a stack of n experts: {cols, n} and {1, n}, as llama.cpp
  // writes them.
  for (const auto& [name, slots] : by_file_name) {
    std::vector<float> sums, counts;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i])
        fail("cannot write the importance matrix: it has no entry for expert {} of {}", i, name);
      sums.insert(sums.end(), slots[i]->in_sum2.begin(), slots[i]->in_sum2.end());
      counts.insert(counts.end(), slots[i]->counts.begin(), slots[i]->counts.end());
    }
    const int64_t cols = slots.front()->cols, n = static_cast<int64_t>(slots.size());
    w.add_tensor(name + kInSum2, n == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, n},
                 gguf::GgmlType::kF32, f32_bytes(sums));
    w.add_tensor(name + kCounts, n == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, n},
                 gguf::GgmlType::kF32, f32_bytes(counts));
  }
  w.write(path);
  im.sha256 = sha256_file_hex(path);
  im.path = path;
}

ImportanceMatrix read_imatrix(const std::string& path, const Model& model) {
  const gguf::File file(path);
  const gguf::Value* type = file.find("general.type");
  if (!type)
    fail("{}: not an importance matrix: no general.type key (llama-imatrix and kllens write "
         "general.type = \"imatrix\")",
         path);
  const std::string* type_str = type->get_if<std::string>();
  if (!type_str || *type_str != "imatrix")
    fail("{}: not an importance matrix: general.type is {}, not \"imatrix\"", path,
         type->to_display());

  ImportanceMatrix im;
  im.path = path;
  if (const gguf::Value* d = file.find("imatrix.datasets")) {
    const auto* list = d->get_if<std::vector<std::string>>();
    if (!list)
      fail("{}: imatrix.datasets must be an array of strings, got {}", path, d->to_display());
    // The names go into JSON (imatrix_description: outputs and plans), which must be UTF-8:
    // dump() would throw nlohmann's type_error far from here.
    for (size_t i = 0; i < list->size(); ++i) {
      try {
        (void)nlohmann::json((*list)[i]).dump();
      } catch (const nlohmann::json::type_error&) {
        fail("{}: imatrix.datasets entry {} is not valid UTF-8", path, i);
      }
    }
    im.datasets = *list;
  }
  im.chunk_count = file.get_as<uint32_t>("imatrix.chunk_count");
  im.chunk_size = file.get_as<uint32_t>("imatrix.chunk_size");

  struct Parts {
    const gguf::TensorInfo* in_sum2 = nullptr;
    const gguf::TensorInfo* counts = nullptr;
    const gguf::TensorInfo* in_sum = nullptr;
  };
  std::map<std::string, Parts> parts;
  for (const auto& t : file.tensors()) {
    std::string base = t.name;
    const gguf::TensorInfo** slot = nullptr;
    if (strip_suffix(&base, kInSum2))
      slot = &parts[base].in_sum2;
    else if (strip_suffix(&base, kCounts))
      slot = &parts[base].counts;
    else if (strip_suffix(&base, kInSum))
      slot = &parts[base].in_sum;
    else
      fail("{}: tensor '{}' is not an importance matrix part (<name>.in_sum2, <name>.counts or "
           "<name>.in_sum)",
           path, t.name);
    if (t.type != gguf::GgmlType::kF32)
      fail("{}: tensor '{}' is {}; importance matrices are F32", path, t.name,
           gguf::type_name(t.type));
    *slot = &t;
  }
  if (parts.empty()) fail("{}: the importance matrix holds no entries", path);

  // This model's matrices under the names its GGUF files use.
  const auto name_of = gguf_names(model);
  std::map<std::string, std::vector<const Param*>> by_file_name;  // a stack: its experts in order
  for (const Param* p : model.weights().components())
    if (collected(*p)) {
      const auto [expert, n_expert] = expert_slot(model, p->name);
      auto& slots = by_file_name[name_of(p->name)];
      slots.resize(static_cast<size_t>(n_expert), nullptr);
      slots[static_cast<size_t>(expert)] = p;
    }

  auto read_floats = [&](const gguf::TensorInfo& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    if (!v.empty()) std::memcpy(v.data(), t.data, v.size() * sizeof(float));
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]) || v[i] < 0.0f)
        fail("{}: tensor '{}' holds {} at element {}; sums of squares and counts are finite and "
             "non-negative",
             path, t.name, v[i], i);
    return v;
  };

  for (const auto& [name, part] : parts) {
    if (!part.in_sum2 || !part.counts)
      fail("{}: '{}' has {} but no {} (every entry is a pair <name>.in_sum2, <name>.counts)", path,
           name, part.in_sum2 ? kInSum2 : (part.counts ? kCounts : kInSum),
           part.in_sum2 ? kCounts : kInSum2);
    const auto& sums_ne = part.in_sum2->ne;
    if (sums_ne.empty() || sums_ne.size() > 2)
      fail("{}: '{}{}' has {} dimensions; it is {{cols}} or {{cols, n_mat}}", path, name, kInSum2,
           sums_ne.size());
    const int64_t cols = sums_ne[0];
    const int64_t n_mat = sums_ne.size() == 2 ? sums_ne[1] : 1;
    if (cols < 1 || n_mat < 1)
      fail("{}: '{}{}' is empty ({} columns, {} matrices)", path, name, kInSum2, cols, n_mat);
    if (part.counts->numel() != n_mat)
      fail("{}: '{}{}' holds {} values but '{}{}' has {} matrices of {} columns", path, name,
           kCounts, part.counts->numel(), name, kInSum2, n_mat, cols);
    if (part.in_sum && part.in_sum->numel() != part.in_sum2->numel())
      fail("{}: '{}{}' holds {} values but '{}{}' holds {}", path, name, kInSum,
           part.in_sum->numel(), name, kInSum2, part.in_sum2->numel());

    const auto it = by_file_name.find(name);
    if (it == by_file_name.end()) {
      const std::string example = by_file_name.empty() ? "none" : by_file_name.begin()->first;
      fail("{}: '{}' is not a matrix of this model ({}; its matrices are named like '{}'): an "
           "importance matrix for another model?",
           path, name, model_summary(model), example);
    }
    const std::vector<const Param*>& slots = it->second;
    const Param& p = *slots.front();
    if (n_mat != static_cast<int64_t>(slots.size()))
      fail("{}: '{}' holds {} matrices of {} columns, but this model's {} is {}", path, name,
           n_mat, cols, slots.size() == 1 ? p.name : name,
           slots.size() == 1 ? "one " + shape_str(p.shape) + " matrix"
                             : fmt::format("a stack of {} experts", slots.size()));
    if (cols != p.cols())
      fail("{}: '{}' has {} columns in the importance matrix, but this model's {} {} has {}: an "
           "importance matrix for another model?",
           path, name, cols, p.name, shape_str(p.shape), p.cols());

    const std::vector<float> sums = read_floats(*part.in_sum2), counts = read_floats(*part.counts);
    for (size_t m = 0; m < slots.size(); ++m) {
      ImatrixEntry e;
      e.file_name = name;
      e.cols = cols;
      e.in_sum2.assign(sums.begin() + static_cast<int64_t>(m) * cols,
                       sums.begin() + static_cast<int64_t>(m + 1) * cols);
      e.counts = {counts[m]};
      fill_importance(e);
      im.entries.emplace(slots[m]->name, std::move(e));
    }
  }
  im.sha256 = sha256_file_hex(path);
  return im;
}

nlohmann::json imatrix_description(const ImportanceMatrix& im) {
  return {{"file", im.path},
          {"sha256", im.sha256},
          {"datasets", im.datasets},
          {"chunk_count", im.chunk_count},
          {"chunk_size", im.chunk_size},
          {"entries", im.entries.size()}};
}

ImportanceFn importance_fn(const ImportanceMatrix& im) {
  const ImportanceMatrix* m = &im;
  return [m](const Param& p) { return m->importance(p); };
}

}  // namespace kllens
