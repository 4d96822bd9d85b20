/* wws.c: the Wasm Workers Server protocol for C guests (see wws.h). */
#include "wws.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ------------------------------------------------------------------------- */

void wws_buf_init(wws_buf_t *b) { memset(b, 0, sizeof *b); }

void wws_buf_free(wws_buf_t *b) {
    free(b->data);
    wws_buf_init(b);
}

static int buf_reserve(wws_buf_t *b, size_t extra) {
    if (b->failed) return -1;
    if (extra > SIZE_MAX - b->len - 1) {
        b->failed = 1;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int wws_buf_append(wws_buf_t *b, const void *data, size_t len) {
    if (buf_reserve(b, len) != 0) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int wws_buf_puts(wws_buf_t *b, const char *s) { return wws_buf_append(b, s, strlen(s)); }

int wws_buf_printf(wws_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static int utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq(u + i, len - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int wws_buf_json_string(wws_buf_t *b, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    if (wws_buf_append(b, "\"", 1) != 0) return -1;
    size_t run = 0; /* start of bytes copied verbatim */
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        const char *esc = NULL;
        char ubuf[7];
        size_t k = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7F) {
            ubuf[0] = '\\', ubuf[1] = 'u', ubuf[2] = '0', ubuf[3] = '0';
            ubuf[4] = hex[c >> 4], ubuf[5] = hex[c & 15], ubuf[6] = '\0';
            esc = ubuf;
        } else if (c >= 0x80) {
            k = utf8_seq(u + i, len - i);
            if (!k) esc = "\\ufffd", k = 1;
        }
        if (esc) {
            wws_buf_append(b, s + run, i - run);
            wws_buf_puts(b, esc);
            run = i + k;
        }
        i += k;
    }
    wws_buf_append(b, s + run, len - run);
    return wws_buf_append(b, "\"", 1);
}

/* ---- base64 ------------------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_encode(wws_buf_t *b, const unsigned char *s, size_t len) {
    if (buf_reserve(b, (len + 2) / 3 * 4) != 0) return -1;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = b64chars[v >> 18], *o++ = b64chars[(v >> 12) & 63];
        *o++ = b64chars[(v >> 6) & 63], *o++ = b64chars[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = b64chars[v >> 18], *o++ = b64chars[(v >> 12) & 63];
        *o++ = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return 0;
}

static int b64_value(char c) {
    const char *p = c ? strchr(b64chars, c) : NULL;
    return p ? (int)(p - b64chars) : -1;
}

/* Decodes padded base64 in place; returns the decoded length, or -1 when the text is not that. */
static long b64_decode_inplace(char *s, size_t len) {
    if (len % 4) return -1;
    size_t data = len;
    while (data > 0 && len - data < 2 && s[data - 1] == '=') data--;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64_value(s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            s[o++] = (char)((acc >> bits) & 0xFF);
        }
    }
    s[o] = '\0';
    return (long)o;
}

/* ---- JSON reading (just enough for the request object) ------------------------------- */

typedef struct {
    const char *p, *end;
} parser_t;

#define MAX_DEPTH 64

static void skip_ws(parser_t *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(wws_buf_t *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) t[0] = (char)cp, n = 1;
    else if (cp < 0x800) t[0] = (char)(0xC0 | cp >> 6), t[1] = (char)(0x80 | (cp & 63)), n = 2;
    else if (cp < 0x10000)
        t[0] = (char)(0xE0 | cp >> 12), t[1] = (char)(0x80 | ((cp >> 6) & 63)), t[2] = (char)(0x80 | (cp & 63)), n = 3;
    else
        t[0] = (char)(0xF0 | cp >> 18), t[1] = (char)(0x80 | ((cp >> 12) & 63)),
        t[2] = (char)(0x80 | ((cp >> 6) & 63)), t[3] = (char)(0x80 | (cp & 63)), n = 4;
    wws_buf_append(b, t, n);
}

/* Parses a JSON string at ps->p; decoded bytes go to out (NULL to skip). */
static int parse_string(parser_t *ps, wws_buf_t *out) {
    if (ps->p >= ps->end || *ps->p != '"') return -1;
    ps->p++;
    const char *run = ps->p;
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            if (out) wws_buf_append(out, run, (size_t)(ps->p - run));
            ps->p++;
            return out && out->failed ? -1 : 0;
        }
        if (c < 0x20) return -1;
        if (c != '\\') {
            ps->p++;
            continue;
        }
        if (out) wws_buf_append(out, run, (size_t)(ps->p - run));
        if (ps->end - ps->p < 2) return -1;
        char e = ps->p[1];
        ps->p += 2;
        static const char escapes[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
        const char *simple = e ? strchr(escapes, e) : NULL;
        if (simple) {
            if (out) wws_buf_append(out, &decoded[simple - escapes], 1);
        } else if (e == 'u') {
            uint32_t cp;
            if (ps->end - ps->p < 4 || hex4(ps->p, &cp) != 0) return -1;
            ps->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' && hex4(ps->p + 2, &lo) == 0 &&
                    lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    ps->p += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            if (out) put_utf8(out, cp);
        } else {
            return -1;
        }
        run = ps->p;
    }
    return -1;
}

static int skip_value(parser_t *ps, int depth);

static int skip_container(parser_t *ps, int depth, char close, int is_object) {
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) return ps->p++, 0;
    for (;;) {
        if (is_object) {
            skip_ws(ps);
            if (parse_string(ps, NULL) != 0) return -1;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return -1;
            ps->p++;
        }
        if (skip_value(ps, depth + 1) != 0) return -1;
        skip_ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) return ps->p++, 0;
        return -1;
    }
}

