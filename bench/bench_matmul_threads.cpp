// Float32 prefill products on two threads: kllens' own split of the output columns (one
// single-threaded BLIS call per thread, ops::matmul_nt) against one BLIS call with BLIS's own two
// threads, for the linear shapes of the models the README measures (T = 512 tokens). Decides
// which threading ops::matmul_nt uses (the packed-runtime issue, item 4). A benchmark, not a
// test:
//   build/bench_matmul_threads --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
//       --benchmark_report_aggregates_only=true
// (random interleaving runs the two variants' repetitions in alternation, as the machine is
// shared and noisy). GFLOP/s is the "FLOPS" counter.
#include <benchmark/benchmark.h>
#include <blis.h>
#include <cblas.h>

#include <random>
#include <vector>

#include "kernels/ops.h"

namespace {

struct Shape {
  const char* name;
  int64_t N, K;  // W is {N, K}: y {T, N} = x {T, K} · Wᵀ
};

// mamba-130m, mamba-1.4b and hymba-1.5b (d_model 1600, MLP 5504, vocabulary 32001).
const Shape kShapes[] = {
    {"130m_in_proj", 3072, 768},   {"130m_out_proj", 768, 1536},  {"130m_x_proj", 80, 1536},
    {"1.4b_in_proj", 8192, 2048},  {"1.4b_out_proj", 2048, 4096}, {"1.4b_x_proj", 160, 4096},
    {"1.4b_dt_proj", 4096, 128},   {"hymba_mlp_up", 5504, 1600}, {"hymba_mlp_down", 1600, 5504},
    {"hymba_head", 32001, 1600},
};
constexpr int64_t kTokens = 512;

std::vector<float> random_vector(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = normal(rng);
  return v;
}

void run(benchmark::State& state, const Shape& s, bool blis_threads) {
  const auto x = random_vector(static_cast<size_t>(kTokens * s.K), 1);
  const auto w = random_vector(static_cast<size_t>(s.N * s.K), 2);
  std::vector<float> y(static_cast<size_t>(kTokens * s.N));
  kllens::set_num_threads(2);  // leaves BLIS single-threaded
  for (auto _ : state) {
    if (blis_threads) {
      bli_thread_set_num_threads(2);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kTokens, static_cast<int>(s.N),
                  static_cast<int>(s.K), 1.0f, x.data(), static_cast<int>(s.K), w.data(),
                  static_cast<int>(s.K), 0.0f, y.data(), static_cast<int>(s.N));
      bli_thread_set_num_threads(1);
    } else {
      kllens::ops::matmul_nt(y.data(), x.data(), w.data(), nullptr, kTokens, s.N, s.K);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * kTokens * s.N * s.K,
                                               benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

const int kRegistered = [] {
  for (const Shape& s : kShapes) {
    benchmark::RegisterBenchmark((std::string(s.name) + "/own_split").c_str(),
                                 [s](benchmark::State& st) { run(st, s, false); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string(s.name) + "/blis_threads").c_str(),
                                 [s](benchmark::State& st) { run(st, s, true); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
