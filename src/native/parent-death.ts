// `-run-with exit-with-parent=on` (QEMU's option): PR_SET_PDEATHSIG, so the
// kernel sends this process SIGTERM when the thread that spawned it ends,
// whatever ended it (SIGKILL included). A lab destination or a batch VM
// therefore never outlives the console or batch job that started it; the
// SIGTERM handler quits it cleanly (sockets and temporary files removed).
import { errno, errnoName, prctl } from './libc.js';

const PR_SET_PDEATHSIG = 1;
const SIGTERM = 15;

export function exitWithParent(): void {
  if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) !== 0) throw new Error(`prctl(PR_SET_PDEATHSIG): ${errnoName(errno())}`);
}
