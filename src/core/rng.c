/*
 * rng.c - the global random generator: a counter-based generator (SplitMix64-style mixing of
 * seed and counter). Draw i of a tensor is a pure function of (seed, base + i), so parallel fills
 * are reproducible for any thread count and the state is just (seed, counter).
 */
#include "core/core_impl.h"

static _Atomic uint64_t g_counter;
static uint64_t g_seed = 0x5eed5eedULL;

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t kn__rng_at(uint64_t seed, uint64_t counter) {
    return mix(mix(seed + 0x9e3779b97f4a7c15ULL) ^ (counter * 0x9e3779b97f4a7c15ULL + 1));
}

void kn_manual_seed(uint64_t seed) {
    g_seed = seed;
    atomic_store(&g_counter, 0);
}

kn_rng_state kn_rng_get_state(void) {
    kn_rng_state s = {g_seed, atomic_load(&g_counter)};
    return s;
}

void kn_rng_set_state(kn_rng_state s) {
    g_seed = s.seed;
    atomic_store(&g_counter, s.counter);
}

uint64_t kn__rng_reserve(uint64_t n, uint64_t *seed) {
    *seed = g_seed;
    return atomic_fetch_add(&g_counter, n);
}

uint64_t kn__rng_next_u64(void) {
    uint64_t seed, c = kn__rng_reserve(1, &seed);
    return kn__rng_at(seed, c);
}

double kn__rng_uniform(void) {
    return (double)(kn__rng_next_u64() >> 11) * (1.0 / 9007199254740992.0);
}
