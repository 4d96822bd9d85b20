/* /binary: every byte value 0..255 once, sent as `base64: true`. */
#include <stdio.h>

#include "wws.h"

int main(void) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char bytes[256];
    for (int i = 0; i < 256; i++) bytes[i] = (unsigned char)i;
    wws_buf_t out;
    wws_buf_init(&out);
    wws_buf_puts(&out, "{\"data\":\"");
    for (int i = 0; i < 256; i += 3) {
        unsigned v = (unsigned)bytes[i] << 16;
        int left = 256 - i;
        if (left > 1) v |= (unsigned)bytes[i + 1] << 8;
        if (left > 2) v |= bytes[i + 2];
        char q[4] = {b64[(v >> 18) & 63], b64[(v >> 12) & 63], left > 1 ? b64[(v >> 6) & 63] : '=',
                     left > 2 ? b64[v & 63] : '='};
        wws_buf_append(&out, q, 4);
    }
    wws_buf_puts(&out, "\",\"headers\":{\"content-type\":\"application/octet-stream\"},"
                       "\"status\":200,\"kv\":{},\"base64\":true}");
    int failed = out.failed || fwrite(out.data, 1, out.len, stdout) != out.len;
    wws_buf_free(&out);
    return failed ? 1 : 0;
}
