/* /output?<variant>: response objects at the edge of the protocol, printed as they are.
 * nokv: no "kv" member; badb64: "base64": true over data that is not base64; status1000 and
 * status0: statuses outside 100..999; numdata: "data" is a number. */
#include <stdio.h>
#include <string.h>

#include "wws.h"

static const char *const VARIANTS[][2] = {
    {"nokv", "{\"data\":\"no kv\",\"headers\":{},\"status\":200}"},
    {"badb64", "{\"data\":\"*not base64*\",\"headers\":{},\"status\":200,\"kv\":{},\"base64\":true}"},
    {"status1000", "{\"data\":\"odd status\",\"headers\":{},\"status\":1000,\"kv\":{}}"},
    {"status0", "{\"data\":\"zero status\",\"headers\":{},\"status\":0,\"kv\":{}}"},
    {"numdata", "{\"data\":42,\"headers\":{},\"status\":200,\"kv\":{}}"},
};

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return 1;
    const char *query = strchr(wws_request_url(req), '?');
    for (size_t i = 0; query && i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) {
        if (!strcmp(query + 1, VARIANTS[i][0])) {
            fputs(VARIANTS[i][1], stdout);
            wws_request_free(req);
            return 0;
        }
    }
    wws_request_free(req);
    return 1;
}
