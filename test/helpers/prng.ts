// A small seeded PRNG (mulberry32) for reproducible random tests: the same
// seed gives the same sequence of floats in [0, 1).

// Read once: under jest every lookup of a global (Math) from the test's vm
// context is slow, ~0.4 us, which made each call cost about 1 us.
const imul = Math.imul;

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
