/* A dynamic route: api/[name].wasm answers /api/<anything>, the segment arrives as the
 * route param "name". Answers in plain text; ?shout=1 upper-cases the greeting. */
#include <ctype.h>
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request\n", 12), 0;
    const char *name = wws_request_param(req, "name");
    int shout = strstr(wws_request_url(req), "shout=1") != NULL;

    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "text/plain; charset=utf-8");
    wws_buf_printf(&res.body, "Hello, %s!\n", name ? name : "stranger");
    if (shout)
        for (size_t i = 0; i < res.body.len; i++) res.body.data[i] = (char)toupper((unsigned char)res.body.data[i]);
    int rc = wws_response_send(&res);
    wws_request_free(req);
    return rc == 0 ? 0 : 1;
}
