/* http_fetch: a wws worker that sends one outbound request through wws's `http` import
 * (send-http-request, wit-bindgen 0.x core-module ABI, glue written by hand here) and answers
 * with what came back, as JSON:
 *
 *   {"ok":true,"status":200,"headers":[["name","value"],...],"body":"..."}
 *   {"ok":false,"error":3,"message":"..."}          (error: wws's http-error enum value)
 *
 * The request says what to send: header x-url (the URL), x-method (GET, POST, ... or a number,
 * the enum value as is), x-send-header ("name: value", sent along); its body, when it has one,
 * is the outbound body. x-hostile breaks the ABI on purpose: "uri-ptr" (a URL outside memory),
 * "ret-ptr" (a result area outside memory), "utf8" (a URL that is not UTF-8).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

__attribute__((import_module("http"), import_name("send-http-request")))
void http_send_http_request(int32_t body_tag, int32_t body_ptr, int32_t body_len, int32_t headers_ptr,
                            int32_t headers_len, int32_t method, int32_t params_ptr, int32_t params_len,
                            int32_t uri_ptr, int32_t uri_len, int32_t ret_ptr);

/* The host hands strings and lists back in memory it asks for here, as wit-bindgen's glue does. */
__attribute__((export_name("canonical_abi_realloc")))
void *canonical_abi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *out = realloc(ptr, new_size);
    if (!out) abort();
    return out;
}

__attribute__((export_name("canonical_abi_free")))
void canonical_abi_free(void *ptr, size_t size, size_t align) {
    (void)align;
    if (size) free(ptr);
}

typedef struct {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} pair_t; /* a tuple<string, string>: 16 bytes on wasm32 */

static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"};

static int32_t method_id(const char *name) {
    if (!name) return 0;
    for (int32_t i = 0; i < 7; i++)
        if (strcmp(name, METHODS[i]) == 0) return i;
    return (int32_t)atoi(name);
}

static int32_t load_i32(const uint8_t *area, size_t at) {
    int32_t v;
    memcpy(&v, area + at, 4);
    return v;
}

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return wws_respond(400, "text/plain", "bad request\n", 12), 0;
    const char *url = wws_request_header(req, "x-url");
    const char *hostile = wws_request_header(req, "x-hostile");
    const char *extra = wws_request_header(req, "x-send-header");
    size_t body_len;
    const char *body = wws_request_body(req, &body_len);
    if (!url) url = "";

    pair_t headers[1];
    int32_t n_headers = 0;
    char *extra_copy = NULL;
    if (extra && strchr(extra, ':')) {
        extra_copy = strdup(extra);
        char *colon = strchr(extra_copy, ':');
        *colon = '\0';
        const char *value = colon + 1;
        while (*value == ' ') value++;
        headers[0] = (pair_t){extra_copy, strlen(extra_copy), value, strlen(value)};
        n_headers = 1;
    }

    _Alignas(4) static uint8_t ret[28];
    int32_t uri_ptr = (int32_t)url, uri_len = (int32_t)strlen(url), ret_ptr = (int32_t)ret;
    static const char not_utf8[] = "http://127.0.0.1/\xff\xfe";
    if (hostile && strcmp(hostile, "uri-ptr") == 0) uri_ptr = (int32_t)0xFFFFFF00u;
    if (hostile && strcmp(hostile, "ret-ptr") == 0) ret_ptr = (int32_t)0xFFFFFF00u;
    if (hostile && strcmp(hostile, "utf8") == 0) uri_ptr = (int32_t)not_utf8, uri_len = (int32_t)(sizeof not_utf8 - 1);

    http_send_http_request(body_len > 0, (int32_t)body, (int32_t)body_len, (int32_t)headers, n_headers,
                           method_id(wws_request_header(req, "x-method")),
                           0, 0, uri_ptr, uri_len, ret_ptr);

    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_t *out = &res.body;
    if (ret[0] == 0) {
        const char *got = (const char *)load_i32(ret, 8);
        size_t got_len = (size_t)load_i32(ret, 12);
        const pair_t *hs = (const pair_t *)load_i32(ret, 16);
        size_t n = (size_t)load_i32(ret, 20);
        uint16_t status;
        memcpy(&status, ret + 24, 2);
        wws_buf_printf(out, "{\"ok\":true,\"status\":%u,\"has_body\":%s,\"headers\":[", status, ret[4] ? "true" : "false");
        for (size_t i = 0; i < n; i++) {
            wws_buf_puts(out, i ? ",[" : "[");
            wws_buf_json_string(out, hs[i].key, hs[i].key_len);
            wws_buf_puts(out, ",");
            wws_buf_json_string(out, hs[i].value, hs[i].value_len);
            wws_buf_puts(out, "]");
            canonical_abi_free((void *)hs[i].key, hs[i].key_len, 1);
            canonical_abi_free((void *)hs[i].value, hs[i].value_len, 1);
        }
        wws_buf_puts(out, "],\"body\":");
        wws_buf_json_string(out, got, got_len);
        wws_buf_puts(out, "}");
        canonical_abi_free((void *)hs, n * sizeof(pair_t), 4);
        canonical_abi_free((void *)got, got_len, 1);
    } else {
        const char *msg = (const char *)load_i32(ret, 8);
        size_t msg_len = (size_t)load_i32(ret, 12);
        wws_buf_printf(out, "{\"ok\":false,\"error\":%u,\"message\":", ret[4]);
        wws_buf_json_string(out, msg, msg_len);
        wws_buf_puts(out, "}");
        canonical_abi_free((void *)msg, msg_len, 1);
    }
    free(extra_copy);
    wws_request_free(req);
    return wws_response_send(&res) == 0 ? 0 : 1;
}
