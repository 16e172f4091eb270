// Reusable activation buffers for the forward passes. A fresh std::vector per operation cost a
// 1.5B hybrid prefill 11% of its time in the kernel zeroing new pages (each large vector is a new
// mmap, faulted in page by page, then value-initialized on top); a buffer kept from the previous
// layer, token or window is already mapped and is not cleared.
//
// Use: one buffer per call site and thread, `thread_local Scratch<float> buf; float* x = buf.get(n);`.
// Rules that follow from that:
//  - get() returns n elements with UNSPECIFIED contents (the previous call's values, or
//    uninitialized memory). A caller that accumulates, writes part of the buffer or needs zeros
//    asks for zeroed() (or fills the buffer itself).
//  - The pointer is valid until the next get() on the same buffer: a call site must not be
//    re-entered while its buffer is in use (forward passes are not recursive), and the buffer must
//    not outlive the call (results handed to callers stay owned vectors).
//  - thread_local makes concurrent forward passes (sweeps, OpenMP workers) safe; each thread keeps
//    its largest request of each call site for its lifetime.
// Why hand-written: no Debian library offers a grow-only, non-clearing buffer (std::pmr resources
// would still need one kept alive per call site, which is this class with more steps), and the
// whole facility is one growing array.
//
// Debug builds (or -DKLLENS_SCRATCH_POISON) fill every get() with NaN, so that code reading a
// buffer before writing it shows up as NaN logits instead of silently depending on leftovers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <type_traits>

#if !defined(NDEBUG) && !defined(KLLENS_SCRATCH_POISON)
#define KLLENS_SCRATCH_POISON 1
#endif

namespace kllens {

template <typename T>
class Scratch {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "Scratch hands out raw storage; T must need no construction");

 public:
  // n elements, contents unspecified. Grows to exactly n when n exceeds the capacity (the old
  // contents are dropped, not copied); never shrinks.
  T* get(size_t n) {
    if (n > capacity_) {
      // new T[n] default-initializes: for arithmetic T that is no write at all.
      data_.reset(new T[n]);
      capacity_ = n;
    }
#ifdef KLLENS_SCRATCH_POISON
    if constexpr (std::numeric_limits<T>::has_quiet_NaN)
      std::fill_n(data_.get(), n, std::numeric_limits<T>::quiet_NaN());
    else
      std::fill_n(data_.get(), n, static_cast<T>(0x5a5a5a5a5a5a5a5aull));
#endif
    return data_.get();
  }
  // get(n) filled with zeros: for buffers that are accumulated into, written in part, or are a
  // fresh recurrent state.
  T* zeroed(size_t n) {
    T* p = get(n);
    std::fill_n(p, n, T{});
    return p;
  }
  size_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<T[]> data_;
  size_t capacity_ = 0;
};

using ScratchVec = Scratch<float>;

}  // namespace kllens
