/* /nn: one wasi-nn inference on the preloaded model "double" (nn.toml; y = 2x, input and output
 * f32 [1,3,2,2]). The input holds 0..11 in memory order and is declared 1,3,2,2; the answer is
 * the output in the model's order, so it shows how the server read the guest's bytes: wws 1.7
 * reads a 4-D input as NHWC (interleaved), so channel 0 is 0,3,6,9 (doubled: 0 6 12 18). */
#include <stdio.h>

#include "wasi_nn.h"

static int answer(int status, const char *text) {
    printf("{\"data\":\"%s\",\"headers\":{\"content-type\":\"text/plain\"},\"status\":%d,\"kv\":{}}", text, status);
    return 0;
}

static int fail(const char *step, wasi_nn_errno_t e) {
    char text[64];
    snprintf(text, sizeof text, "error %s %d", step, (int)e);
    return answer(500, text);
}

int main(void) {
    float input[12], output[12];
    for (int i = 0; i < 12; i++) input[i] = (float)i;
    uint32_t dims[4] = {1, 3, 2, 2};
    wasi_nn_tensor_t tensor = {dims, 4, WASI_NN_TYPE_F32, (const uint8_t *)input, sizeof input};
    wasi_nn_graph_t graph;
    wasi_nn_context_t ctx;
    uint32_t written = 0;
    wasi_nn_errno_t e;
    if ((e = wasi_nn_load_by_name("double", 6, &graph))) return fail("load_by_name", e);
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", e);
    if ((e = wasi_nn_set_input(ctx, 0, &tensor))) return fail("set_input", e);
    if ((e = wasi_nn_compute(ctx))) return fail("compute", e);
    if ((e = wasi_nn_get_output(ctx, 0, (uint8_t *)output, sizeof output, &written))) return fail("get_output", e);
    char text[256];
    size_t used = (size_t)snprintf(text, sizeof text, "%u bytes:", (unsigned)written);
    for (uint32_t i = 0; i < written / 4 && used < sizeof text; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, " %g", (double)output[i]);
    return answer(200, text);
}
