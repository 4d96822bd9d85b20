/* nn_loop: times set_input + compute + get_output on a named model, one line per iteration.
 *
 *   nn_loop NAME DIMS ITERATIONS     input bytes from stdin (f32)
 *
 * Prints "ns <nanoseconds>" per iteration (WASI monotonic clock, measured inside the guest so
 * instance setup is not counted), then "output <nbytes>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wasi_nn.h"

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: nn_loop NAME DIMS ITERATIONS\n");
        return 2;
    }
    uint32_t dims[8], ndims = 0;
    for (char *p = argv[2]; *p && ndims < 8;) {
        dims[ndims++] = (uint32_t)strtoul(p, &p, 10);
        if (*p == ',') p++;
    }
    int n = atoi(argv[3]);
    size_t cap = 1 << 20, len = 0, got;
    uint8_t *input = malloc(cap);
    while ((got = fread(input + len, 1, cap - len, stdin)) > 0) len += got;

    wasi_nn_graph_t graph;
    wasi_nn_context_t ctx;
    wasi_nn_errno_t e;
    if ((e = wasi_nn_load_by_name(argv[1], (uint32_t)strlen(argv[1]), &graph))) return printf("error load %d\n", e), 1;
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return printf("error init %d\n", e), 1;
    wasi_nn_tensor_t tensor = {dims, ndims, WASI_NN_TYPE_F32, input, (uint32_t)len};
    uint32_t out_max = 1 << 20, written = 0;
    uint8_t *out = malloc(out_max);
    long long *times = malloc(sizeof(long long) * (size_t)n);
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        if ((e = wasi_nn_set_input(ctx, 0, &tensor))) return printf("error set_input %d\n", e), 1;
        if ((e = wasi_nn_compute(ctx))) return printf("error compute %d\n", e), 1;
        if ((e = wasi_nn_get_output(ctx, 0, out, out_max, &written))) return printf("error get_output %d\n", e), 1;
        times[i] = now_ns() - t0;
    }
    for (int i = 0; i < n; i++) printf("ns %lld\n", times[i]);
    printf("output %u\n", written);
    return 0;
}
