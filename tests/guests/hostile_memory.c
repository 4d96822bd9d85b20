/* Hostile worker: allocates and touches memory until the allocator fails, then aborts, as a
 * program that cannot handle out-of-memory does. The server must cap it (500, memory). */
#include <stdlib.h>
#include <string.h>

#include "wws.h"

/* Blocks stay reachable through this chain, so the compiler cannot drop the allocations. */
static void *volatile chain;

int main(void) {
    wws_request_t *req = wws_request_read();
    for (;;) {
        void **block = malloc(1 << 20);
        if (!block) abort();
        memset(block, 0xAB, 1 << 20);
        block[0] = chain;
        chain = block;
    }
    wws_request_free(req);
    return 0;
}
