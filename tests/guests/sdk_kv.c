/* Key/value store through the C SDK: counts visits in "visits", removes "drop", and answers with
 * the value of "visits" it saw (empty when absent). Keys it does not touch are kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request", 11), 0;
    const char *seen = wws_kv_get("visits");
    char next[24];
    snprintf(next, sizeof next, "%ld", (seen ? strtol(seen, NULL, 10) : 0) + 1);
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "text/plain");
    wws_buf_puts(&res.body, seen ? seen : "");
    if (wws_kv_set("visits", next) != 0 || wws_kv_set("drop", NULL) != 0) return wws_respond(500, "text/plain", "oom", 3), 0;
    wws_response_send(&res);
    wws_request_free(req);
    return 0;
}
