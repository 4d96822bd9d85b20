/* Hostile worker: floods stdout with a response far larger than any host buffer should
 * accept (1 GiB of body). The host must refuse the excess and answer 500, not run out of memory. */
#include <stdio.h>
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof chunk);
    fputs("{\"data\":\"", stdout);
    for (int i = 0; i < (1 << 14); i++) {
        if (fwrite(chunk, 1, sizeof chunk, stdout) != sizeof chunk) break; /* the host said no */
    }
    fputs("\",\"status\":200}", stdout);
    wws_request_free(req);
    return 0;
}
