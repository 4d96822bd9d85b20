// component
/* nn_wit_loop: nn_loop as a component: tensor + compute + output data on a named model through
 * the WIT wasi:nn interfaces, one line per iteration.
 *
 *   nn_wit_loop NAME INPUT DIMS ITERATIONS     input bytes from stdin (f32), INPUT the input's name
 *
 * Prints "ns <nanoseconds>" per iteration (WASI monotonic clock, inside the guest), then
 * "output <nbytes>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wasi_nn_wit.h"

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: nn_wit_loop NAME INPUT DIMS ITERATIONS\n");
        return 2;
    }
    uint32_t dims[8], ndims = 0;
    for (char *p = argv[3]; *p && ndims < 8;) {
        dims[ndims++] = (uint32_t)strtoul(p, &p, 10);
        if (*p == ',') p++;
    }
    int n = atoi(argv[4]);
    size_t cap = 1 << 20, len = 0, got;
    uint8_t *input = malloc(cap);
    while ((got = fread(input + len, 1, cap - len, stdin)) > 0) len += got;

    wasi_nn_result_t r;
    wasi_nn_load_by_name(argv[1], strlen(argv[1]), &r);
    if (r.is_err) return printf("error load %d\n", wasi_nn_error_code(r.handle)), 1;
    wasi_nn_handle_t graph = r.handle;
    wasi_nn_init_execution_context(graph, &r);
    if (r.is_err) return printf("error init %d\n", wasi_nn_error_code(r.handle)), 1;
    wasi_nn_handle_t ctx = r.handle;
    size_t out_len = 0;
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        wasi_nn_named_tensor_t in = {{(uint8_t *)argv[2], strlen(argv[2])},
                                     wasi_nn_tensor_new(dims, ndims, NN_FP32, input, len)};
        wasi_nn_outputs_result_t out;
        wasi_nn_compute(ctx, &in, 1, &out);
        if (out.is_err) return printf("error compute %d\n", wasi_nn_error_code(out.val.err)), 1;
        wasi_nn_bytes_t data;
        wasi_nn_tensor_data(out.val.ok.ptr[0].tensor, &data);
        out_len = data.len;
        free(data.ptr);
        for (size_t k = 0; k < out.val.ok.len; k++) {
            wasi_nn_tensor_drop(out.val.ok.ptr[k].tensor);
            free(out.val.ok.ptr[k].name.ptr);
        }
        free(out.val.ok.ptr);
        printf("ns %lld\n", now_ns() - t0);
    }
    printf("output %zu\n", out_len);
    wasi_nn_context_drop(ctx);
    wasi_nn_graph_drop(graph);
    return 0;
}
