/* /headers: status 201 and several response headers. Without a query there is no content-type
 * (the server's default applies); with ?ct=1 the worker sets one. `x_under_score` has a '_' in
 * its name (wws turns '_' into '-', a QuickJS workaround that applies to every worker). */
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return 1;
    int typed = strstr(wws_request_url(req), "ct=1") != NULL;
    wws_response_t res;
    wws_response_init(&res, 201);
    wws_response_header(&res, "x-plain", "plain value");
    wws_response_header(&res, "X-Mixed-Case", "Mixed");
    wws_response_header(&res, "x_under_score", "underscored");
    wws_response_header(&res, "cache-control", "no-store");
    if (typed) wws_response_header(&res, "content-type", "application/x-reference; charset=utf-8");
    wws_buf_puts(&res.body, typed ? "typed" : "untyped");
    int rc = wws_response_send(&res);
    wws_request_free(req);
    return rc == 0 ? 0 : 1;
}
