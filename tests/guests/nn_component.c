// component
/* nn_component: one wasi:nn (WIT) inference as a component, input from stdin, outputs as hex.
 *
 *   nn_component ir DIR INPUT DIMS [REPEAT]     load DIR/model.xml + DIR/model.bin (openvino)
 *   nn_component onnx FILE INPUT DIMS [REPEAT]  load FILE (onnx)
 *   nn_component name NAME INPUT DIMS [REPEAT]  load-by-name NAME
 *   nn_component short NAME INPUT DIMS          an f32 tensor with 3 bytes too few for DIMS
 *   nn_component dropped NAME INPUT DIMS        computes on a tensor it has dropped (a trap)
 *
 * INPUT is the model input's name; the input is f32. Prints, per output,
 * "output NAME TYPE DIM,DIM NBYTES HEX" and exits 0, or "error STEP CODE DATA" and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn_wit.h"

static uint8_t *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    *len = n;
    return buf;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    uint8_t *buf = read_all(f, len);
    fclose(f);
    return buf;
}

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
    if (argc < 5) {
        fprintf(stderr, "usage: nn_component ir|onnx|name|short|dropped WHERE INPUT DIMS [REPEAT]\n");
        return 2;
    }
    const char *mode = argv[1], *where = argv[2], *input = argv[3];
    uint32_t dims[8], ndims = 0;
    for (char *p = argv[4]; *p && ndims < 8;) {
        dims[ndims++] = (uint32_t)strtoul(p, &p, 10);
        if (*p == ',') p++;
    }
    int repeat = argc > 5 ? atoi(argv[5]) : 1;

    wasi_nn_result_t r;
    if (!strcmp(mode, "ir")) {
        char path[1024];
        wasi_nn_bytes_t parts[2];
        snprintf(path, sizeof path, "%s/model.xml", where);
        parts[0].ptr = read_file(path, &parts[0].len);
        snprintf(path, sizeof path, "%s/model.bin", where);
        parts[1].ptr = read_file(path, &parts[1].len);
        wasi_nn_load(parts, 2, NN_OPENVINO, NN_CPU, &r);
    } else if (!strcmp(mode, "onnx")) {
        wasi_nn_bytes_t part;
        part.ptr = read_file(where, &part.len);
        wasi_nn_load(&part, 1, NN_ONNX, NN_CPU, &r);
    } else {
        wasi_nn_load_by_name(where, strlen(where), &r);
    }
    if (r.is_err) return fail("load", r.handle);
    wasi_nn_handle_t graph = r.handle;
    wasi_nn_init_execution_context(graph, &r);
    if (r.is_err) return fail("init", r.handle);
    wasi_nn_handle_t ctx = r.handle;

    size_t len;
    uint8_t *data = read_all(stdin, &len);
    if (!strcmp(mode, "short")) len -= 3;
    for (int i = 0; i < repeat; i++) {
        wasi_nn_named_tensor_t in = {{(uint8_t *)input, strlen(input)}, wasi_nn_tensor_new(dims, ndims, NN_FP32, data, len)};
        if (!strcmp(mode, "dropped")) wasi_nn_tensor_drop(in.tensor);
        wasi_nn_outputs_result_t out;
        wasi_nn_compute(ctx, &in, 1, &out);  /* the input tensor is moved to the host */
        if (out.is_err) return fail("compute", out.val.err);
        for (size_t k = 0; k < out.val.ok.len; k++) {
            if (i == repeat - 1) print_output(&out.val.ok.ptr[k]);
            wasi_nn_tensor_drop(out.val.ok.ptr[k].tensor);
            free(out.val.ok.ptr[k].name.ptr);
        }
        free(out.val.ok.ptr);
    }
    wasi_nn_context_drop(ctx);
    wasi_nn_graph_drop(graph);
    return 0;
}
