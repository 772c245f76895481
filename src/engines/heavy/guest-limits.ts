// Limits the host sets for every heavy-tier guest, whatever the backend: the one source of their
// values. gVisor gets them in the OCI bundle (heavy-gvisor/box.ts), the microVM's init on the
// kernel command line (microvm/qemu.ts), which guest/microvm/init.py reads.

/** RLIMIT_NPROC of the guest agent and everything it starts: stops fork bombs (a pids cgroup this low crashes gVisor). */
export const GUEST_MAX_PROCESSES = 256;