static int skip_value(parser_t *ps, int depth) {
    if (depth > MAX_DEPTH) return -1;
    skip_ws(ps);
    if (ps->p >= ps->end) return -1;
    char c = *ps->p;
    if (c == '"') return parse_string(ps, NULL);
    if (c == '{') return skip_container(ps, depth, '}', 1);
    if (c == '[') return skip_container(ps, depth, ']', 0);
    const char *start = ps->p;
    while (ps->p < ps->end && strchr("+-.0123456789eEtruefalsn", *ps->p) && *ps->p) ps->p++;
    return ps->p > start ? 0 : -1;
}

/* ---- request ------------------------------------------------------------------------ */

/* The store of this invocation: one request per instance, so one store, as the wws kits keep it. */
static wws_pair_t *kv_pairs;
static size_t kv_count;

struct wws_request {
    char *method, *url, *path, *body;
    size_t body_len;
    wws_pair_t *headers, *params;
    size_t n_headers, n_params;
};

static char *take(wws_buf_t *b, size_t *len) {
    if (b->failed) return wws_buf_free(b), NULL;
    if (!b->data && wws_buf_append(b, "", 0) != 0) return NULL;
    if (len) *len = b->len;
    char *s = b->data;
    wws_buf_init(b);
    return s;
}

static int parse_owned_string(parser_t *ps, char **out, size_t *len) {
    wws_buf_t b;
    wws_buf_init(&b);
    if (parse_string(ps, &b) != 0) return wws_buf_free(&b), -1;
    free(*out);
    *out = take(&b, len);
    return *out ? 0 : -1;
}

static void free_pairs(wws_pair_t *pairs, size_t n) {
    for (size_t i = 0; i < n; i++) free(pairs[i].name), free(pairs[i].value);
    free(pairs);
}

