#include "io/pytorch_checkpoint.h"

#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace kllens {

namespace {

// Python's pickle has no schema, and no Debian library reads it without running it, so this is
// a small interpreter of its stack machine that builds plain values in an arena. Values refer to
// each other by index, so a hostile pickle (a list holding itself, a chain nested a million
// deep) costs memory in proportion to its bytes and nothing is ever walked recursively.
enum class Kind : uint8_t {
  kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor
};
enum class Global : uint8_t { kOrderedDict, kRebuildTensorV2, kRebuildParameter, kStorageType };

// Kept small (48 bytes): a pickle of n bytes makes at most n values.
struct Value {
  Kind kind = Kind::kNone;
  Global global = Global::kOrderedDict;
  DType dtype = DType::kF32;    // storage type, storage, tensor
  int32_t ref = -1;             // strings_ index (string, bytes, global name, storage key); tensors_ index
  int64_t i = 0;                // bool, int; a storage's numel
  double f = 0;
  std::vector<int32_t> items;   // tuple, list; dict: key, value, key, value, ...
};
struct TensorInfo {
  int32_t storage = -1;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> shape;
};
// Far above any state dict's pickle (a 70B model's is ~100 KB: a few hundred bytes per tensor),
// so that the arena's size stays bounded.
constexpr size_t kMaxPickleBytes = size_t{16} << 20;

struct StorageClass {
  const char* name;
  DType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", DType::kF32},   {"HalfStorage", DType::kF16},   {"BFloat16Storage", DType::kBF16},
    {"DoubleStorage", DType::kF64},  {"LongStorage", DType::kI64},   {"IntStorage", DType::kI32},
    {"ShortStorage", DType::kI16},   {"CharStorage", DType::kI8},    {"ByteStorage", DType::kU8},
    {"BoolStorage", DType::kBool},
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "a bool";
    case Kind::kInt: return "an int";
    case Kind::kFloat: return "a float";
    case Kind::kString: return "a string";
    case Kind::kBytes: return "bytes";
    case Kind::kTuple: return "a tuple";
    case Kind::kList: return "a list";
    case Kind::kDict: return "a dict";
    case Kind::kGlobal: return "a class or function";
    case Kind::kStorage: return "a storage";
    case Kind::kTensor: return "a tensor";
  }
  return "?";
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> in, const std::map<std::string, std::span<const std::byte>>& storages,
            const std::string& path)
      : in_(in), storages_(storages), path_(path) {}

  std::map<std::string, TensorView> run() {
    if (in_.size() > kMaxPickleBytes)
      fail("{}: data.pkl is {} bytes, beyond the {} a state dict's pickle could need", path_,
           in_.size(), kMaxPickleBytes);
    while (true) {
      const size_t at = pos_;
      const auto op = static_cast<uint8_t>(byte());
      if (op == '.') break;  // STOP
      step(op, at);
    }
    if (stack_.size() != 1 || !marks_.empty())
      bad(pos_, "ends with {} values on the stack, not one", stack_.size());
    return state_dict(stack_.back());
  }

 private:
  std::span<const std::byte> in_;
  const std::map<std::string, std::span<const std::byte>>& storages_;
  const std::string& path_;
  size_t pos_ = 0;
  std::vector<Value> arena_;
  std::vector<int32_t> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, int32_t> memo_;  // a map: an index of 2^32 must not size a vector
  std::vector<std::string> strings_;
  std::vector<TensorInfo> tensors_;

  const std::string& str(int32_t v) const { return strings_[arena_[v].ref]; }
  int32_t add_string(std::string s) {
    strings_.push_back(std::move(s));
    return static_cast<int32_t>(strings_.size() - 1);
  }

  template <typename... Args>
  [[noreturn]] void bad(size_t at, fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: data.pkl at byte {}: {}", path_, at, fmt::format(format, std::forward<Args>(args)...));
  }

  std::byte byte() {
    if (pos_ >= in_.size()) bad(pos_, "the pickle ends without its STOP opcode");
    return in_[pos_++];
  }
  std::span<const std::byte> take(uint64_t n) {
    if (n > in_.size() - pos_) bad(pos_, "a length of {} runs past the end of the pickle", n);
    const auto out = in_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return out;
  }
  template <typename T>
  T little() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::string text(uint64_t n) {
    const auto b = take(n);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  std::string line() {
    std::string out;
    while (true) {
      const char c = static_cast<char>(byte());
      if (c == '\n') return out;
      out += c;
    }
  }

  int32_t make(Value v) {
    if (arena_.size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      bad(pos_, "too many values");
    arena_.push_back(std::move(v));
    return static_cast<int32_t>(arena_.size() - 1);
  }
  void push(Value v) { stack_.push_back(make(std::move(v))); }
  int32_t pop(size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back()))
      bad(at, "pops an empty stack");
    const int32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  int32_t top(size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back()))
      bad(at, "reads an empty stack");
    return stack_.back();
  }
  std::vector<int32_t> pop_to_mark(size_t at) {
    if (marks_.empty()) bad(at, "needs a MARK that is not there");
    std::vector<int32_t> out(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return out;
  }
  Value& at_kind(int32_t v, Kind kind, size_t at, const char* what) {
    if (arena_[v].kind != kind) bad(at, "{} is {}, not {}", what, kind_name(arena_[v].kind), kind_name(kind));
    return arena_[v];
  }
  void push_int(int64_t v) {
    Value x;
    x.kind = Kind::kInt;
    x.i = v;
    push(std::move(x));
  }
  void push_text(Kind kind, std::string s) {
    Value x;
    x.kind = kind;
    x.ref = add_string(std::move(s));
    push(std::move(x));
  }
  void memo_put(uint64_t index, size_t at) { memo_[index] = top(at); }
  void memo_get(uint64_t index, size_t at) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) bad(at, "reads memo entry {}, which was never stored", index);
    stack_.push_back(it->second);
  }

  void push_global(const std::string& module, const std::string& name, size_t at) {
    Value g;
    g.kind = Kind::kGlobal;
    const std::string qualified = module + "." + name;
    bool known = true;
    if (module == "collections" && name == "OrderedDict") {
      g.global = Global::kOrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g.global = Global::kRebuildTensorV2;
    } else if (module == "torch._utils" &&
               (name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state")) {
      g.global = Global::kRebuildParameter;
    } else {
      known = false;
      if (module == "torch")
        for (const auto& c : kStorageClasses)
          if (name == c.name) {
            g.global = Global::kStorageType;
            g.dtype = c.dtype;
            known = true;
          }
    }
    if (!known)
      bad(at, "asks for the global '{}', which a state dict never uses; refused (kllens runs no "
              "code from a checkpoint)",
          qualified);
    g.ref = add_string(qualified);
    push(std::move(g));
  }

  void reduce(size_t at) {
    const int32_t args = pop(at), callable = pop(at);
    const Global f = at_kind(callable, Kind::kGlobal, at, "REDUCE's callable").global;
    const std::string& name = str(callable);
    const std::vector<int32_t> a = at_kind(args, Kind::kTuple, at, "REDUCE's arguments").items;
    switch (f) {
      case Global::kOrderedDict: {
        if (!a.empty()) bad(at, "OrderedDict is called with {} arguments; a state dict's has none", a.size());
        Value d;
        d.kind = Kind::kDict;
        push(std::move(d));
        return;
      }
      case Global::kRebuildParameter: {
        // (data, requires_grad, backward_hooks[, state]): the parameter is its tensor.
        if (a.size() != 3 && a.size() != 4) bad(at, "{} takes 3 or 4 arguments, not {}", name, a.size());
        at_kind(a[0], Kind::kTensor, at, "a parameter's data");
        stack_.push_back(a[0]);
        return;
      }
      case Global::kRebuildTensorV2: return push(rebuild_tensor(a, at));
      case Global::kStorageType: bad(at, "calls the storage class {}, which torch.save never does", name);
    }
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[,
  // metadata]).
  Value rebuild_tensor(const std::vector<int32_t>& a, size_t at) {
    if (a.size() != 6 && a.size() != 7)
      bad(at, "_rebuild_tensor_v2 takes 6 or 7 arguments, not {}", a.size());
    const Value& storage = at_kind(a[0], Kind::kStorage, at, "a tensor's storage");
    const int64_t offset = at_kind(a[1], Kind::kInt, at, "a tensor's storage offset").i;
    const auto ints = [&](int32_t v, const char* what) {
      std::vector<int64_t> out;
      for (int32_t x : at_kind(v, Kind::kTuple, at, what).items) out.push_back(at_kind(x, Kind::kInt, at, what).i);
      return out;
    };
    const std::vector<int64_t> shape = ints(a[2], "a tensor's size"), stride = ints(a[3], "a tensor's stride");
    if (shape.size() != stride.size())
      bad(at, "a tensor has {} sizes but {} strides", shape.size(), stride.size());
    if (shape.size() > 8) bad(at, "a tensor has {} dimensions", shape.size());
    // Sizes, offset and extent against the storage, overflow-checked: a storage holds at most
    // its record's bytes, so every product below is bounded by the file size once checked.
    if (offset < 0 || offset > storage.i) bad(at, "storage offset {} is outside its storage of {} elements", offset, storage.i);
    const int64_t room = storage.i - offset;
    bool fits = true, empty = false;
    int64_t numel = 1;
    for (int64_t d : shape) {
      if (d < 0) bad(at, "a tensor has the negative size {}", d);
      empty |= d == 0;
    }
    for (int64_t d : shape) {
      if (empty) break;
      if (numel > room / d) fits = false;  // numel * d > room, found without overflowing
      if (!fits) break;
      numel *= d;
    }
    if (empty) numel = 0;
    if (!fits)
      bad(at, "a tensor of size {} from offset {} does not fit its storage of {} elements",
          shape_str(shape), offset, storage.i);
    // Only contiguous (row-major) tensors are read in place; a dimension of size 1 may carry any
    // stride, as torch's own is_contiguous allows.
    int64_t expected = 1;
    for (size_t d = shape.size(); d-- > 0;) {
      if (shape[d] != 1 && numel != 0 && stride[d] != expected)
        bad(at, "a tensor of size {} has strides {}, not contiguous; kllens reads only contiguous "
                "tensors (save a .contiguous() copy)",
            shape_str(shape), shape_str(stride));
      expected *= shape[d] == 0 ? 1 : shape[d];
    }
    Value t;
    t.kind = Kind::kTensor;
    t.dtype = storage.dtype;
    tensors_.push_back({a[0], offset, shape});
    t.ref = static_cast<int32_t>(tensors_.size() - 1);
    return t;
  }

  // BINPERSID's id: ("storage", storage class, key, location, numel).
  void persistent_load(size_t at) {
    const Value& id = at_kind(pop(at), Kind::kTuple, at, "a persistent id");
    if (id.items.size() != 5) bad(at, "a persistent id has {} fields, not torch's 5", id.items.size());
    const std::vector<int32_t> f = id.items;
    at_kind(f[0], Kind::kString, at, "a persistent id's tag");
    if (str(f[0]) != "storage") bad(at, "a persistent id is tagged '{}', not 'storage'", str(f[0]));
    const Value& type = at_kind(f[1], Kind::kGlobal, at, "a storage's type");
    if (type.global != Global::kStorageType) bad(at, "a storage's type is {}", str(f[1]));
    const DType dtype = type.dtype;
    at_kind(f[2], Kind::kString, at, "a storage's key");
    const std::string key = str(f[2]);
    at_kind(f[3], Kind::kString, at, "a storage's location");
    const int64_t numel = at_kind(f[4], Kind::kInt, at, "a storage's size").i;
    const auto it = storages_.find(key);
    if (it == storages_.end()) bad(at, "storage '{}' has no data/{} entry in the archive", key, key);
    const auto elem = static_cast<int64_t>(dtype_size(dtype));
    if (numel < 0 || static_cast<uint64_t>(numel) != it->second.size() / static_cast<uint64_t>(elem) ||
        it->second.size() % static_cast<uint64_t>(elem) != 0)
      bad(at, "storage '{}' says {} elements of {} bytes, but its entry holds {} bytes", key, numel,
          elem, it->second.size());
    Value s;
    s.kind = Kind::kStorage;
    s.dtype = dtype;
    s.ref = add_string(key);
    s.i = numel;
    push(std::move(s));
  }

  void step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: {  // PROTO
        const auto v = static_cast<uint8_t>(byte());
        if (v < 2 || v > 5) bad(at, "pickle protocol {}; torch.save writes 2", v);
        return;
      }
      case 0x95: (void)little<uint64_t>(); return;  // FRAME: a length hint, the opcodes follow inline
      case '(': marks_.push_back(stack_.size()); return;
      case ')': { Value t; t.kind = Kind::kTuple; return push(std::move(t)); }
      case ']': { Value l; l.kind = Kind::kList; return push(std::move(l)); }
      case '}': { Value d; d.kind = Kind::kDict; return push(std::move(d)); }
      case 't': case 'l': {  // TUPLE, LIST
        Value t;
        t.kind = op == 't' ? Kind::kTuple : Kind::kList;
        t.items = pop_to_mark(at);
        return push(std::move(t));
      }
      case 'd': {  // DICT
        Value d;
        d.kind = Kind::kDict;
        d.items = pop_to_mark(at);
        if (d.items.size() % 2) bad(at, "DICT has an odd number of items");
        return push(std::move(d));
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        Value t;
        t.kind = Kind::kTuple;
        t.items.resize(op - 0x84);
        for (size_t k = t.items.size(); k-- > 0;) t.items[k] = pop(at);
        return push(std::move(t));
      }
      case 'a': {  // APPEND
        const int32_t v = pop(at);
        at_kind(top(at), Kind::kList, at, "APPEND's target").items.push_back(v);
        return;
      }
      case 'e': {  // APPENDS
        const std::vector<int32_t> vs = pop_to_mark(at);
        auto& items = at_kind(top(at), Kind::kList, at, "APPENDS's target").items;
        items.insert(items.end(), vs.begin(), vs.end());
        return;
      }
      case 's': {  // SETITEM
        const int32_t v = pop(at), k = pop(at);
        auto& items = at_kind(top(at), Kind::kDict, at, "SETITEM's target").items;
        items.push_back(k);
        items.push_back(v);
        return;
      }
      case 'u': {  // SETITEMS
        const std::vector<int32_t> kv = pop_to_mark(at);
        if (kv.size() % 2) bad(at, "SETITEMS has an odd number of items");
        auto& items = at_kind(top(at), Kind::kDict, at, "SETITEMS's target").items;
        items.insert(items.end(), kv.begin(), kv.end());
        return;
      }
      case 'N': { Value n; return push(std::move(n)); }
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        Value b;
        b.kind = Kind::kBool;
        b.i = op == 0x88;
        return push(std::move(b));
      }
      case 'J': return push_int(little<int32_t>());
      case 'K': return push_int(static_cast<uint8_t>(byte()));
      case 'M': return push_int(little<uint16_t>());
      case 0x8a: {  // LONG1: n bytes, two's complement, little-endian
        const auto n = static_cast<uint8_t>(byte());
        if (n > 8) bad(at, "an integer of {} bytes, beyond 64 bits", n);
        const auto b = take(n);
        uint64_t u = 0;
        for (size_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
        return push_int(static_cast<int64_t>(u));
      }
      case 'G': {  // BINFLOAT: big-endian double
        const auto b = take(8);
        uint64_t u = 0;
        for (size_t k = 0; k < 8; ++k) u = (u << 8) | static_cast<uint8_t>(b[k]);
        Value x;
        x.kind = Kind::kFloat;
        x.f = std::bit_cast<double>(u);
        return push(std::move(x));
      }
      case 'X': case 'T': return push_text(Kind::kString, text(little<uint32_t>()));
      case 0x8c: case 'U': return push_text(Kind::kString, text(static_cast<uint8_t>(byte())));
      case 0x8d: return push_text(Kind::kString, text(little<uint64_t>()));
      case 'B': return push_text(Kind::kBytes, text(little<uint32_t>()));
      case 'C': return push_text(Kind::kBytes, text(static_cast<uint8_t>(byte())));
      case 0x8e: return push_text(Kind::kBytes, text(little<uint64_t>()));
      case 'c': {  // GLOBAL: "module\nname\n"
        const std::string module = line();
        return push_global(module, line(), at);
      }
      case 0x93: {  // STACK_GLOBAL
        const int32_t name = pop(at), module = pop(at);
        at_kind(name, Kind::kString, at, "STACK_GLOBAL's name");
        at_kind(module, Kind::kString, at, "STACK_GLOBAL's module");
        return push_global(str(module), str(name), at);
      }
      case 'q': return memo_put(static_cast<uint8_t>(byte()), at);
      case 'r': return memo_put(little<uint32_t>(), at);
      case 0x94: return memo_put(memo_.size(), at);  // MEMOIZE
      case 'h': return memo_get(static_cast<uint8_t>(byte()), at);
      case 'j': return memo_get(little<uint32_t>(), at);
      case 'Q': return persistent_load(at);
      case 'R': return reduce(at);
      case 'b': {  // BUILD: an OrderedDict's attributes (a state dict's _metadata), not needed
        (void)pop(at);
        at_kind(top(at), Kind::kDict, at, "BUILD's target");
        return;
      }
      case '0': (void)pop(at); return;  // POP
      default: break;
    }
    const char c = static_cast<char>(op);
    bad(at, "opcode 0x{:02x}{}, which a state dict does not use; refused", op,
        c >= 0x21 && c < 0x7f ? fmt::format(" ('{}')", c) : std::string());
  }

  std::map<std::string, TensorView> state_dict(int32_t root) {
    const Value& d = arena_[root];
    if (d.kind != Kind::kDict)
      fail("{}: data.pkl holds {}, not a state dict (a dict of tensors)", path_, kind_name(d.kind));
    std::map<std::string, TensorView> out;
    for (size_t k = 0; k + 1 < d.items.size(); k += 2) {
      const Value& key = arena_[d.items[k]];
      const Value& value = arena_[d.items[k + 1]];
      if (key.kind != Kind::kString)
        fail("{}: data.pkl's dict has a key that is {}, not a tensor name", path_, kind_name(key.kind));
      if (value.kind != Kind::kTensor)
        fail("{}: data.pkl's '{}' is {}, not a tensor (a training checkpoint rather than a state "
             "dict?)",
             path_, strings_[key.ref], kind_name(value.kind));
      const TensorInfo& info = tensors_[value.ref];
      const auto elem = dtype_size(value.dtype);
      const std::string& name = strings_[key.ref];
      TensorView v;
      v.name = name;
      v.dtype = value.dtype;
      v.shape = info.shape;
      v.data = storages_.at(str(info.storage)).data() + static_cast<size_t>(info.offset) * elem;
      v.nbytes = static_cast<size_t>(v.numel()) * elem;
      v.file = &path_;
      if (!out.emplace(name, std::move(v)).second)
        fail("{}: data.pkl names tensor '{}' twice", path_, name);
    }
    return out;
  }
};

}  // namespace

