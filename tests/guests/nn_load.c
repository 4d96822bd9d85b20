/* nn_load: a wws worker that passes the request body to wasi-nn `load` as an ONNX model, runs
 * it once on an all-zeros f32 input of INPUT_DIMS ([vars], e.g. "1,256") and answers with the
 * output as hex: {"output":"<hex>"}, or {"step":"<call>","errno":N} when a call fails.
 * A guest that sends any model it likes: the host must never let one read a file.
 * With MODEL set ([vars]) it runs that named model instead (load_by_name) and ignores the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"
#include "wws.h"

#define MAX_DIMS 8

static float input[1 << 14];
static uint8_t output[1 << 16];

static int failed(const char *step, wasi_nn_errno_t e) {
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_printf(&res.body, "{\"step\":\"%s\",\"errno\":%d}", step, (int)e);
    wws_response_send(&res);
    return 0;
}

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request\n", 12), 0;
    uint32_t dims[MAX_DIMS], n_dims = 0;
    size_t elems = 1;
    for (const char *p = getenv("INPUT_DIMS"); p && *p && n_dims < MAX_DIMS;) {
        char *end;
        dims[n_dims] = (uint32_t)strtoul(p, &end, 10);
        elems *= dims[n_dims++];
        p = *end == ',' ? end + 1 : end;
    }
    if (n_dims == 0 || elems > sizeof input / sizeof input[0])
        return wws_respond(500, "text/plain", "set INPUT_DIMS\n", 15), 0;

    size_t len;
    const char *body = wws_request_body(req, &len);
    wasi_nn_graph_builder_t builder = {(const uint8_t *)body, (uint32_t)len};
    wasi_nn_graph_t graph;
    wasi_nn_context_t ctx;
    wasi_nn_errno_t e;
    const char *model = getenv("MODEL");
    if (model) {
        if ((e = wasi_nn_load_by_name(model, (uint32_t)strlen(model), &graph))) return failed("load_by_name", e);
    } else if ((e = wasi_nn_load(&builder, 1, WASI_NN_ENCODING_ONNX, WASI_NN_TARGET_CPU, &graph))) {
        return failed("load", e);
    }
    if ((e = wasi_nn_init_execution_context(graph, &ctx))) return failed("init_execution_context", e);
    wasi_nn_tensor_t t = {dims, n_dims, WASI_NN_TYPE_F32, (const uint8_t *)input, (uint32_t)(elems * sizeof(float))};
    if ((e = wasi_nn_set_input(ctx, 0, &t))) return failed("set_input", e);
    if ((e = wasi_nn_compute(ctx))) return failed("compute", e);
    uint32_t written = 0;
    if ((e = wasi_nn_get_output(ctx, 0, output, sizeof output, &written))) return failed("get_output", e);

    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_puts(&res.body, "{\"output\":\"");
    for (uint32_t i = 0; i < written; i++) wws_buf_printf(&res.body, "%02x", output[i]);
    wws_buf_puts(&res.body, "\"}");
    wws_response_send(&res);
    wws_request_free(req);
    return 0;
}
