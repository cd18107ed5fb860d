// Hardware CRC32C (Castagnoli) for x86-64 with SSE4.2. WALCore calls these through
// CRC32C.swift, which falls back to a portable table implementation when
// ccrc32c_hardware_available() returns 0.
#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when the CPU has the SSE4.2 crc32 instruction, else 0.
int ccrc32c_hardware_available(void);

/// Continues a CRC32C over `length` bytes. `crc` is the raw register value
/// (callers apply the initial ~0 and final inversion). Only valid when
/// ccrc32c_hardware_available() returns 1.
uint32_t ccrc32c_hardware_update(uint32_t crc, const void *data, size_t length);

#endif
