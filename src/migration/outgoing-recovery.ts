// The source's side of postcopy recovery (QEMU's migrate -r, "resume"):
// from postcopy-paused, connect the main channel again (postcopy-recover-
// setup), send a HEADER flagged RESUME with the paused migration's token
// (postcopy-recover) and, meanwhile, connect the urgent channel and start the
// page server on it; take the destination's received-page bitmap and make
// every page it lacks due again, say RESUME, and once the destination
// acknowledges, the migration is postcopy-active again (the caller restarts
// the push). Any failure on the way goes back to postcopy-paused: the guest
// lives on the destination, so a recovery is never worth failing the
// migration for.

import type { RamBlocks } from '../vm/ram-blocks.js';
import type { ChannelBlocks } from '../native/page-channel.js';
import type net from 'node:net';
import type { MigrationStatusMachine } from './status.js';
import type { MigrationAddress } from './uri.js';
import type { SourceStream } from './outgoing-stream.js';
import type { SourcePostcopy, UrgentHeader } from './outgoing-postcopy.js';
import type { SourceRam } from './outgoing-ram.js';
import { connectMain } from './outgoing-connect.js';
import { encodeBare, encodeHeader, REC_RESUME, WireError } from './wire.js';
import { type ReturnHandler } from './return-decoder.js';

/** how long each step of the handshake may take (the bitmap, the acknowledgement) */
export const RECOVERY_STEP_MS = 10000;

export interface RecoveryHost {
  ramBase: number;
  ramBytes: number;
  pageSize: number;
  blocks: RamBlocks;
  blockTable: ChannelBlocks | null;
  status: MigrationStatusMachine;
  stream: SourceStream;
  urgent: SourcePostcopy;
  state: SourceRam;
  /** the migration's header fields and token, as its first connection had them */
  header(): UrgentHeader;
  /** x-migration-psk's key, proved on each new connection too (channel-auth.ts), or null */
  psk: Buffer | null;
  /** the return path's handler (the migration: acknowledgements, completion, and this handshake's records) */
  returnPath: ReturnHandler;
  /** the recovery's main connection (null: none) */
  setSocket(s: net.Socket | null): void;
  /** the recovery failed, or its link went again later: back to postcopy-paused */
  lost(why: string): void;
  /** a protocol violation on the connection once recovered */
  fail(why: string): void;
  /** the migration ended (a close is expected) */
  done(): boolean;
  /** the destination took RESUME: postcopy-active again */
  resumed(): void;
}

export class SourceRecovery {
  /** 'connect' | 'bitmap' | 'ack' while the handshake runs, null otherwise */
  private step: 'connect' | 'bitmap' | 'ack' | null = null;
  private timer: NodeJS.Timeout | null = null;
  private addr: MigrationAddress | null = null;
  /** the urgent channel's page server is up (started with the recovery's main connection) */
  private urgentUp: Promise<void> | null = null;
  /** attempts started: a late event of an earlier attempt's connection is ignored */
  private attempt = 0;
  /** pages sent again over all recoveries (the destination lacked them) */
  resent = 0;
  /** recoveries completed */
  recoveries = 0;

  constructor(private readonly h: RecoveryHost) {}

  get running(): boolean { return this.step !== null; }

  /** migrate -r URI (the migration is postcopy-paused) */
  start(addr: MigrationAddress): void {
    const h = this.h;
    this.addr = addr;
    this.step = 'connect';
    const mine = ++this.attempt;
    const current = (): boolean => mine === this.attempt;
    h.status.moveTo('postcopy-recover-setup');
    h.setSocket(connectMain(addr, h.returnPath, h.ramBytes, h.pageSize, {
      connected: (sock) => { if (current()) this.connected(sock); },
      // in the handshake every failure pauses again; once recovered, the connection is the migration's
      fail: (why) => { if (current()) { if (this.step !== null) this.failed(why); else h.fail(why); } },
      lost: (why) => { if (current()) { if (this.step !== null) this.failed(why); else h.lost(why); } },
      connecting: () => this.step === 'connect',
      done: () => h.done(),
      psk: h.psk,
      blocks: h.blocks,
    }, true));
  }

  private connected(sock: net.Socket): void {
    const h = this.h;
    if (this.step !== 'connect') return;
    try {
      h.stream.start({ sock, ramBase: h.ramBase, pageSize: h.pageSize, pages: h.state.pages, flags: h.state.address, blocks: h.blockTable });
    } catch (e) {
      this.failed(`cannot start the stream sender: ${(e as Error).message}`);
      return;
    }
    h.status.moveTo('postcopy-recover');
    h.stream.send(encodeHeader({ ...h.header(), resume: true }));
    this.await('bitmap', 'received-page bitmap');
    // the urgent channel and its page server meanwhile, while the destination
    // makes its bitmap (its fault thread takes the channel, and asks again for
    // the pages it waits on, only after RESUME, so nothing is served before
    // the bitmap is applied)
    const attempt = this.attempt;
    h.urgent.connect(this.addr!, h.header(), h.psk);
    this.urgentUp = h.urgent.start({ ramBase: h.ramBase, pageSize: h.pageSize, pages: h.state.pages, flags: h.state.address, sender: h.stream.channel!, blocks: h.blockTable });
    this.urgentUp.catch((e: Error) => { if (attempt === this.attempt) this.failed(`urgent channel: ${e.message}`); });
  }

  /** RP_RECV_BITMAP: the pages the destination lacks are due again; RESUME once the urgent channel is up */
  bitmap(bitmap: Buffer): void {
    const h = this.h;
    if (this.step !== 'bitmap') throw new WireError('a received-page bitmap the source did not ask for');
    this.resent += h.state.fromReceivedBitmap(bitmap); // the view is valid during this call only
    this.step = 'ack';
    const attempt = this.attempt;
    this.urgentUp!.then(() => {
      if (attempt !== this.attempt || this.step !== 'ack') return;
      h.stream.send(encodeBare(REC_RESUME));
      this.await('ack', 'acknowledgement of RESUME');
    }, () => undefined); // its failure is taken above
  }

  /** RP_RESUME_ACK */
  resumeAck(): void {
    if (this.step !== 'ack') throw new WireError('a RESUME_ACK before the source said RESUME');
    this.end();
    this.recoveries++;
    this.h.resumed();
  }

  /** The migration paused (or ended): any handshake is abandoned, and no
   *  event of a connection made so far is taken any more. */
  invalidate(): void {
    this.attempt++;
    this.end();
  }

  private end(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.step = null;
  }

  private await(step: 'bitmap' | 'ack', what: string): void {
    this.step = step;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.failed(`recovery: no ${what} from the destination within ${RECOVERY_STEP_MS / 1000} s`), RECOVERY_STEP_MS);
    this.timer.unref();
  }

  private failed(why: string): void {
    if (this.step === null) return;
    this.end();
    this.h.lost(why);
  }
}
