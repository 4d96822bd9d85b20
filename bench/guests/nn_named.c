/* A wws worker that runs one inference on a named (preloaded) model.
 *
 * Configuration through [vars]: MODEL (the model's name), INPUT_DIMS (e.g. "1,3,224,224"),
 * optional OUTPUT_MAX_BYTES (default 64 KiB) and INPUT ("zeros" or "pattern"). The input is the request body when
 * it holds exactly the tensor's bytes (f32, little-endian), otherwise zeros or a fixed pattern,
 * so a benchmark sends no payload. The
 * answer is JSON: output size, argmax, max and sum, and the first few values.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"
#include "wws.h"

#define MAX_DIMS 8
#define SHOWN 8

/* Zero-initialised buffers in the module's own memory: a fresh instance maps them on first touch,
 * so an all-zeros input costs no writes (touching fresh guest pages is what costs here). */
static float input_buf[1 << 18];  /* 1 MiB: a 224x224x3 f32 image fits */
static float output_buf[1 << 14]; /* 64 KiB */

static int fail(const char *step, int err) {
    wws_response_t res;
    wws_response_init(&res, 500);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_printf(&res.body, "{\"error\":\"wasi-nn %s failed\",\"errno\":%d}", step, err);
    wws_response_send(&res);
    return 0;
}

static int parse_dims(const char *text, uint32_t *dims, uint32_t *n, size_t *elems) {
    *n = 0;
    *elems = 1;
    while (text && *text) {
        char *end;
        unsigned long d = strtoul(text, &end, 10);
        if (end == text || d == 0 || *n == MAX_DIMS || d > (1u << 28) / *elems) return -1;
        dims[(*n)++] = (uint32_t)d;
        *elems *= d;
        text = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *n ? 0 : -1;
}

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request\n", 12), 0;
    const char *model = getenv("MODEL");
    uint32_t dims[MAX_DIMS], n_dims;
    size_t elems;
    if (!model || parse_dims(getenv("INPUT_DIMS"), dims, &n_dims, &elems) != 0)
        return wws_respond(500, "text/plain", "set MODEL and INPUT_DIMS in [vars]\n", 35), 0;

    size_t in_bytes = elems * sizeof(float);
    size_t body_len;
    const char *body = wws_request_body(req, &body_len);
    const char *fill = getenv("INPUT");
    float *input = elems <= sizeof input_buf / sizeof(float) ? input_buf : calloc(elems, sizeof(float));
    if (!input) return fail("input allocation", -1);
    if (body_len == in_bytes) {
        memcpy(input, body, in_bytes);
    } else if (!fill || strcmp(fill, "zeros") != 0) {
        for (size_t i = 0; i < elems; i++) input[i] = (float)(i % 251) / 251.0f;
    }

    const char *max_env = getenv("OUTPUT_MAX_BYTES");
    uint32_t out_max = max_env ? (uint32_t)strtoul(max_env, NULL, 10) : (uint32_t)sizeof output_buf;
    float *output = out_max <= sizeof output_buf ? output_buf : malloc(out_max);
    if (!output) return fail("output allocation", -1);

    wasi_nn_graph_t graph;
    wasi_nn_context_t ctx;
    int err;
    if ((err = wasi_nn_load_by_name(model, (uint32_t)strlen(model), &graph))) return fail("load_by_name", err);
    if ((err = wasi_nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", err);
    wasi_nn_tensor_t tensor = {dims, n_dims, WASI_NN_TYPE_F32, (const uint8_t *)input, (uint32_t)in_bytes};
    if ((err = wasi_nn_set_input(ctx, 0, &tensor))) return fail("set_input", err);
    if ((err = wasi_nn_compute(ctx))) return fail("compute", err);
    uint32_t written = 0;
    if ((err = wasi_nn_get_output(ctx, 0, (uint8_t *)output, out_max, &written))) return fail("get_output", err);

    size_t count = written / sizeof(float), best = 0;
    double sum = 0;
    for (size_t i = 0; i < count; i++) {
        sum += output[i];
        if (output[i] > output[best]) best = i;
    }
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_t *out = &res.body;
    wws_buf_puts(out, "{\"model\":");
    wws_buf_json_string(out, model, strlen(model));
    wws_buf_printf(out, ",\"output_bytes\":%u,\"argmax\":%zu,\"max\":%.9g,\"sum\":%.9g,\"first\":[", written, best,
                   count ? output[best] : 0.0, sum);
    for (size_t i = 0; i < count && i < SHOWN; i++) wws_buf_printf(out, "%s%.9g", i ? "," : "", output[i]);
    wws_buf_puts(out, "]}");
    wws_response_send(&res);
    if (input != input_buf) free(input);
    if (output != output_buf) free(output);
    wws_request_free(req);
    return 0;
}
