#include "core/cluster.h"

#include <climits>
#include <cstdlib>

#include "core/error.h"

#ifdef KLLENS_HAVE_MPI
#include <mpi.h>
#endif

namespace kllens {

namespace {
bool g_started = false;
}

bool Cluster::launched_by_mpi() {
  // A job of one process (`srun -n 1 kllens ppl ...`, `mpirun -np 1`) is an ordinary run.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* size = std::getenv(v); size && std::atoi(size) > 1) return true;
  return false;
}

Cluster::Cluster(bool join_mpi) {
  if (!join_mpi || !launched_by_mpi()) return;
#ifdef KLLENS_HAVE_MPI
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  g_started = true;
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
#else
  fail("this kllens was built without MPI (Open MPI's libopenmpi-dev was not found), so it cannot "
       "run under mpirun; rebuild with it installed, or run without mpirun");
#endif
}

const Cluster& Cluster::world() {
  static const Cluster cluster(true);
  return cluster;
}

const Cluster& Cluster::alone() {
  static const Cluster cluster(false);
  return cluster;
}

std::vector<std::string> Cluster::all_gather(const std::string& mine) const {
  if (!mpi_) return {mine};
#ifdef KLLENS_HAVE_MPI
  if (mine.size() > static_cast<size_t>(INT_MAX)) fail("a message of {} bytes is beyond MPI's int counts", mine.size());
  const int n = static_cast<int>(mine.size());
  std::vector<int> sizes(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  MPI_Allgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD);
  long long total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[static_cast<size_t>(r)] = static_cast<int>(total);
    total += sizes[static_cast<size_t>(r)];
    if (total > INT_MAX) fail("gathered messages of {} bytes are beyond MPI's int counts", total);
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(), MPI_CHAR,
                 MPI_COMM_WORLD);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r)
    out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                             static_cast<size_t>(sizes[static_cast<size_t>(r)])));
  return out;
#else
  return {mine};
#endif
}

std::string Cluster::broadcast(const std::string& value, int root) const {
  if (!mpi_) return value;
#ifdef KLLENS_HAVE_MPI
  if (value.size() > static_cast<size_t>(INT_MAX)) fail("a message of {} bytes is beyond MPI's int counts", value.size());
  int n = static_cast<int>(value.size());
  MPI_Bcast(&n, 1, MPI_INT, root, MPI_COMM_WORLD);
  std::string out = rank_ == root ? value : std::string(static_cast<size_t>(n), '\0');
  MPI_Bcast(out.data(), n, MPI_CHAR, root, MPI_COMM_WORLD);
  return out;
#else
  return value;
#endif
}

void Cluster::barrier() const {
#ifdef KLLENS_HAVE_MPI
  if (mpi_) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void Cluster::abort(int exit_code) const {
#ifdef KLLENS_HAVE_MPI
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  (void)exit_code;
}

void finalize_cluster() {
#ifdef KLLENS_HAVE_MPI
  int finalized = 0;
  if (g_started && (MPI_Finalized(&finalized), !finalized)) MPI_Finalize();
#endif
}

}  // namespace kllens
