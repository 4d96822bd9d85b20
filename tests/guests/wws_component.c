// component
/* wws_component: nn_load as a component, through the WIT wasi:nn interfaces. A wws worker that
 * passes the request body to `load` as an ONNX model (or, with MODEL set in [vars], uses that
 * named model), runs it on an all-zeros f32 input of INPUT_DIMS and answers
 * {"output":"<hex>","name":"<output name>"}, or {"step":"<call>","code":N,"data":"..."}.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn_wit.h"
#include "wws.h"

#define MAX_DIMS 8

static float input[1 << 14];

static int failed(const char *step, wasi_nn_handle_t err) {
    wasi_nn_bytes_t data;
    int code = wasi_nn_error_code(err);
    wasi_nn_error_data(err, &data);
    wasi_nn_error_drop(err);
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_printf(&res.body, "{\"step\":\"%s\",\"code\":%d,\"data\":\"", step, code);
    for (size_t i = 0; i < data.len; i++)  /* the host's text has no quotes or backslashes to escape here */
        if (data.ptr[i] != '"' && data.ptr[i] != '\\') wws_buf_printf(&res.body, "%c", data.ptr[i]);
    wws_buf_puts(&res.body, "\"}");
    wws_response_send(&res);
    free(data.ptr);
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

    wasi_nn_result_t r;
    const char *model = getenv("MODEL");
    if (model) {
        wasi_nn_load_by_name(model, strlen(model), &r);
    } else {
        size_t len;
        const char *body = wws_request_body(req, &len);
        wasi_nn_bytes_t builder = {(uint8_t *)body, len};
        wasi_nn_load(&builder, 1, NN_ONNX, NN_CPU, &r);
    }
    if (r.is_err) return failed("load", r.handle);
    wasi_nn_handle_t graph = r.handle;
    wasi_nn_init_execution_context(graph, &r);
    if (r.is_err) return failed("init", r.handle);
    wasi_nn_named_tensor_t in = {{(uint8_t *)"0", 1},
                                 wasi_nn_tensor_new(dims, n_dims, NN_FP32, (uint8_t *)input, elems * sizeof(float))};
    wasi_nn_outputs_result_t out;
    wasi_nn_compute(r.handle, &in, 1, &out);
    if (out.is_err) return failed("compute", out.val.err);
    if (out.val.ok.len < 1) return wws_respond(500, "text/plain", "no outputs\n", 11), 0;
    wasi_nn_bytes_t data;
    wasi_nn_tensor_data(out.val.ok.ptr[0].tensor, &data);

    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_puts(&res.body, "{\"output\":\"");
    for (size_t i = 0; i < data.len; i++) wws_buf_printf(&res.body, "%02x", data.ptr[i]);
    wasi_nn_bytes_t name = out.val.ok.ptr[0].name;
    wws_buf_printf(&res.body, "\",\"name\":\"%.*s\"}", (int)name.len, (const char *)name.ptr);
    wws_response_send(&res);
    wws_request_free(req);
    return 0;
}
