/* wws.h: the Wasm Workers Server protocol for C guests.
 *
 * A worker is a WASI command: the server writes one JSON request to stdin and reads one JSON
 * response from stdout. These helpers read and decode the request, build the response and
 * escape JSON so a guest needs no JSON library.
 *
 *     wws_request_t *req = wws_request_read();
 *     if (!req) return wws_respond(400, "text/plain", "bad request", 11), 0;
 *     wws_response_t res;
 *     wws_response_init(&res, 200);
 *     wws_response_header(&res, "content-type", "text/plain");
 *     wws_buf_printf(&res.body, "hello %s", wws_request_param(req, "name"));
 *     wws_response_send(&res);
 *     wws_request_free(req);
 *
 * Strings returned by the request getters belong to the request and are NUL-terminated; a
 * decoded string may also contain NUL bytes, use the *_len variants where that matters.
 */
#ifndef WASMINFER_WWS_H
#define WASMINFER_WWS_H

#include <stddef.h>

/* ---- growable byte buffer ------------------------------------------------------------ */

typedef struct {
    char *data;   /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int failed;   /* set once an allocation failed; later appends are ignored */
} wws_buf_t;

void wws_buf_init(wws_buf_t *b);
void wws_buf_free(wws_buf_t *b);
int wws_buf_append(wws_buf_t *b, const void *data, size_t len);
int wws_buf_puts(wws_buf_t *b, const char *s);
int wws_buf_printf(wws_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `s` as a quoted JSON string; bytes that are not valid UTF-8 become U+FFFD. */
int wws_buf_json_string(wws_buf_t *b, const char *s, size_t len);

/* ---- request ------------------------------------------------------------------------- */

typedef struct {
    char *name;
    char *value;
    size_t value_len;
} wws_pair_t;

typedef struct wws_request wws_request_t;

/* Reads the whole request from stdin. NULL when stdin is not a wws request object. */
wws_request_t *wws_request_read(void);
/* Parses a request from memory (what wws_request_read does after reading stdin). */
wws_request_t *wws_request_parse(const char *json, size_t len);
void wws_request_free(wws_request_t *req);

const char *wws_request_method(const wws_request_t *req);
/* The full URL, e.g. "http://127.0.0.1:8080/api/items?x=1". */
const char *wws_request_url(const wws_request_t *req);
/* The path of the URL without scheme, host and query, e.g. "/api/items". */
const char *wws_request_path(const wws_request_t *req);
/* The body as bytes (base64 already decoded when the server sent it encoded). */
const char *wws_request_body(const wws_request_t *req, size_t *len);
/* A dynamic route segment ("id" for a worker at `[id].wasm`), or NULL. */
const char *wws_request_param(const wws_request_t *req, const char *name);
/* A request header, name compared case-insensitively, or NULL. */
const char *wws_request_header(const wws_request_t *req, const char *name);
/* All params / headers, for iteration. */
size_t wws_request_params(const wws_request_t *req, const wws_pair_t **out);
size_t wws_request_headers(const wws_request_t *req, const wws_pair_t **out);

/* ---- key/value store ----------------------------------------------------------------- */

/* The worker's store ([data.kv] namespace): it holds the request's `kv` once the request is
 * parsed, and wws_response_send returns it whole, so the store keeps what the worker does not
 * change. A value belongs to the store until the next wws_kv_set of its key. */
const char *wws_kv_get(const char *key);
/* Sets `key` (value NULL removes it). Returns 0, or -1 when memory ran out. */
int wws_kv_set(const char *key, const char *value);
/* All entries, for iteration. */
size_t wws_kv_entries(const wws_pair_t **out);

/* ---- response ------------------------------------------------------------------------ */

typedef struct {
    int status;
    wws_buf_t headers; /* JSON members, built by wws_response_header */
    wws_buf_t body;    /* append the response body here */
} wws_response_t;

void wws_response_init(wws_response_t *res, int status);
int wws_response_header(wws_response_t *res, const char *name, const char *value);
/* Writes the response JSON to stdout (body base64-encoded when it is not valid UTF-8, `kv` the
 * store as wws_kv_set left it) and frees the buffers. Returns 0, or -1 when memory ran out or stdout failed. */
int wws_response_send(wws_response_t *res);
/* One-shot response with a content type and a body. */
int wws_respond(int status, const char *content_type, const char *body, size_t len);

#endif
