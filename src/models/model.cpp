#include "models/model.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "quant/qmatmul.h"

namespace kllens {

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kEmbed: return "embed";
    case Role::kHead: return "head";
    case Role::kInProj: return "in_proj";
    case Role::kXProj: return "x_proj";
    case Role::kDtProj: return "dt_proj";
    case Role::kOutProj: return "out_proj";
    case Role::kConv1d: return "conv1d";
    case Role::kQ: return "q_proj";
    case Role::kK: return "k_proj";
    case Role::kV: return "v_proj";
    case Role::kO: return "o_proj";
    case Role::kGate: return "gate_proj";
    case Role::kUp: return "up_proj";
    case Role::kDown: return "down_proj";
    case Role::kRouter: return "router";
    case Role::kMetaTokens: return "meta_tokens";
    case Role::kNorm: return "norm";
    case Role::kBias: return "bias";
    case Role::kSsmA: return "A_log";
    case Role::kSsmD: return "D";
    case Role::kDtBias: return "dt_bias";
    case Role::kOther: return "other";
  }
  return "other";
}

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool Param::is_component() const {
  const std::string suffix = ".weight";
  return shape.size() >= 2 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

namespace {
thread_local const PackedTensorScope::Map* g_packed_scope = nullptr;
}

PackedTensorScope::PackedTensorScope(Map tensors)
    : tensors_(std::move(tensors)), previous_(g_packed_scope) {
  g_packed_scope = &tensors_;
}

PackedTensorScope::~PackedTensorScope() { g_packed_scope = previous_; }

const PackedTensorScope::Map* PackedTensorScope::current() { return g_packed_scope; }

namespace {

// Where the store holds a spec's values: the tensor of its name, or its rows of `source`
// (nullopt: neither is there). Fails naming the source when its shape is not the one declared.
std::optional<TensorView> find_spec_view(const TensorStore& store, const TensorSpec& spec) {
  if (const TensorView* view = store.find(spec.name)) return *view;
  if (spec.source.empty()) return std::nullopt;
  const TensorView* whole = store.find(spec.source);
  if (!whole) return std::nullopt;
  if (whole->shape != spec.source_shape)
    fail("{}: tensor '{}' has shape {} but the config implies {}", *whole->file, spec.source,
         shape_str(whole->shape), shape_str(spec.source_shape));
  // Rows of the source seen as a matrix of its last dimension: a 3-D stack of experts
  // {E, rows, cols} is E * rows rows of cols.
  const int64_t cols = whole->shape.empty() ? 0 : whole->shape.back();
  const int64_t rows = cols > 0 ? whole->numel() / cols : 0;
  KLLENS_CHECK(spec.shape.size() == 2 && spec.shape[1] == cols && spec.source_row >= 0 &&
                   spec.source_row + spec.shape[0] <= rows,
               "{} is not a row range of {} {}", spec.name, spec.source, shape_str(whole->shape));
  TensorView slice = *whole;
  slice.name = spec.name;
  slice.shape = spec.shape;
  const size_t row_bytes = whole->nbytes / static_cast<size_t>(rows);
  slice.data = whole->data + static_cast<size_t>(spec.source_row) * row_bytes;
  slice.nbytes = static_cast<size_t>(spec.shape[0]) * row_bytes;
  return slice;
}

}  // namespace

Weights Weights::load(const TensorStore& store, const std::vector<TensorSpec>& specs,
                      const std::string& folder) {
  Weights w;
  std::set<std::string> named;
  const PackedTensorScope::Map* packed = PackedTensorScope::current();
  auto packed_for = [&](const TensorSpec& spec) -> std::shared_ptr<const QTensor> {
    if (!packed) return nullptr;
    const auto it = packed->find(spec.name);
    return it == packed->end() ? nullptr : it->second;
  };
  // Validate everything first, so a bad file fails before any conversion work.
  for (const auto& spec : specs) {
    named.insert(spec.name);
    if (!spec.source.empty()) named.insert(spec.source);
    if (const auto q = packed_for(spec)) {
      int64_t numel = 1;
      for (int64_t d : spec.shape) numel *= d;
      if (!packable_role(spec.role) || spec.shape.empty() || q->rows != spec.shape[0] ||
          q->rows * q->cols != numel)
        fail("{}: packed tensor '{}' ({}, [{}, {}]) does not fit {} {}", folder, spec.name,
             q->scheme.to_string(), q->rows, q->cols, role_name(spec.role), shape_str(spec.shape));
      continue;
    }
    const std::optional<TensorView> view = find_spec_view(store, spec);
    if (!view) {
      if (spec.optional) continue;
      fail("{}: required tensor '{}' is missing", folder, spec.source.empty() ? spec.name : spec.source);
    }
    if (view->shape != spec.shape)
      fail("{}: tensor '{}' has shape {} but the config implies {}", *view->file, spec.name,
           shape_str(view->shape), shape_str(spec.shape));
    if (view->dtype != DType::kF32 && view->dtype != DType::kBF16 && view->dtype != DType::kF16)
      fail("{}: tensor '{}' has dtype {}; weights must be F32, BF16 or F16", *view->file,
           spec.name, dtype_name(view->dtype));
  }
  for (const auto& spec : specs) {
    if (auto q = packed_for(spec)) {
      auto p = std::make_unique<Param>();
      p->name = spec.name;
      p->role = spec.role;
      p->layer = spec.layer;
      p->shape = spec.shape;
      p->source_dtype = DType::kF32;
      p->packed = std::move(q);
      w.params_.push_back(std::move(p));
      continue;
    }
    const std::optional<TensorView> view = find_spec_view(store, spec);
    if (!view) continue;
    auto p = std::make_unique<Param>();
    p->name = spec.name;
    p->role = spec.role;
    p->layer = spec.layer;
    p->shape = spec.shape;
    p->source_dtype = view->dtype;
    p->value = view->to_f32();
    // A row range shares pages with the rest of its source, read later: released with the store.
    if (store.find(spec.name)) view->release_pages();
    w.params_.push_back(std::move(p));
  }
  for (const auto& name : store.names())
    if (!named.count(name)) w.unused_.push_back(name);
  // The float32 copies are what the forward pass reads; drop the mapped pages from the RSS.
  store.release_pages();
  return w;
}

Param* Weights::find(const std::string& name) {
  for (auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

const Param* Weights::find(const std::string& name) const {
  for (const auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

Param& Weights::get(const std::string& name) {
  Param* p = find(name);
  if (!p) fail("model has no tensor '{}'", name);
  return *p;
}

const Param& Weights::get(const std::string& name) const {
  const Param* p = find(name);
  if (!p) fail("model has no tensor '{}'", name);
  return *p;
}

std::vector<Param*> Weights::components() {
  std::vector<Param*> out;
  for (auto& p : params_)
    if (p->is_component()) out.push_back(p.get());
  return out;
}

std::vector<const Param*> Weights::components() const {
  std::vector<const Param*> out;
  for (const auto& p : params_)
    if (p->is_component()) out.push_back(p.get());
  return out;
}

int64_t Weights::total_params() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p->numel();
  return n;
}

namespace {
std::atomic<LinearObserver*> g_linear_observer{nullptr};
}

LinearObserverScope::LinearObserverScope(LinearObserver& observer)
    : previous_(g_linear_observer.exchange(&observer, std::memory_order_acq_rel)) {}

LinearObserverScope::~LinearObserverScope() {
  g_linear_observer.store(previous_, std::memory_order_release);
}

bool packable_role(Role role) {
  switch (role) {
    case Role::kEmbed: case Role::kHead: case Role::kInProj: case Role::kXProj:
    case Role::kDtProj: case Role::kOutProj: case Role::kQ: case Role::kK: case Role::kV:
    case Role::kO: case Role::kGate: case Role::kUp: case Role::kDown: case Role::kRouter:
      return true;
    default:
      return false;
  }
}

void linear(float* y, const float* x, const Param& w, const float* bias, int64_t T, int64_t N,
            int64_t K) {
  KLLENS_CHECK(w.rows() == N && w.cols() == K, "{} is [{}, {}], used as [{}, {}]", w.name,
               w.rows(), w.cols(), N, K);
  if (LinearObserver* observer = g_linear_observer.load(std::memory_order_acquire))
    observer->observe(w, x, T, K);
  if (w.packed)
    qmatmul_nt(y, x, *w.packed, bias, T);
  else
    ops::matmul_nt(y, x, w.value.data(), bias, T, N, K);
}

void embedding_row(const Param& table, int64_t row, float* out) {
  const int64_t D = table.cols();
  if (table.packed)
    dequantize_row(*table.packed, row, out);
  else
    std::copy_n(table.value.data() + row * D, D, out);
}

int64_t resident_weight_bytes(const Weights& weights) {
  int64_t bytes = 0;
  for (const auto& p : weights.all()) bytes += p->resident_bytes();
  return bytes;
}

void embed_tokens(const Param& table, std::span<const int32_t> ids, ForwardState& state) {
  const int64_t D = table.cols();
  state.rows = static_cast<int64_t>(ids.size());
  state.hidden.resize(static_cast<size_t>(state.rows * D));
  for (int64_t t = 0; t < state.rows; ++t) embedding_row(table, ids[t], state.hidden.data() + t * D);
  state.next_layer = 0;
}

std::vector<float> Model::forward(std::span<const int32_t> ids) const {
  auto state = start(ids);
  for (int l = 0; l < static_cast<int>(info_.n_layers); ++l) run_layer(l, *state);
  std::vector<float> logits(ids.size() * static_cast<size_t>(info_.vocab));
  finish(*state, logits.data());
  return logits;
}

namespace {
// A state holding only rows to hand to finish(): every family's finish() reads hidden and rows
// and drops the first n_prefix_tokens rows.
class RowsState : public ForwardState {
 public:
  std::unique_ptr<ForwardState> clone() const override { return std::make_unique<RowsState>(*this); }
};
}  // namespace

std::vector<float> Model::forward_last(std::span<const int32_t> ids) const {
  auto state = start(ids);
  for (int l = 0; l < static_cast<int>(info_.n_layers); ++l) run_layer(l, *state);
  const auto D = static_cast<size_t>(info_.d_model);
  const auto P = static_cast<size_t>(info_.n_prefix_tokens);
  RowsState last;
  last.rows = static_cast<int64_t>(P + 1);
  last.hidden.assign(state->hidden.begin(), state->hidden.begin() + static_cast<std::ptrdiff_t>(P * D));
  last.hidden.insert(last.hidden.end(), state->hidden.end() - static_cast<std::ptrdiff_t>(D), state->hidden.end());
  std::vector<float> logits(static_cast<size_t>(info_.vocab));
  finish(last, logits.data());
  return logits;
}

std::vector<float> Model::forward_decode(std::span<const int32_t> ids) const {
  check_ids(ids);
  auto state = new_decode_state();
  const auto V = static_cast<size_t>(info_.vocab);
  std::vector<float> logits(ids.size() * V);
  for (size_t t = 0; t < ids.size(); ++t) decode_step(*state, ids[t], logits.data() + t * V);
  return logits;
}

void Model::check_ids(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= info_.vocab)
      fail("token id {} at position {} is outside the vocabulary [0, {})", ids[i], i, info_.vocab);
}

}  // namespace kllens
