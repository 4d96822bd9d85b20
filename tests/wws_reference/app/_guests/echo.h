/* echo.h: answers with the request JSON exactly as read on stdin, as an application/json body,
 * so a client sees every field the server sent (url, method, headers, body, kv, params).
 * Included by each echo route of this folder; `_guests/` is not a route (wws skips `_` folders). */
#include <stdio.h>

#include "wws.h"

static int echo_request(void) {
    wws_buf_t in, out;
    wws_buf_init(&in);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) wws_buf_append(&in, chunk, n);
    wws_buf_init(&out);
    wws_buf_puts(&out, "{\"data\":");
    wws_buf_json_string(&out, in.data ? in.data : "", in.len);
    wws_buf_puts(&out, ",\"headers\":{\"content-type\":\"application/json\"},\"status\":200,\"kv\":{}}");
    int failed = in.failed || out.failed || fwrite(out.data, 1, out.len, stdout) != out.len;
    wws_buf_free(&in);
    wws_buf_free(&out);
    return failed ? 1 : 0;
}
