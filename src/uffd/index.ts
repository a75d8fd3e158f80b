// The koffi binding of userfaultfd: open + feature handshake, register, read
// fault messages, resolve them, and wait for them without blocking the event
// loop. Everything other modules need from src/uffd/ is re-exported here.
export {
  EVENT_PAGEFAULT, EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP,
  PAGEFAULT_FLAG_WRITE, PAGEFAULT_FLAG_WP, PAGEFAULT_FLAG_MINOR,
  FEATURES, FEATURE_NAMES, UFFD_MSG_SIZE, UFFD_PAGE_SIZE, IOCTL_COPY, IOCTL_ZEROPAGE, featureNames,
} from './abi.js';
export type { FeatureName } from './abi.js';
export { UffdError } from './errors.js';
export type { UffdErrorCode } from './errors.js';
export { negotiateFeatures } from './features.js';
export type { FeatureRequest } from './features.js';
export { openUffdFd } from './open.js';
export type { OpenSyscalls, OpenedFd } from './open.js';
export { Userfaultfd, probeSupportedFeatures } from './userfaultfd.js';
export type { PlaceResult, PlaceOptions, OpenOptions, RegisterMode } from './userfaultfd.js';
export { decodeEvent } from './events.js';
export type { UffdEvent } from './events.js';
export { UffdPoller, DEFAULT_SPIN_MICROS } from './poller.js';
export type { PollerOptions, ReadableHandler } from './poller.js';
export { StagingArea } from './staging.js';
