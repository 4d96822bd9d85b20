/* nn_infer: one wasi-nn inference, input from stdin, output printed as hex.
 *
 *   nn_infer ir DIR DIMS [TYPE] [REPEAT]     load DIR/model.xml + DIR/model.bin (encoding openvino)
 *   nn_infer onnx FILE DIMS [TYPE] [REPEAT]  load FILE (encoding onnx)
 *   nn_infer ggml FILE DIMS [TYPE] [REPEAT]  load FILE (encoding ggml, WasmEdge's 6)
 *   nn_infer name NAME DIMS [TYPE] [REPEAT]  load_by_name NAME
 *
 * DIMS is like 1,256. TYPE is the tensor type code put in the tensor (default 1, f32); the host
 * must accept both numberings. REPEAT runs set_input/compute/get_output that many times.
 * Prints "output <nbytes> <hex>" and exits 0, or "error <step> <errno>" and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

static uint8_t *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
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

static int fail(const char *step, wasi_nn_errno_t e) {
    printf("error %s %d\n", step, (int)e);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: nn_infer ir|onnx|ggml|name WHERE DIMS [TYPE] [REPEAT]\n");
        return 2;
    }
    const char *mode = argv[1], *where = argv[2];
    uint32_t dims[8], ndims = 0;
    for (char *p = argv[3]; *p && ndims < 8;) {
        dims[ndims++] = (uint32_t)strtoul(p, &p, 10);
        if (*p == ',') p++;
    }
    uint8_t type = argc > 4 ? (uint8_t)atoi(argv[4]) : WASI_NN_TYPE_F32;
    int repeat = argc > 5 ? atoi(argv[5]) : 1;

    wasi_nn_graph_t graph;
    wasi_nn_errno_t e;
    if (strcmp(mode, "name") == 0) {
        e = wasi_nn_load_by_name(where, (uint32_t)strlen(where), &graph);
    } else if (strcmp(mode, "ir") == 0) {
        char path[512];
        size_t xml_len, bin_len;
        snprintf(path, sizeof path, "%s/model.xml", where);
        uint8_t *xml = read_file(path, &xml_len);
        snprintf(path, sizeof path, "%s/model.bin", where);
        uint8_t *bin = read_file(path, &bin_len);
        wasi_nn_graph_builder_t builders[2] = {{xml, (uint32_t)xml_len}, {bin, (uint32_t)bin_len}};
        e = wasi_nn_load(builders, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &graph);
    } else {
        size_t len;
        uint8_t *model = read_file(where, &len);
        wasi_nn_graph_builder_t builder = {model, (uint32_t)len};
        int ggml = strcmp(mode, "ggml") == 0;
        e = wasi_nn_load(&builder, 1, ggml ? WASI_NN_ENCODING_GGML : WASI_NN_ENCODING_ONNX, WASI_NN_TARGET_CPU, &graph);
    }
    if (e) return fail("load", e);

    wasi_nn_context_t ctx;
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", e);

    size_t in_len;
    uint8_t *input = read_all(stdin, &in_len);
    wasi_nn_tensor_t tensor = {dims, ndims, type, input, (uint32_t)in_len};
    uint32_t out_max = 16 << 20, written = 0;
    uint8_t *out = malloc(out_max);
    for (int i = 0; i < repeat; i++) {
        if ((e = wasi_nn_set_input(ctx, 0, &tensor))) return fail("set_input", e);
        if ((e = wasi_nn_compute(ctx))) return fail("compute", e);
        if ((e = wasi_nn_get_output(ctx, 0, out, out_max, &written))) return fail("get_output", e);
    }
    printf("output %u ", written);
    for (uint32_t i = 0; i < written; i++) printf("%02x", out[i]);
    printf("\n");
    return 0;
}