/* An object of string values; members with other value types are skipped. */
static int parse_string_map(parser_t *ps, wws_pair_t **out, size_t *count) {
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == 'n') return skip_value(ps, 1); /* null */
    if (ps->p >= ps->end || *ps->p != '{') return -1;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') return ps->p++, 0;
    for (;;) {
        wws_pair_t pair = {NULL, NULL, 0};
        skip_ws(ps);
        if (parse_owned_string(ps, &pair.name, NULL) != 0) return -1;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return free(pair.name), -1;
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == '"') {
            if (parse_owned_string(ps, &pair.value, &pair.value_len) != 0) return free(pair.name), -1;
            wws_pair_t *grown = realloc(*out, (*count + 1) * sizeof *grown);
            if (!grown) return free(pair.name), free(pair.value), -1;
            *out = grown;
            (*out)[(*count)++] = pair;
        } else {
            free(pair.name);
            if (skip_value(ps, 1) != 0) return -1;
        }
        skip_ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == '}') return ps->p++, 0;
        return -1;
    }
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static char *url_path(const char *url) {
    const char *p = strstr(url, "://");
    if (p) {
        p += 3;
        p += strcspn(p, "/?#");
    } else {
        p = url;
    }
    size_t n = strcspn(p, "?#");
    char *out = malloc(n + 2);
    if (!out) return NULL;
    if (n == 0) return strcpy(out, "/");
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

wws_request_t *wws_request_parse(const char *json, size_t len) {
    parser_t ps = {json, json + len};
    wws_request_t *req = calloc(1, sizeof *req);
    if (!req) return NULL;
    int base64 = 0, ok = 0;
    skip_ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{') goto done;
    ps.p++;
    skip_ws(&ps);
    if (ps.p < ps.end && *ps.p == '}') {
        ps.p++;
        ok = 1;
        goto done;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(&ps);
        if (parse_owned_string(&ps, &key, NULL) != 0) goto done;
        skip_ws(&ps);
        if (ps.p >= ps.end || *ps.p != ':') {
            free(key);
            goto done;
        }
        ps.p++;
        skip_ws(&ps);
        int rc;
        if (!strcmp(key, "method")) rc = parse_owned_string(&ps, &req->method, NULL);
        else if (!strcmp(key, "url")) rc = parse_owned_string(&ps, &req->url, NULL);
        else if (!strcmp(key, "body")) rc = parse_owned_string(&ps, &req->body, &req->body_len);
        else if (!strcmp(key, "headers")) rc = parse_string_map(&ps, &req->headers, &req->n_headers);
        else if (!strcmp(key, "params")) rc = parse_string_map(&ps, &req->params, &req->n_params);
        else if (!strcmp(key, "kv")) {
            free_pairs(kv_pairs, kv_count);
            kv_pairs = NULL, kv_count = 0;
            rc = parse_string_map(&ps, &kv_pairs, &kv_count);
        }
        else if (!strcmp(key, "base64")) {
            base64 = ps.end - ps.p >= 4 && !memcmp(ps.p, "true", 4);
            rc = skip_value(&ps, 1);
        } else rc = skip_value(&ps, 1);
        free(key);
        if (rc != 0) goto done;
        skip_ws(&ps);
        if (ps.p >= ps.end) goto done;
        if (*ps.p == ',') {
            ps.p++;
            continue;
        }
        if (*ps.p != '}') goto done;
        ps.p++;
        ok = 1;
        break;
    }
done:
    skip_ws(&ps);
    if (ok && ps.p != ps.end) ok = 0; /* trailing garbage */
    if (ok && !req->method) ok = (req->method = dup_str("GET")) != NULL;
    if (ok && !req->url) ok = (req->url = dup_str("/")) != NULL;
    if (ok && !req->body) ok = (req->body = dup_str("")) != NULL;
    if (ok && base64) {
        long n = b64_decode_inplace(req->body, req->body_len);
        ok = n >= 0;
        if (ok) req->body_len = (size_t)n;
    }
    if (ok) ok = (req->path = url_path(req->url)) != NULL;
    if (!ok) {
        wws_request_free(req);
        return NULL;
    }
    return req;
}

wws_request_t *wws_request_read(void) {
    wws_buf_t in;
    wws_buf_init(&in);
    char chunk[16384];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (wws_buf_append(&in, chunk, n) != 0) break;
    }
    wws_request_t *req = in.failed || ferror(stdin) ? NULL : wws_request_parse(in.data ? in.data : "", in.len);
    wws_buf_free(&in);
    return req;
}

void wws_request_free(wws_request_t *req) {
    if (!req) return;
    free(req->method), free(req->url), free(req->path), free(req->body);
    free_pairs(req->headers, req->n_headers);
    free_pairs(req->params, req->n_params);
    free(req);
}

const char *wws_request_method(const wws_request_t *req) { return req->method; }
const char *wws_request_url(const wws_request_t *req) { return req->url; }
const char *wws_request_path(const wws_request_t *req) { return req->path; }

const char *wws_request_body(const wws_request_t *req, size_t *len) {
    if (len) *len = req->body_len;
    return req->body;
}

static int ascii_casecmp(const char *a, const char *b) {
    for (;; a++, b++) {
        int x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y || !x) return x - y;
    }
}

const char *wws_request_param(const wws_request_t *req, const char *name) {
    for (size_t i = 0; i < req->n_params; i++)
        if (!strcmp(req->params[i].name, name)) return req->params[i].value;
    return NULL;
}

