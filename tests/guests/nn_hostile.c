/* nn_hostile: wild pointers, huge lengths and bad handles into every standard wasi-nn import
 * (the WasmEdge extensions are in nn_hostile_wasmedge.c, so this one also runs on wasmtime).
 *
 *   nn_hostile all NAME FORBIDDEN   the whole battery against named model NAME (f32 [1,256] -> [1,256]);
 *                                   FORBIDDEN is a model that exists but this worker may not use
 *   nn_hostile contexts NAME        open execution contexts until the host says no
 *   nn_hostile load                 `load` OpenVINO IR and ONNX bytes (for backend permissions)
 *   nn_hostile loads DIR            `load` DIR/model.xml + model.bin again and again until refused
 *
 * Prints one "<case> <errno>" line per call, so a test can compare every answer; a host that
 * crashes or traps ends the output early.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

#define WILD ((void *)(uintptr_t)0xFFFFFFF0u)
#define HUGE_LEN 0xFFFFFFFFu

static void report(const char *what, wasi_nn_errno_t e) { printf("%s %d\n", what, (int)e); }

/* The last bytes of linear memory: a range that starts inside and ends outside. */
static uint8_t *memory_end(void) { return (uint8_t *)(uintptr_t)(__builtin_wasm_memory_size(0) * 65536u); }

/* A well-formed IR with no layers (OpenVINO reads it), and XML that is no model at all. */
static const char IR_XML[] = "<?xml version=\"1.0\"?><net name=\"empty\" version=\"11\"><layers></layers></net>";
static const char JUNK_XML[] = "<?xml version=\"1.0\"?><net name=\"junk\"";

