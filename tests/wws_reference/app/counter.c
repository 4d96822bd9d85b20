/* /counter: reads kv.counter (absent = 0), answers and stores it + 1 ([data.kv] in counter.toml). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

/* The value of "counter" inside the request's "kv" object, or 0. The request JSON is compact
 * or spaced depending on the server, so spaces are skipped. */
static long read_counter(const char *json) {
    const char *kv = strstr(json, "\"kv\"");
    const char *key = kv ? strstr(kv, "\"counter\"") : NULL;
    if (!key) return 0;
    const char *p = key + strlen("\"counter\"");
    while (*p == ' ' || *p == ':') p++;
    if (*p != '"') return 0;
    return strtol(p + 1, NULL, 10);
}

int main(void) {
    wws_buf_t in;
    wws_buf_init(&in);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) wws_buf_append(&in, chunk, n);
    long next = read_counter(in.data ? in.data : "") + 1;
    wws_buf_free(&in);
    printf("{\"data\":\"%ld\",\"headers\":{\"content-type\":\"text/plain\"},\"status\":200,"
           "\"kv\":{\"counter\":\"%ld\"}}", next, next);
    return 0;
}
