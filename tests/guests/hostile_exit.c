/* Hostile worker: writes a valid response, then exits with status 3. A failing exit wins: 500. */
#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    wws_respond(200, "text/plain", "looks fine", 10);
    wws_request_free(req);
    return 3;
}
