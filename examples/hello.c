/* hello: a wws worker at /hello that echoes the request back as JSON.
 *
 * Shows the protocol helpers in sdk/c/wws.h: the method, path, route params, a header,
 * and a variable from hello.toml ([vars] arrive as environment variables).
 */
#include <stdlib.h>
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) {
        static const char msg[] = "{\"error\":\"the request is not a wws request object\"}";
        wws_respond(400, "application/json", msg, sizeof msg - 1);
        return 0;
    }
    const char *greeting = getenv("GREETING");
    const char *agent = wws_request_header(req, "user-agent");
    size_t body_len;
    const char *body = wws_request_body(req, &body_len);

    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_response_header(&res, "x-worker", "hello");

    wws_buf_t *out = &res.body;
    wws_buf_puts(out, "{\"message\":");
    wws_buf_json_string(out, greeting ? greeting : "Hello", strlen(greeting ? greeting : "Hello"));
    wws_buf_puts(out, ",\"method\":");
    wws_buf_json_string(out, wws_request_method(req), strlen(wws_request_method(req)));
    wws_buf_puts(out, ",\"path\":");
    wws_buf_json_string(out, wws_request_path(req), strlen(wws_request_path(req)));
    wws_buf_puts(out, ",\"url\":");
    wws_buf_json_string(out, wws_request_url(req), strlen(wws_request_url(req)));
    wws_buf_puts(out, ",\"params\":{");
    const wws_pair_t *params;
    size_t n = wws_request_params(req, &params);
    for (size_t i = 0; i < n; i++) {
        if (i) wws_buf_puts(out, ",");
        wws_buf_json_string(out, params[i].name, strlen(params[i].name));
        wws_buf_puts(out, ":");
        wws_buf_json_string(out, params[i].value, params[i].value_len);
    }
    wws_buf_puts(out, "},\"user_agent\":");
    if (agent) wws_buf_json_string(out, agent, strlen(agent));
    else wws_buf_puts(out, "null");
    wws_buf_printf(out, ",\"body_bytes\":%zu,\"body\":", body_len);
    wws_buf_json_string(out, body, body_len);
    wws_buf_puts(out, "}");

    int rc = wws_response_send(&res);
    wws_request_free(req);
    return rc == 0 ? 0 : 1;
}
