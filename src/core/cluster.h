// The processes of one run: a single process, or the ranks of an MPI job (`mpirun -np N kllens
// sensitivity ...`, Open MPI). MPI starts only when an MPI launcher started this process as one
// of several (its environment says so), so kllens without mpirun never touches MPI and behaves as
// a plain program; a build without MPI refuses to run under mpirun instead of running N copies of the
// whole job. The collectives are the few a sharded sweep needs; every rank must call them in
// the same order.
#pragma once

#include <string>
#include <vector>

namespace kllens {

class Cluster {
 public:
  // The process's cluster, started on first use (MPI_Init under mpirun).
  static const Cluster& world();
  // This process alone, whatever launched it.
  static const Cluster& alone();
  // Whether an MPI launcher (Open MPI's mpirun, or one that sets PMI_SIZE) started this process
  // as one of several.
  static bool launched_by_mpi();

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Every rank's `mine`, in rank order (on every rank).
  std::vector<std::string> all_gather(const std::string& mine) const;
  // `value` of rank `root`, on every rank.
  std::string broadcast(const std::string& value, int root = 0) const;
  void barrier() const;
  // Ends every rank of the job with this exit code: a rank that fails while the others wait in a
  // collective would otherwise leave them waiting forever. Returns only in a single process.
  void abort(int exit_code) const;

 private:
  explicit Cluster(bool join_mpi);
  int rank_ = 0;
  int size_ = 1;
  bool mpi_ = false;
};

// Ends MPI at the end of main (a no-op without it).
void finalize_cluster();

}  // namespace kllens
