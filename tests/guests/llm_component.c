// component
/* llm_component: a GGML (llama.cpp) model through the WIT wasi:nn interface, as a component.
 *
 *   llm_component NAME INPUT=TEXT...   load-by-name NAME, then one compute with a U8 tensor per
 *                                      argument (e.g. prompt=hello, metadata={"n-predict": 8}, 0=hello)
 *
 * Prints, per output, "output NAME TYPE DIM,DIM NBYTES HEX" and exits 0, or "error STEP CODE DATA"
 * and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn_wit.h"

static int fail(const char *step, wasi_nn_handle_t err) {
    wasi_nn_bytes_t data;
    int code = wasi_nn_error_code(err);
    wasi_nn_error_data(err, &data);
    printf("error %s %d %.*s\n", step, code, (int)data.len, (const char *)data.ptr);
    free(data.ptr);
    wasi_nn_error_drop(err);
    return 1;
}

static void print_output(const wasi_nn_named_tensor_t *out) {
    wasi_nn_dims_t dims;
    wasi_nn_bytes_t data;
    wasi_nn_tensor_dimensions(out->tensor, &dims);
    wasi_nn_tensor_data(out->tensor, &data);
    printf("output %.*s %d ", (int)out->name.len, (const char *)out->name.ptr, (int)wasi_nn_tensor_ty(out->tensor));
    for (size_t i = 0; i < dims.len; i++) printf("%s%u", i ? "," : "", dims.ptr[i]);
    printf(" %zu ", data.len);
    for (size_t i = 0; i < data.len; i++) printf("%02x", data.ptr[i]);
    printf("\n");
    free(dims.ptr);
    free(data.ptr);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: llm_component NAME INPUT=TEXT...\n");
        return 2;
    }
    wasi_nn_result_t r;
    wasi_nn_load_by_name(argv[1], strlen(argv[1]), &r);
    if (r.is_err) return fail("load", r.handle);
    wasi_nn_handle_t graph = r.handle;
    wasi_nn_init_execution_context(graph, &r);
    if (r.is_err) return fail("init", r.handle);
    wasi_nn_handle_t ctx = r.handle;

    int n = argc - 2;
    wasi_nn_named_tensor_t *in = calloc((size_t)n, sizeof *in);
    for (int i = 0; i < n; i++) {
        char *arg = argv[i + 2], *eq = strchr(arg, '=');
        if (!eq) {
            fprintf(stderr, "%s: not INPUT=TEXT\n", arg);
            return 2;
        }
        uint32_t dims[1] = {(uint32_t)strlen(eq + 1)};
        in[i].name.ptr = (uint8_t *)arg;
        in[i].name.len = (size_t)(eq - arg);
        in[i].tensor = wasi_nn_tensor_new(dims, 1, NN_U8, (const uint8_t *)eq + 1, dims[0]);
    }
    wasi_nn_outputs_result_t out;
    wasi_nn_compute(ctx, in, (size_t)n, &out);  /* the input tensors are moved to the host */
    if (out.is_err) return fail("compute", out.val.err);
    for (size_t k = 0; k < out.val.ok.len; k++) {
        print_output(&out.val.ok.ptr[k]);
        wasi_nn_tensor_drop(out.val.ok.ptr[k].tensor);
        free(out.val.ok.ptr[k].name.ptr);
    }
    free(out.val.ok.ptr);
    wasi_nn_context_drop(ctx);
    wasi_nn_graph_drop(graph);
    return 0;
}
