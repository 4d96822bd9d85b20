/* wws_nn: a wws worker at /nn that runs one inference of the preloaded model "mobilenet" (nn.toml,
 * written by bench/wws_compare.py) and answers its top class, as JSON.
 *
 * The input is made here, the same every request, so the request carries nothing and only the
 * server and wasi-nn are measured: 1x3x224x224 f32 declared N,C,H,W, its bytes interleaved
 * (N,H,W,C) as wws 1.7 reads them; element i of memory is ((i * 37) % 256) / 255.
 * bench/wws_compare.py builds the same tensor for its direct OpenVINO runs.
 */
#include <stdio.h>
#include <string.h>

#include "wasi_nn.h"
#include "wws.h"

#define PIXELS (224 * 224 * 3)
#define CLASSES 1000

static float input[PIXELS];
static float output[CLASSES];

static int fail(const char *step, wasi_nn_errno_t e) {
    char text[96];
    int n = snprintf(text, sizeof text, "{\"error\":\"%s\",\"errno\":%d}", step, (int)e);
    return wws_respond(500, "application/json", text, (size_t)n) == 0 ? 0 : 1;
}

int main(void) {
    char sink[4096];
    while (fread(sink, 1, sizeof sink, stdin) > 0) {
    } /* the request itself is not used */
    for (unsigned i = 0; i < PIXELS; i++) input[i] = (float)((i * 37u) % 256u) / 255.0f;
    uint32_t dims[4] = {1, 3, 224, 224};
    wasi_nn_tensor_t tensor = {dims, 4, WASI_NN_TYPE_F32, (const uint8_t *)input, sizeof input};
    wasi_nn_graph_t graph;
    wasi_nn_context_t ctx;
    uint32_t written = 0;
    wasi_nn_errno_t e;
    if ((e = wasi_nn_load_by_name("mobilenet", 9, &graph))) return fail("load_by_name", e);
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", e);
    if ((e = wasi_nn_set_input(ctx, 0, &tensor))) return fail("set_input", e);
    if ((e = wasi_nn_compute(ctx))) return fail("compute", e);
    if ((e = wasi_nn_get_output(ctx, 0, (uint8_t *)output, sizeof output, &written))) return fail("get_output", e);
    unsigned top = 0;
    for (unsigned i = 1; i < written / 4; i++)
        if (output[i] > output[top]) top = i;
    char text[128];
    int n = snprintf(text, sizeof text, "{\"output_bytes\":%u,\"top\":%u,\"score\":%.6g}", (unsigned)written, top,
                     (double)output[top]);
    return wws_respond(200, "application/json", text, (size_t)n) == 0 ? 0 : 1;
}
