// One device per process under Open MPI (mpirun, or srun under Slurm): the process's rank and the
// world size come from MPI, and collectives go through MPI with a deadline, so a rank that dies
// makes the others fail with an error instead of hanging.
#pragma once

#include "axlearn/dist/communicator.h"

namespace axlearn::dist {

// True when this process was started as one rank of a multi-process job (Open MPI's
// OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK with a size, or Slurm's SLURM_NTASKS > 1 under srun).
bool mpi_launched();
// Initialises MPI on first use and returns this process's communicator over MPI_COMM_WORLD.
// Error when this build has no MPI support.
Communicator* mpi_world();
// True when this build was linked with MPI.
bool mpi_available();

}  // namespace axlearn::dist
