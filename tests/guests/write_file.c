/* write_file: a wws worker that writes the request body to /data/out.txt and answers "written".
 * When the write is refused it says why on stderr and exits 1, as most programs would.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "wws.h"

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request\n", 12), 0;
    size_t len;
    const char *body = wws_request_body(req, &len);
    FILE *f = fopen("/data/out.txt", "wb");
    if (!f || fwrite(body, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write /data/out.txt: %s\n", strerror(errno));
        return 1;
    }
    wws_request_free(req);
    return wws_respond(200, "text/plain", "written\n", 8), 0;
}