static int hostile_load(void) {
    wasi_nn_graph_t g;
    wasi_nn_graph_builder_t ir[2] = {{(const uint8_t *)IR_XML, sizeof IR_XML - 1}, {(const uint8_t *)"", 0}};
    report("load.openvino", wasi_nn_load(ir, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    static const uint8_t junk_onnx[] = {0x08, 0x07, 0x12, 0x04, 'j', 'u', 'n', 'k'};
    wasi_nn_graph_builder_t onnx = {junk_onnx, sizeof junk_onnx};
    report("load.onnx", wasi_nn_load(&onnx, 1, WASI_NN_ENCODING_ONNX, WASI_NN_TARGET_CPU, &g));
    return 0;
}

static uint8_t *read_file(const char *path, uint32_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) buf = NULL;
    fclose(f);
    *len = (uint32_t)n;
    return buf;
}

static int hostile_loads(const char *dir) {
    char path[512];
    uint32_t xml_len = 0, bin_len = 0;
    snprintf(path, sizeof path, "%s/model.xml", dir);
    uint8_t *xml = read_file(path, &xml_len);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    uint8_t *bin = read_file(path, &bin_len);
    if (!xml || !bin) return printf("cannot read %s\n", dir), 1;
    wasi_nn_graph_builder_t b[2] = {{xml, xml_len}, {bin, bin_len}};
    wasi_nn_graph_t g;
    wasi_nn_errno_t e = 0;
    int n = 0;
    while (n < 1000 && (e = wasi_nn_load(b, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g)) == 0) n++;
    printf("loads %d %d\n", n, (int)e);
    return 0;
}

static int hostile_contexts(const char *name) {
    wasi_nn_graph_t g;
    wasi_nn_context_t c;
    wasi_nn_errno_t e = wasi_nn_load_by_name(name, (uint32_t)strlen(name), &g);
    int n = 0;
    while (e == 0 && n < 1000) {
        e = wasi_nn_init_execution_context(g, &c);
        if (e == 0) n++;
    }
    printf("contexts %d %d\n", n, (int)e);
    return 0;
}

static int hostile_all(const char *name, const char *forbidden) {
    uint32_t name_len = (uint32_t)strlen(name);
    wasi_nn_graph_t g = 0, g2 = 0;
    wasi_nn_context_t c = 0, c2 = 0;
    uint8_t *end = memory_end();

    /* load */
    wasi_nn_graph_builder_t b[2] = {{(const uint8_t *)JUNK_XML, sizeof JUNK_XML - 1}, {(const uint8_t *)"", 0}};
    report("load.builders_wild", wasi_nn_load(WILD, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    report("load.builders_len_huge", wasi_nn_load(b, 0x7FFFFFFFu, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    report("load.builders_none", wasi_nn_load(b, 0, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    wasi_nn_graph_builder_t wild_data[2] = {{WILD, 100}, {(const uint8_t *)"", 0}};
    report("load.builder_data_wild", wasi_nn_load(wild_data, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    wasi_nn_graph_builder_t huge_data[2] = {{(const uint8_t *)JUNK_XML, HUGE_LEN}, {(const uint8_t *)"", 0}};
    report("load.builder_len_huge", wasi_nn_load(huge_data, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));
    report("load.graph_out_wild", wasi_nn_load(b, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, WILD));
    report("load.encoding_unknown", wasi_nn_load(b, 2, 42, WASI_NN_TARGET_CPU, &g));
    report("load.encoding_tensorflow", wasi_nn_load(b, 2, 2, WASI_NN_TARGET_CPU, &g));
    report("load.target_unknown", wasi_nn_load(b, 2, WASI_NN_ENCODING_OPENVINO, 9, &g));
    report("load.junk_model", wasi_nn_load(b, 2, WASI_NN_ENCODING_OPENVINO, WASI_NN_TARGET_CPU, &g));

    /* load_by_name */
    report("load_by_name.name_wild", wasi_nn_load_by_name(WILD, 8, &g));
    report("load_by_name.name_len_huge", wasi_nn_load_by_name(name, HUGE_LEN, &g));
    report("load_by_name.name_across_end", wasi_nn_load_by_name((const char *)(end - 2), 8, &g));
    report("load_by_name.graph_out_wild", wasi_nn_load_by_name(name, name_len, WILD));
    report("load_by_name.unknown", wasi_nn_load_by_name("no-such-model", 13, &g));
    report("load_by_name.forbidden", wasi_nn_load_by_name(forbidden, (uint32_t)strlen(forbidden), &g));
    report("load_by_name.not_utf8", wasi_nn_load_by_name("\xff\xfe", 2, &g));
    report("load_by_name.with_nul", wasi_nn_load_by_name(name, name_len + 1, &g));
    report("load_by_name.ok", wasi_nn_load_by_name(name, name_len, &g));
    report("load_by_name.second", wasi_nn_load_by_name(name, name_len, &g2));

    /* init_execution_context */
    report("init_execution_context.bad_graph", wasi_nn_init_execution_context(12345, &c));
    report("init_execution_context.ctx_out_wild", wasi_nn_init_execution_context(g, WILD));
    report("init_execution_context.ok", wasi_nn_init_execution_context(g, &c));

    /* set_input */
    static float input[256];
    for (int i = 0; i < 256; i++) input[i] = (float)i / 256.0f;
    uint32_t dims[2] = {1, 256}, small_dims[2] = {1, 128};
    wasi_nn_tensor_t t = {dims, 2, WASI_NN_TYPE_F32, (const uint8_t *)input, sizeof input};
    wasi_nn_tensor_t bad;
    report("set_input.bad_context", wasi_nn_set_input(999, 0, &t));
    report("set_input.tensor_wild", wasi_nn_set_input(c, 0, WILD));
    report("set_input.tensor_across_end", wasi_nn_set_input(c, 0, (const wasi_nn_tensor_t *)(end - 8)));
    bad = t, bad.dims = WILD;
    report("set_input.dims_wild", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.dims_len = HUGE_LEN;
    report("set_input.dims_len_huge", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.dims_len = 1000;
    report("set_input.dims_len_1000", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.data = WILD;
    report("set_input.data_wild", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.data_len = HUGE_LEN;
    report("set_input.data_len_huge", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.data = end - 512;
    report("set_input.data_across_end", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.dims = small_dims, bad.data_len = 512;
    report("set_input.wrong_shape", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.type = WASI_NN_TYPE_I32;
    report("set_input.wrong_type", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.type = 99;
    report("set_input.unknown_type", wasi_nn_set_input(c, 0, &bad));
    bad = t, bad.data_len = 1000;
    report("set_input.length_mismatch", wasi_nn_set_input(c, 0, &bad));
    report("set_input.bad_index", wasi_nn_set_input(c, 7, &t));
    report("set_input.ok", wasi_nn_set_input(c, 0, &t));

    /* compute */
    report("compute.bad_context", wasi_nn_compute(999));
    report("compute.ok", wasi_nn_compute(c));

    /* get_output */
    static uint8_t out[4096];
    uint32_t written = 0;
    report("get_output.bad_context", wasi_nn_get_output(999, 0, out, sizeof out, &written));
    report("get_output.out_wild", wasi_nn_get_output(c, 0, WILD, sizeof out, &written));
    report("get_output.written_wild", wasi_nn_get_output(c, 0, out, sizeof out, WILD));
    report("get_output.out_across_end", wasi_nn_get_output(c, 0, end - 100, 4096, &written));
    report("get_output.buffer_too_small", wasi_nn_get_output(c, 0, out, 16, &written));
    report("get_output.bad_index", wasi_nn_get_output(c, 9, out, sizeof out, &written));
    report("get_output.ok", wasi_nn_get_output(c, 0, out, sizeof out, &written));
    printf("get_output.written %u\n", written);

    /* memory grown after the first calls: pointers into the new pages must work */
    size_t big = 8u << 20;
    uint8_t *grown = malloc(big);
    if (!grown) return printf("malloc failed\n"), 1;
    memcpy(grown + big - sizeof input, input, sizeof input);
    bad = t, bad.data = grown + big - sizeof input;
    report("set_input.grown_memory", wasi_nn_set_input(c, 0, &bad));
    report("get_output.grown_memory", wasi_nn_get_output(c, 0, grown, 4096, (uint32_t *)(void *)(grown + big - 64)));

    /* handles */
    report("init_execution_context.second", wasi_nn_init_execution_context(g2, &c2));
    /* a pooled context must not compute on, or show, what an earlier request left in it */
    report("compute.inputs_never_set", wasi_nn_compute(c2));
    report("get_output.before_compute", wasi_nn_get_output(c2, 0, out, sizeof out, &written));

    /* after all that, a normal inference still works */
    report("final.set_input", wasi_nn_set_input(c, 0, &t));
    report("final.compute", wasi_nn_compute(c));
    report("final.get_output", wasi_nn_get_output(c, 0, out, sizeof out, &written));
    printf("final.output ");
    for (uint32_t i = 0; i < written; i++) printf("%02x", out[i]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "all") == 0) return hostile_all(argv[2], argv[3]);
    if (argc >= 3 && strcmp(argv[1], "contexts") == 0) return hostile_contexts(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return hostile_load();
    if (argc >= 3 && strcmp(argv[1], "loads") == 0) return hostile_loads(argv[2]);
    fprintf(stderr, "usage: nn_hostile all NAME FORBIDDEN | contexts NAME | load | loads DIR\n");
    return 2;
}
