/* tiny_runtime: a stand-in language runtime, run the way wws runs Python or Ruby (and its JS engine).
 *
 * The script is the last argument (a wws runtime's `args` end with it, e.g. "--" "/src/index.tiny"),
 * or /src/index.js when there are none (as wws's JavaScript engine reads it). One command per line;
 * the response body is what they append:
 *   say TEXT     TEXT and a newline
 *   cat PATH     the file's contents
 *   argv         "argc=N" then each argument on a line
 *   env NAME     the environment variable's value and a newline
 *   request      "METHOD PATH" of the request and a newline
 *   param NAME   the route parameter's value and a newline
 *   status N     the response status (200 by default)
 *   fail         a message on stderr and exit code 3
 * Empty lines and lines starting with '#' are skipped; any other line fails like `fail`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wws.h"

static int cat(wws_buf_t *out, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) wws_buf_append(out, chunk, n);
    fclose(f);
    return 0;
}

static int run(char *line, int argc, char **argv, const wws_request_t *req, wws_response_t *res) {
    char *arg = strchr(line, ' ');
    if (arg) *arg++ = '\0';
    const char *rest = arg ? arg : "";
    wws_buf_t *out = &res->body;
    if (strcmp(line, "say") == 0) {
        wws_buf_printf(out, "%s\n", rest);
    } else if (strcmp(line, "cat") == 0) {
        if (cat(out, rest) != 0) return fprintf(stderr, "tiny: cannot read %s\n", rest), -1;
    } else if (strcmp(line, "argv") == 0) {
        wws_buf_printf(out, "argc=%d\n", argc);
        for (int i = 0; i < argc; i++) wws_buf_printf(out, "%s\n", argv[i]);
    } else if (strcmp(line, "env") == 0) {
        const char *v = getenv(rest);
        wws_buf_printf(out, "%s\n", v ? v : "(unset)");
    } else if (strcmp(line, "request") == 0) {
        wws_buf_printf(out, "%s %s\n", wws_request_method(req), wws_request_path(req));
    } else if (strcmp(line, "param") == 0) {
        const char *v = wws_request_param(req, rest);
        wws_buf_printf(out, "%s\n", v ? v : "(none)");
    } else if (strcmp(line, "status") == 0) {
        res->status = atoi(rest);
    } else {
        fprintf(stderr, "tiny: %s %s\n", strcmp(line, "fail") == 0 ? "failing as told:" : "unknown command", line);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *script = argc >= 2 ? argv[argc - 1] : "/src/index.js";
    wws_buf_t text;
    wws_buf_init(&text);
    if (cat(&text, script) != 0 || text.failed) {
        fprintf(stderr, "tiny: cannot read the script %s\n", script);
        return 2;
    }
    wws_request_t *req = wws_request_read();
    if (!req) return fprintf(stderr, "tiny: no request on stdin\n"), 2;
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "text/plain");
    for (char *line = text.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (*line == '\0' || *line == '#') continue;
        if (run(line, argc, argv, req, &res) != 0) return 3;
    }
    wws_request_free(req);
    wws_buf_free(&text);
    return wws_response_send(&res) == 0 ? 0 : 1;
}