const char *wws_request_header(const wws_request_t *req, const char *name) {
    for (size_t i = 0; i < req->n_headers; i++)
        if (!ascii_casecmp(req->headers[i].name, name)) return req->headers[i].value;
    return NULL;
}

size_t wws_request_params(const wws_request_t *req, const wws_pair_t **out) {
    *out = req->params;
    return req->n_params;
}

size_t wws_request_headers(const wws_request_t *req, const wws_pair_t **out) {
    *out = req->headers;
    return req->n_headers;
}

/* ---- key/value store ---------------------------------------------------------------- */

const char *wws_kv_get(const char *key) {
    for (size_t i = 0; i < kv_count; i++)
        if (!strcmp(kv_pairs[i].name, key)) return kv_pairs[i].value;
    return NULL;
}

int wws_kv_set(const char *key, const char *value) {
    size_t i = 0;
    while (i < kv_count && strcmp(kv_pairs[i].name, key)) i++;
    if (!value) {
        if (i == kv_count) return 0;
        free(kv_pairs[i].name), free(kv_pairs[i].value);
        kv_pairs[i] = kv_pairs[--kv_count];
        return 0;
    }
    char *v = dup_str(value);
    if (!v) return -1;
    if (i < kv_count) {
        free(kv_pairs[i].value);
        kv_pairs[i].value = v, kv_pairs[i].value_len = strlen(v);
        return 0;
    }
    char *k = dup_str(key);
    wws_pair_t *grown = k ? realloc(kv_pairs, (kv_count + 1) * sizeof *grown) : NULL;
    if (!grown) return free(k), free(v), -1;
    kv_pairs = grown;
    kv_pairs[kv_count++] = (wws_pair_t){k, v, strlen(v)};
    return 0;
}

size_t wws_kv_entries(const wws_pair_t **out) {
    *out = kv_pairs;
    return kv_count;
}

/* ---- response ----------------------------------------------------------------------- */

void wws_response_init(wws_response_t *res, int status) {
    res->status = status;
    wws_buf_init(&res->headers);
    wws_buf_init(&res->body);
}

int wws_response_header(wws_response_t *res, const char *name, const char *value) {
    if (res->headers.len) wws_buf_append(&res->headers, ",", 1);
    wws_buf_json_string(&res->headers, name, strlen(name));
    wws_buf_append(&res->headers, ":", 1);
    return wws_buf_json_string(&res->headers, value, strlen(value));
}

int wws_response_send(wws_response_t *res) {
    wws_buf_t out;
    wws_buf_init(&out);
    const char *body = res->body.data ? res->body.data : "";
    int binary = !utf8_valid(body, res->body.len);
    wws_buf_puts(&out, "{\"data\":");
    if (binary) {
        wws_buf_append(&out, "\"", 1);
        b64_encode(&out, (const unsigned char *)body, res->body.len);
        wws_buf_append(&out, "\"", 1);
    } else {
        wws_buf_json_string(&out, body, res->body.len);
    }
    wws_buf_puts(&out, ",\"headers\":{");
    wws_buf_append(&out, res->headers.data ? res->headers.data : "", res->headers.len);
    wws_buf_printf(&out, "},\"status\":%d,\"kv\":{", res->status);
    for (size_t i = 0; i < kv_count; i++) {
        if (i) wws_buf_append(&out, ",", 1);
        wws_buf_json_string(&out, kv_pairs[i].name, strlen(kv_pairs[i].name));
        wws_buf_append(&out, ":", 1);
        wws_buf_json_string(&out, kv_pairs[i].value, kv_pairs[i].value_len);
    }
    wws_buf_printf(&out, "},\"base64\":%s}", binary ? "true" : "false");
    int rc = -1;
    if (!out.failed && !res->headers.failed && !res->body.failed) {
        rc = fwrite(out.data, 1, out.len, stdout) == out.len && fflush(stdout) == 0 ? 0 : -1;
    }
    wws_buf_free(&out);
    wws_buf_free(&res->headers);
    wws_buf_free(&res->body);
    return rc;
}

int wws_respond(int status, const char *content_type, const char *body, size_t len) {
    wws_response_t res;
    wws_response_init(&res, status);
    if (content_type) wws_response_header(&res, "content-type", content_type);
    wws_buf_append(&res.body, body, len);
    return wws_response_send(&res);
}
