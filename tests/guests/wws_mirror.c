/* wws_mirror: shows a test both sides of the protocol.
 *
 * A request with the header `x-reply: raw` gets its body written to stdout as the worker's
 * response JSON, byte for byte (so a test chooses exactly what the server must read); any other
 * request gets 200 application/json whose body is the request JSON exactly as stdin held it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

int main(void) {
    size_t cap = 1 << 16, len = 0, n;
    char *in = malloc(cap);
    while (in && (n = fread(in + len, 1, cap - len, stdin)) > 0) {
        len += n;
        if (len == cap) in = realloc(in, cap *= 2);
    }
    if (!in) return 1;
    wws_request_t *req = wws_request_parse(in, len);
    const char *reply = req ? wws_request_header(req, "x-reply") : NULL;
    if (reply && strcmp(reply, "raw") == 0) {
        size_t body_len;
        const char *body = wws_request_body(req, &body_len);
        fwrite(body, 1, body_len, stdout);
        return 0;
    }
    return wws_respond(200, "application/json", in, len) == 0 ? 0 : 1;
}
