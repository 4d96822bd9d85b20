/* Key/value store worker: reads kv.counter from the request, answers "counter=N keys=K" (N the
 * value it saw, 0 when absent; K the number of keys it saw) and returns kv {"counter": N+1}.
 * The request body picks a variant:
 *   "pad N"  also returns a key "pad" of N bytes (to pass a store's size limit)
 *   "nokv"   returns no kv at all
 *   "badkv"  returns a kv whose value is a number, not a string
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

typedef struct {
    const char *p, *end;
} scan_t;

static void ws(scan_t *s) {
    while (s->p < s->end && strchr(" \t\r\n", *s->p)) s->p++;
}

/* Skips a JSON string at s->p; sets *start and *len to its raw (still escaped) contents. */
static int string(scan_t *s, const char **start, size_t *len) {
    if (s->p >= s->end || *s->p != '"') return -1;
    const char *b = ++s->p;
    while (s->p < s->end && *s->p != '"') s->p += *s->p == '\\' ? 2 : 1;
    if (s->p >= s->end) return -1;
    if (start) *start = b;
    if (len) *len = (size_t)(s->p - b);
    s->p++;
    return 0;
}

static int value(scan_t *s) {
    ws(s);
    if (s->p >= s->end) return -1;
    if (*s->p == '"') return string(s, NULL, NULL);
    if (*s->p == '{' || *s->p == '[') {
        int depth = 0;
        while (s->p < s->end) {
            if (*s->p == '"') {
                if (string(s, NULL, NULL) != 0) return -1;
                continue;
            }
            if (*s->p == '{' || *s->p == '[') depth++;
            if (*s->p == '}' || *s->p == ']') depth--;
            s->p++;
            if (depth == 0) return 0;
        }
        return -1;
    }
    while (s->p < s->end && !strchr(",}] \t\r\n", *s->p)) s->p++; /* number, true, false, null */
    return 0;
}

/* Finds the top-level "kv" object; counts its keys and reads its "counter" value. */
static int read_kv(const char *json, size_t len, long *counter, int *keys) {
    scan_t s = {json, json + len};
    ws(&s);
    if (s.p >= s.end || *s.p++ != '{') return -1;
    for (;;) {
        const char *k;
        size_t kl;
        ws(&s);
        if (string(&s, &k, &kl) != 0) return -1;
        ws(&s);
        if (s.p >= s.end || *s.p++ != ':') return -1;
        ws(&s);
        if (kl == 2 && !memcmp(k, "kv", 2)) {
            if (s.p >= s.end || *s.p++ != '{') return -1;
            ws(&s);
            while (s.p < s.end && *s.p != '}') {
                const char *ik, *iv;
                size_t ikl, ivl;
                if (string(&s, &ik, &ikl) != 0) return -1;
                ws(&s);
                if (s.p >= s.end || *s.p++ != ':') return -1;
                ws(&s);
                if (string(&s, &iv, &ivl) != 0) return -1;
                (*keys)++;
                if (ikl == 7 && !memcmp(ik, "counter", 7)) *counter = strtol(iv, NULL, 10);
                ws(&s);
                if (s.p < s.end && *s.p == ',') s.p++, ws(&s);
            }
            if (s.p >= s.end) return -1;
            s.p++;
        } else if (value(&s) != 0) {
            return -1;
        }
        ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        return s.p < s.end && *s.p == '}' ? 0 : -1;
    }
}

int main(void) {
    wws_buf_t in;
    wws_buf_init(&in);
    char chunk[16384];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) wws_buf_append(&in, chunk, n);
    wws_request_t *req = in.data ? wws_request_parse(in.data, in.len) : NULL;
    long counter = 0;
    int keys = 0;
    if (!req || read_kv(in.data, in.len, &counter, &keys) != 0) {
        wws_respond(400, "text/plain", "not a wws request", 17);
        return 0;
    }
    size_t body_len;
    const char *body = wws_request_body(req, &body_len);

    wws_buf_t out;
    wws_buf_init(&out);
    wws_buf_printf(&out, "{\"data\":\"counter=%ld keys=%d\",\"headers\":{\"content-type\":\"text/plain\"},"
                   "\"status\":200", counter, keys);
    if (!strcmp(body, "badkv")) {
        wws_buf_printf(&out, ",\"kv\":{\"counter\":%ld}", counter + 1);
    } else if (strcmp(body, "nokv") != 0) {
        wws_buf_printf(&out, ",\"kv\":{\"counter\":\"%ld\"", counter + 1);
        if (!strncmp(body, "pad ", 4)) {
            long pad = strtol(body + 4, NULL, 10);
            wws_buf_puts(&out, ",\"pad\":\"");
            for (long i = 0; i < pad; i++) wws_buf_append(&out, "x", 1);
            wws_buf_puts(&out, "\"");
        }
        wws_buf_puts(&out, "}");
    }
    wws_buf_puts(&out, "}");
    fwrite(out.data, 1, out.len, stdout);
    wws_buf_free(&out);
    wws_buf_free(&in);
    wws_request_free(req);
    return 0;
}
