/* nn_request: what one inference request does inside a worker, two ways.
 *
 *   nn_request named NAME DIMS   load_by_name NAME (compiled once by the runtime)
 *   nn_request files DIR DIMS    read DIR/model.xml + DIR/model.bin and `load` them, as wws workers do
 *
 * Then one set_input (a fixed, mostly zero f32 input of shape DIMS: making up an input is not what
 * is measured) / compute / get_output; prints "output <nbytes> <checksum>" so both ways can be
 * checked to agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

static uint8_t *read_file(const char *path, uint32_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) buf = NULL;
    fclose(f);
    *len = (uint32_t)n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: nn_request named NAME DIMS | files DIR DIMS\n"), 2;
    uint32_t dims[8], ndims = 0;
    size_t count = 1;
    for (char *p = argv[3]; *p && ndims < 8;) {
        dims[ndims] = (uint32_t)strtoul(p, &p, 10);
        count *= dims[ndims++];
        if (*p == ',') p++;
    }
    wasi_nn_graph_t graph;
    wasi_nn_errno_t e;
    if (strcmp(argv[1], "named") == 0) {
        e = wasi_nn_load_by_name(argv[2], (uint32_t)strlen(argv[2]), &graph);
    } else {
        char path[512];
        uint32_t xml_len, bin_len;
        snprintf(path, sizeof path, "%s/model.xml", argv[2]);
        uint8_t *xml = read_file(path, &xml_len);
        snprintf(path, sizeof path, "%s/model.bin", argv[2]);
        uint8_t *bin = read_file(path, &bin_len);
        if (!xml || !bin) return printf("error read\n"), 1;
        wasi_nn_graph_builder_t b[2] = {{xml, xml_len}, {bin, bin_len}};
        e = wasi_nn_load(b, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &graph);
    }
    if (e) return printf("error load %d\n", e), 1;
    wasi_nn_context_t ctx;
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return printf("error init %d\n", e), 1;
    static float input[1 << 18]; /* zeroed by the instance; big enough for 1x3x224x224 */
    if (count > sizeof input / sizeof input[0]) return printf("error dims\n"), 1;
    for (size_t i = 0; i < count; i += 61) input[i] = (float)(i % 7) / 7.0f;
    wasi_nn_tensor_t t = {dims, ndims, WASI_NN_TYPE_F32, (const uint8_t *)input, (uint32_t)(count * sizeof(float))};
    static float out[1 << 16];
    uint32_t written = 0;
    if ((e = wasi_nn_set_input(ctx, 0, &t))) return printf("error set_input %d\n", e), 1;
    if ((e = wasi_nn_compute(ctx))) return printf("error compute %d\n", e), 1;
    if ((e = wasi_nn_get_output(ctx, 0, (uint8_t *)out, sizeof out, &written))) return printf("error output %d\n", e), 1;
    double sum = 0;
    for (uint32_t i = 0; i < written / 4; i++) sum += out[i];
    printf("output %u %.6f\n", written, sum);
    return 0;
}
