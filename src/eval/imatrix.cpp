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
#include "models/llama_names.h"
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

// The model's config.json, for the layout decision (models/llama_names.h). A model loaded from a
// GGUF file has no folder left; the one key the decision reads, Mamba-2's n_groups, is in the
// family's details.
nlohmann::json model_config(const Model& model) {
  const auto path = std::filesystem::path(model.info().folder) / "config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return read_json_file(path.string());
  nlohmann::json config = nlohmann::json::object();
  for (const auto& [key, value] : model.info().details)
    if (key == "n_groups") config["n_groups"] = std::stoll(value);
  return config;
}

// HF name -> name in the file, for this model.
std::function<std::string(const std::string&)> gguf_names(const Model& model) {
  const std::string& arch = model.info().arch;
  if ((arch != "mamba" && arch != "mamba2") || !uses_llama_layout(model, model_config(model)))
    return [](const std::string& hf) { return hf; };
  const bool mamba2 = arch == "mamba2";
  return [mamba2](const std::string& hf) {
    const auto t = llama_tensor(hf, mamba2);
    return t ? t->name : hf;
  };
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
  std::map<std::string, const ImatrixEntry*> by_file_name;  // llama.cpp writes names sorted
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
    by_file_name[name] = &e;
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
  // Every kllens matrix is one 2-D tensor (experts are separate tensors): ne {cols} and {1}, as
  // llama.cpp writes a dense matrix.
  for (const auto& [name, e] : by_file_name) {
    w.add_tensor(name + kInSum2, {e->cols}, gguf::GgmlType::kF32, f32_bytes(e->in_sum2));
    w.add_tensor(name + kCounts, {1}, gguf::GgmlType::kF32, f32_bytes(e->counts));
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
  std::map<std::string, const Param*> by_file_name;
  for (const Param* p : model.weights().components())
    if (collected(*p)) by_file_name[name_of(p->name)] = p;

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
    const Param& p = *it->second;
    if (n_mat != 1)
      fail("{}: '{}' holds {} matrices of {} columns (merged experts), but this model's {} is one "
           "{} matrix",
           path, name, n_mat, cols, p.name, shape_str(p.shape));
    if (cols != p.cols())
      fail("{}: '{}' has {} columns in the importance matrix, but this model's {} {} has {}: an "
           "importance matrix for another model?",
           path, name, cols, p.name, shape_str(p.shape), p.cols());

    ImatrixEntry e;
    e.file_name = name;
    e.cols = cols;
    e.in_sum2 = read_floats(*part.in_sum2);
    e.counts = read_floats(*part.counts);
    fill_importance(e);
    im.entries.emplace(p.name, std::move(e));
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
