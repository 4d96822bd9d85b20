/* Hostile worker: starts a response, then executes `unreachable` (a trap). Expect 500. */
#include <stdio.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    fputs("{\"data\":\"half", stdout);
    fflush(stdout);
    __builtin_trap();
    wws_request_free(req);
    return 0;
}
