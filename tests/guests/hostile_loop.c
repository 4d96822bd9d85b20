/* Hostile worker: reads the request, then spins forever. The server must time it out (504). */
#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    volatile unsigned long spins = 0;
    for (;;) spins++;
    wws_request_free(req);
    return 0;
}
