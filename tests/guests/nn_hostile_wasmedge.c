/* nn_hostile_wasmedge: bad arguments into the WasmEdge extensions of wasi-nn
 * (load_by_name_with_config, compute_single, get_output_single, fini_single, unload,
 * finalize_execution_context).
 *
 *   nn_hostile_wasmedge NAME     NAME: a named f32 [1,256] -> [1,256] model
 *
 * Prints one "<case> <errno>" line per call.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wasi_nn.h"

#define WILD ((void *)(uintptr_t)0xFFFFFFF0u)

static void report(const char *what, wasi_nn_errno_t e) { printf("%s %d\n", what, (int)e); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: nn_hostile_wasmedge NAME\n");
        return 2;
    }
    const char *name = argv[1];
    uint32_t name_len = (uint32_t)strlen(name);
    wasi_nn_graph_t g = 0, g2 = 0;
    wasi_nn_context_t c = 0, c2 = 0;

    report("load_by_name_with_config.config_wild", wasi_nn_load_by_name_with_config(name, name_len, WILD, 16, &g));
    report("load_by_name_with_config.config_not_json",
           wasi_nn_load_by_name_with_config(name, name_len, "{nope", 5, &g));
    report("load_by_name_with_config.name_wild", wasi_nn_load_by_name_with_config(WILD, 4, "{}", 2, &g));
    report("load_by_name_with_config.graph_out_wild",
           wasi_nn_load_by_name_with_config(name, name_len, "{}", 2, WILD));
    report("load_by_name_with_config.unknown", wasi_nn_load_by_name_with_config("nope", 4, "{}", 2, &g));
    report("load_by_name_with_config.ok", wasi_nn_load_by_name_with_config(name, name_len, "{\"n\":1}", 7, &g));
    report("load_by_name_with_config.empty_config", wasi_nn_load_by_name_with_config(name, name_len, "", 0, &g2));
    report("init_execution_context.ok", wasi_nn_init_execution_context(g, &c));

    static float input[256];
    for (int i = 0; i < 256; i++) input[i] = (float)i / 256.0f;
    uint32_t dims[2] = {1, 256};
    wasi_nn_tensor_t t = {dims, 2, WASI_NN_TYPE_F32, (const uint8_t *)input, sizeof input};
    static uint8_t out[4096];
    uint32_t written = 0;
    report("set_input.ok", wasi_nn_set_input(c, 0, &t));
    report("compute_single.bad_context", wasi_nn_compute_single(999));
    report("compute_single.ok", wasi_nn_compute_single(c));
    report("get_output_single.bad_context", wasi_nn_get_output_single(999, 0, out, sizeof out, &written));
    report("get_output_single.out_wild", wasi_nn_get_output_single(c, 0, WILD, sizeof out, &written));
    report("get_output_single.written_wild", wasi_nn_get_output_single(c, 0, out, sizeof out, WILD));
    report("get_output_single.buffer_too_small", wasi_nn_get_output_single(c, 0, out, 8, &written));
    report("get_output_single.ok", wasi_nn_get_output_single(c, 0, out, sizeof out, &written));
    printf("get_output_single.written %u\n", written);
    report("fini_single.bad_context", wasi_nn_fini_single(999));
    report("fini_single.ok", wasi_nn_fini_single(c));

    report("init_execution_context.second", wasi_nn_init_execution_context(g2, &c2));
    report("finalize_execution_context.bad", wasi_nn_finalize_execution_context(999));
    report("finalize_execution_context.ok", wasi_nn_finalize_execution_context(c2));
    report("finalize_execution_context.twice", wasi_nn_finalize_execution_context(c2));
    report("compute.finalized_context", wasi_nn_compute(c2));
    report("unload.bad", wasi_nn_unload(4242));
    report("unload.ok", wasi_nn_unload(g2));
    report("unload.twice", wasi_nn_unload(g2));
    report("init_execution_context.unloaded_graph", wasi_nn_init_execution_context(g2, &c2));
    /* the context of a still-loaded graph keeps working */
    report("final.compute", wasi_nn_compute(c));
    report("final.get_output", wasi_nn_get_output(c, 0, out, sizeof out, &written));
    return 0;
}
