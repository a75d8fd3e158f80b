// Feature negotiation, as QEMU does it (the seed's ufd_check_and_apply): ask
// the kernel what it supports with UFFDIO_API features=0 on a throw-away
// userfaultfd (a userfaultfd accepts UFFDIO_API once), then request on the
// real one only what the caller needs: required features that are missing
// are refused by name, optional ones are dropped.
import { FEATURES, FEATURE_NAMES, type FeatureName, featureNames } from './abi.js';
import { UffdError } from './errors.js';

export interface FeatureRequest {
  /** must be supported, or open() fails naming them */
  features?: readonly FeatureName[];
  /** requested only when the kernel supports them (the seed's THREAD_ID pattern) */
  optionalFeatures?: readonly FeatureName[];
}

function checkNames(names: readonly string[], what: string): void {
  const unknown = names.filter((n) => !(FEATURE_NAMES as string[]).includes(n));
  if (unknown.length > 0) {
    throw new UffdError(`unknown userfaultfd feature${unknown.length > 1 ? 's' : ''} in ${what}: ` +
      `${unknown.join(', ')} (known: ${FEATURE_NAMES.join(', ')})`, 'UNSUPPORTED_FEATURE');
  }
}

/** the feature mask to request, given what the kernel supports; throws naming every required feature it lacks */
export function negotiateFeatures(supportedMask: number, req: FeatureRequest = {}): number {
  const required = req.features ?? [];
  const optional = req.optionalFeatures ?? [];
  checkNames(required, 'features');
  checkNames(optional, 'optionalFeatures');
  const missing = required.filter((n) => (supportedMask & FEATURES[n]) === 0);
  if (missing.length > 0) {
    const have = featureNames(supportedMask);
    throw new UffdError(`this kernel's userfaultfd does not support ${missing.join(', ')} ` +
      `(supported: ${have.length ? have.join(', ') : 'none'}); use a newer kernel or do without ` +
      `${missing.length > 1 ? 'these features' : 'this feature'}`, 'UNSUPPORTED_FEATURE');
  }
  let mask = 0;
  for (const n of required) mask |= FEATURES[n];
  for (const n of optional) if (supportedMask & FEATURES[n]) mask |= FEATURES[n];
  return mask;
}

/** names of the bits set in mask, as a set */
export function featureSet(mask: number): ReadonlySet<FeatureName> {
  return new Set(featureNames(mask));
}
