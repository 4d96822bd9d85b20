/* nn_fuzz: an interpreter of raw wasi-nn calls, for fuzzing the host (tests/runtime/test_fuzz_wasinn.py).
 *
 * stdin is a program: u32 code_len, code[code_len], then a data section (model bytes, tensors).
 * The code is a sequence of ops; integers are little-endian u32, read unaligned:
 *
 *   0x00..0x0B  call import N (the order of FN below) with ARITY[N] values
 *   0x20 off len bytes[len]   copy bytes into scratch at off (clipped to the scratch)
 *   0x21 off value            write a value's u32 into scratch at off (pointers into structs)
 *   0x22 pages                memory.grow by pages
 *   0x23 off len              print scratch[off, off+len) as hex ("dump HEX")
 *   0x24 off len byte         fill scratch[off, off+len) with byte
 *
 * A value is u8 kind, u32 payload:
 *   0 the payload itself; 1 scratch + payload; 2 memory size - payload;
 *   3 the u32 at scratch + payload (a handle the host wrote); 4 data section + payload
 * (pointer arithmetic wraps at 4 GiB, so any u32 can be reached).
 *
 * Each call prints "call FN ERRNO MEMSIZE ARG..." (args in hex, as passed), so the test can check
 * every answer against the memory the call saw. A truncated program just ends.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

#define SCRATCH_BYTES (256u * 1024u)
#define MAX_PROGRAM (16u * 1024u * 1024u)
#define MAX_ARITY 5

static uint8_t scratch[SCRATCH_BYTES];

static const char *const FN[] = {
    "load", "load_by_name", "load_by_name_with_config", "init_execution_context", "set_input", "compute",
    "get_output", "compute_single", "get_output_single", "fini_single", "unload", "finalize_execution_context",
};
static const int ARITY[] = {5, 3, 5, 2, 3, 1, 5, 1, 5, 1, 1, 1};
#define FN_COUNT ((int)(sizeof ARITY / sizeof ARITY[0]))

static const uint8_t *pc, *code_end, *data;

static uint32_t memory_bytes(void) { return (uint32_t)(__builtin_wasm_memory_size(0) * 65536u); }

static int take_u32(uint32_t *v) {
    if (code_end - pc < 4) return 0;
    memcpy(v, pc, 4);
    pc += 4;
    return 1;
}

static int take_value(uint32_t *v) {
    if (pc >= code_end) return 0;
    uint8_t kind = *pc++;
    uint32_t p;
    if (!take_u32(&p)) return 0;
    switch (kind) {
    case 1: *v = (uint32_t)(uintptr_t)scratch + p; break;
    case 2: *v = memory_bytes() - p; break;
    case 3:
        *v = 0;
        if (p <= SCRATCH_BYTES - 4) memcpy(v, scratch + p, 4);
        break;
    case 4: *v = (uint32_t)(uintptr_t)data + p; break;
    default: *v = p; break;
    }
    return 1;
}

/* The imports take pointers; these casts hand the host whatever u32 the program chose. */
#define P(x) ((void *)(uintptr_t)(x))

static wasi_nn_errno_t call(int fn, const uint32_t *a) {
    switch (fn) {
    case 0: return wasi_nn_load(P(a[0]), a[1], a[2], a[3], P(a[4]));
    case 1: return wasi_nn_load_by_name(P(a[0]), a[1], P(a[2]));
    case 2: return wasi_nn_load_by_name_with_config(P(a[0]), a[1], P(a[2]), a[3], P(a[4]));
    case 3: return wasi_nn_init_execution_context(a[0], P(a[1]));
    case 4: return wasi_nn_set_input(a[0], a[1], P(a[2]));
    case 5: return wasi_nn_compute(a[0]);
    case 6: return wasi_nn_get_output(a[0], a[1], P(a[2]), a[3], P(a[4]));
    case 7: return wasi_nn_compute_single(a[0]);
    case 8: return wasi_nn_get_output_single(a[0], a[1], P(a[2]), a[3], P(a[4]));
    case 9: return wasi_nn_fini_single(a[0]);
    case 10: return wasi_nn_unload(a[0]);
    default: return wasi_nn_finalize_execution_context(a[0]);
    }
}

static uint32_t clip(uint32_t off, uint32_t len) {
    if (off >= SCRATCH_BYTES) return 0;
    return len < SCRATCH_BYTES - off ? len : SCRATCH_BYTES - off;
}

static int step(void) {
    uint8_t op = *pc++;
    uint32_t a[MAX_ARITY], off, len, v;
    if (op < FN_COUNT) {
        for (int i = 0; i < ARITY[op]; i++)
            if (!take_value(&a[i])) return 0;
        uint32_t size = memory_bytes();
        wasi_nn_errno_t e = call(op, a);
        printf("call %s %d %u", FN[op], (int)e, size);
        for (int i = 0; i < ARITY[op]; i++) printf(" %x", a[i]);
        printf("\n");
        return 1;
    }
    switch (op) {
    case 0x20:
        if (!take_u32(&off) || !take_u32(&len) || (uint32_t)(code_end - pc) < len) return 0;
        memcpy(scratch + (off < SCRATCH_BYTES ? off : 0), pc, clip(off, len));
        pc += len;
        return 1;
    case 0x21:
        if (!take_u32(&off) || !take_value(&v)) return 0;
        if (off <= SCRATCH_BYTES - 4) memcpy(scratch + off, &v, 4);
        return 1;
    case 0x22:
        if (!take_u32(&len)) return 0;
        printf("grow %d\n", (int)__builtin_wasm_memory_grow(0, len));
        return 1;
    case 0x23:
        if (!take_u32(&off) || !take_u32(&len)) return 0;
        printf("dump ");
        for (uint32_t i = 0, n = clip(off, len); i < n; i++) printf("%02x", scratch[off + i]);
        printf("\n");
        return 1;
    case 0x24:
        if (!take_u32(&off) || !take_u32(&len) || pc >= code_end) return 0;
        memset(scratch + (off < SCRATCH_BYTES ? off : 0), *pc++, clip(off, len));
        return 1;
    default:
        return 1; /* unknown ops are skipped, so a mutated program still runs */
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines written before a trap still reach the test */
    uint8_t *prog = malloc(MAX_PROGRAM);
    if (!prog) return 1;
    size_t n = fread(prog, 1, MAX_PROGRAM, stdin);
    uint32_t code_len = 0;
    if (n >= 4) memcpy(&code_len, prog, 4);
    if (code_len > n - 4 || n < 4) code_len = n >= 4 ? (uint32_t)(n - 4) : 0;
    pc = prog + 4;
    code_end = pc + code_len;
    data = code_end;
    while (pc < code_end && step()) {
    }
    printf("end\n");
    return 0;
}
