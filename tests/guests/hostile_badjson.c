/* Hostile worker: exits cleanly but writes something that is not a wws response. Expect 500. */
#include <stdio.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    fputs("this is not JSON {\"data\":", stdout);
    wws_request_free(req);
    return 0;
}
