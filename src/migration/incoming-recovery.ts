// The destination's side of postcopy recovery (QEMU's migrate_recover): while
// postcopy-paused it may listen again; the first connection that brings a
// HEADER flagged RESUME with the paused migration's token is the source's,
// and is answered with the received-page bitmap (postcopy-recover); RESUME,
// and the new urgent channel's admission, make it postcopy-active again,
// within RECOVERY_STEP_MS (the source's own limit on a step), else it is
// paused again: a source that gave up on a silent link cannot say so. A
// connection that is not the source's is refused, and the migration stays
// paused, listening: a stranger cannot take over, or end, a paused guest.

import { timingSafeEqual } from 'node:crypto';
import { WireError, bitmapBytes, encodeRecvBitmap, type StreamHeader } from './wire.js';
import { RECOVERY_STEP_MS } from './outgoing-recovery.js';
import { loadShim } from '../native/shim.js';

// page flags (native-shim/channel.h PC_PAGE_RECEIVED)
const RECEIVED = 1;

export class IncomingRecovery {
  /** the migration's token, from its first HEADER (every recovery's stream must carry it) */
  token: Buffer | null = null;
  /** migrate_recover listens (until the recovery completes, or the migration pauses again) */
  listening = false;
  /** the source's recovery connection is in: its header was right (postcopy-recover) */
  accepted = false;
  /** RESUME came on it */
  resumed = false;
  /** recoveries completed */
  recoveries = 0;
  /** the bitmap's bytes, kept for the next recovery */
  private bits: Uint8Array | null = null;
  /** the handshake's time limit, from the acceptance on */
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pageSize: number) {}

  /** migrate_recover */
  listen(): void {
    this.listening = true;
    this.accepted = this.resumed = false;
  }

  /** The source's connection is in (postcopy-recover): `timedOut` unless the recovery is done (or paused) within RECOVERY_STEP_MS. */
  accept(timedOut: (why: string) => void): void {
    this.accepted = true;
    this.timer = setTimeout(() => {
      this.timer = null;
      timedOut(`recovery: no ${this.resumed ? 'urgent channel' : 'RESUME'} from the source within ${RECOVERY_STEP_MS / 1000} s`);
    }, RECOVERY_STEP_MS);
    this.timer.unref();
  }

  /** paused (again): a recovery in progress is over */
  paused(): void {
    this.listening = this.accepted = this.resumed = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** the recovery completed: postcopy-active again */
  done(): void {
    this.paused();
    this.recoveries++;
  }

  /** A recovery's HEADER: flagged RESUME, with the paused migration's token (a WireError refuses the connection). */
  check(h: StreamHeader): void {
    if (!h.resume) throw new WireError('its header starts a new migration, not the recovery of the paused one (migrate -r on the source)');
    if (this.token === null || !timingSafeEqual(this.token, h.token)) {
      throw new WireError('its header does not carry the paused migration\'s token (a connection from another source, or a forged one)');
    }
    if (h.pageSize !== this.pageSize) throw new WireError(`page size mismatch: the source uses ${h.pageSize}, this VM ${this.pageSize}`);
  }

  /** RP_RECV_BITMAP of the pages received (`flags`, the threads' page flags) */
  bitmap(flags: Uint8Array, pages: number): Buffer {
    const n = bitmapBytes(pages);
    const b = this.bits?.length === n ? this.bits : (this.bits = new Uint8Array(n));
    loadShim().recvBitmapBuild(flags, pages, RECEIVED, b); // every byte written
    return encodeRecvBitmap(pages, b);
  }
}
