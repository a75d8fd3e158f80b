/* Entry points of libpostcopy_shim that are about the library itself: its
 * version and the control-block layout, which the TypeScript binding checks
 * when it loads the library (src/native/shim.ts). */
#include <stddef.h>
#include "vcpu.h"

int postcopy_shim_version(void) { return 11; }

/* sizeof(struct pc_vcpu) * 1000 + offsetof(position): one number to compare */
int pc_vcpu_layout(void) { return (int)(sizeof(struct pc_vcpu) * 1000 + offsetof(struct pc_vcpu, position)); }
