// query-migrate's `ram` object built from one side's raw counters: the
// derived figures (normal-bytes, mbps, pages-per-second) computed in one
// place for the source and the destination.
import type { MigrationRamStats } from './api.js';

export interface RamCounters {
  transferred: number;
  remaining: number;
  total: number;
  normal: number;
  duplicate: number;
  pageSize: number;
  /** since the migration started (to its end, once ended) */
  elapsedMs: number;
  syncs: number;
  requests: number;
  postcopyBytes: number;
  precopyBytes: number;
  downtimeBytes: number;
  dirtyPagesRate: number;
}

export function ramStatsOf(c: RamCounters): MigrationRamStats {
  const secs = Math.max(0.001, c.elapsedMs / 1000);
  return {
    transferred: c.transferred,
    remaining: c.remaining,
    total: c.total,
    duplicate: c.duplicate,
    normal: c.normal,
    'normal-bytes': c.normal * c.pageSize,
    mbps: Math.round(((c.transferred * 8) / 1e6 / secs) * 100) / 100,
    'pages-per-second': Math.round((c.normal + c.duplicate) / secs),
    'dirty-sync-count': c.syncs,
    'postcopy-requests': c.requests,
    'postcopy-bytes': c.postcopyBytes,
    'precopy-bytes': c.precopyBytes,
    'downtime-bytes': c.downtimeBytes,
    'page-size': c.pageSize,
    'dirty-pages-rate': Math.round(c.dirtyPagesRate),
  };
}
