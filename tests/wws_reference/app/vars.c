/* /vars: the worker's whole environment as a JSON object ([vars] in vars.toml). */
#include <string.h>

#include "wws.h"

extern char **environ;

int main(void) {
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    wws_buf_puts(&res.body, "{");
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        if (e != environ) wws_buf_puts(&res.body, ",");
        wws_buf_json_string(&res.body, *e, (size_t)(eq - *e));
        wws_buf_puts(&res.body, ":");
        wws_buf_json_string(&res.body, eq + 1, strlen(eq + 1));
    }
    wws_buf_puts(&res.body, "}");
    return wws_response_send(&res) == 0 ? 0 : 1;
}
