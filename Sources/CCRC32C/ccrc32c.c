// SSE4.2 CRC32C. Three interleaved streams hide the 3-cycle latency of the crc32
// instruction on large inputs; the partial CRCs are combined with a carry-less
// shift computed by table-free GF(2) multiplication.
#include "ccrc32c.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#include <string.h>

int ccrc32c_hardware_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

// Multiply a and b modulo the CRC32C polynomial (reflected), as polynomials over GF(2).
static uint32_t gf2_multiply(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (int i = 0; i < 32; i++) {
        product ^= (uint32_t)(-(int32_t)((b >> 31) & 1)) & a;
        a = (a >> 1) ^ ((uint32_t)(-(int32_t)(a & 1)) & 0x82F63B78u);
        b <<= 1;
    }
    return product;
}

// x^(8*bytes) mod P in reflected form, for shifting a CRC over `bytes` zero bytes.
static uint32_t shift_constant(size_t bytes) {
    uint32_t result = 0x80000000u;  // x^0
    uint32_t square = 0x40000000u;  // x^1
    size_t bits = bytes * 8;
    while (bits) {
        if (bits & 1) result = gf2_multiply(result, square);
        square = gf2_multiply(square, square);
        bits >>= 1;
    }
    return result;
}

#define STRIPE 4096
static uint32_t stripe_shift;  // x^(8*STRIPE) mod P, computed once

__attribute__((target("sse4.2")))
static uint64_t crc_words(uint64_t crc, const unsigned char *p, size_t words) {
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8);
        crc = _mm_crc32_u64(crc, w);
    }
    return crc;
}

__attribute__((target("sse4.2")))
uint32_t ccrc32c_hardware_update(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t c0 = crc;
    if (length >= 3 * STRIPE) {
        if (stripe_shift == 0) stripe_shift = shift_constant(STRIPE);
        while (length >= 3 * STRIPE) {
            uint64_t c1 = 0, c2 = 0;
            for (size_t i = 0; i < STRIPE; i += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, p + i, 8);
                memcpy(&w1, p + STRIPE + i, 8);
                memcpy(&w2, p + 2 * STRIPE + i, 8);
                c0 = _mm_crc32_u64(c0, w0);
                c1 = _mm_crc32_u64(c1, w1);
                c2 = _mm_crc32_u64(c2, w2);
            }
            // crc(A||B) = shift(crc(A), |B|) ^ crc0(B), where crc0 starts from 0.
            c0 = gf2_multiply((uint32_t)c0, stripe_shift) ^ (uint32_t)c1;
            c0 = gf2_multiply((uint32_t)c0, stripe_shift) ^ (uint32_t)c2;
            p += 3 * STRIPE;
            length -= 3 * STRIPE;
        }
    }
    c0 = crc_words(c0, p, length / 8);
    p += length & ~(size_t)7;
    uint32_t c = (uint32_t)c0;
    for (size_t i = 0; i < (length & 7); i++) c = _mm_crc32_u8(c, p[i]);
    return c;
}

#else
int ccrc32c_hardware_available(void) { return 0; }
uint32_t ccrc32c_hardware_update(uint32_t crc, const void *data, size_t length) {
    (void)data; (void)length; return crc;
}
#endif