std::map<std::string, TensorView> unpickle_state_dict(
    std::span<const std::byte> pickle, const std::map<std::string, std::span<const std::byte>>& storages,
    const std::string& path) {
  return Unpickler(pickle, storages, path).run();
}

PytorchCheckpoint::PytorchCheckpoint(const std::string& path) : zip_(path) {
  // torch.save puts every record under one folder named after the file ("archive/" since
  // PyTorch 1.13, the file's stem before).
  std::string prefix;
  for (const auto& [name, bytes] : zip_.entries()) {
    const size_t slash = name.find('/');
    if (slash == std::string::npos || name.substr(slash) != "/data.pkl") continue;
    if (!prefix.empty()) fail("{}: the archive holds two pickles, {}data.pkl and {}", path, prefix, name);
    prefix = name.substr(0, slash + 1);
  }
  if (prefix.empty()) fail("{}: a ZIP archive without a data.pkl, not a torch.save checkpoint", path);
  if (const auto* order = zip_.find(prefix + "byteorder")) {
    const std::string_view text(reinterpret_cast<const char*>(order->data()), order->size());
    if (text != "little")
      fail("{}: written on a '{}'-endian machine; kllens reads little-endian checkpoints", path, text);
  }
  std::map<std::string, std::span<const std::byte>> storages;
  const std::string data = prefix + "data/";
  for (const auto& [name, bytes] : zip_.entries())
    if (name.compare(0, data.size(), data) == 0) storages.emplace(name.substr(data.size()), bytes);
  tensors_ = unpickle_state_dict(*zip_.find(prefix + "data.pkl"), storages, zip_.path());
}

}  // namespace kllens
