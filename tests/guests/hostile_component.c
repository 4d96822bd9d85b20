// component
/* hostile_component: a component that reaches past its limits.
 *
 *   hostile_component spin          loops forever (the timeout stops it)
 *   hostile_component sleep         sleeps an hour in WASI (the timeout stops it)
 *   hostile_component hoard         makes 1 MiB wasi:nn tensors and never drops them (host memory)
 *   hostile_component errors NAME   fails load-by-name NAME forever and never drops the errors
 *   hostile_component grow          allocates until malloc fails (the memory limit), then traps
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wasi_nn_wit.h"

char *volatile kept;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "spin")) {
        volatile unsigned long n = 0;
        for (;;) n++;
    }
    if (!strcmp(mode, "sleep")) {
        struct timespec ts = {3600, 0};
        nanosleep(&ts, NULL);
        printf("woke\n");
        return 0;
    }
    if (!strcmp(mode, "hoard")) {
        static uint8_t mib[1 << 20];
        uint32_t dims[1] = {1 << 18};
        for (int i = 0;; i++) {
            wasi_nn_tensor_new(dims, 1, NN_FP32, mib, sizeof mib);
            if (i % 16 == 0) {
                printf("%d MiB\n", i + 1);
                fflush(stdout);
            }
        }
    }
    if (!strcmp(mode, "errors") && argc > 2) {
        for (;;) {
            wasi_nn_result_t r;
            wasi_nn_load_by_name(argv[2], strlen(argv[2]), &r);
            if (!r.is_err) return 3;
        }
    }
    if (!strcmp(mode, "grow")) {
        for (;;) {
            char *p = malloc(1 << 20);
            if (!p) __builtin_trap();  /* the memory limit refused to grow memory */
            memset(p, 1, 1 << 20);
            kept = p;  /* keeps the compiler from eliding the allocations */
        }
    }
    fprintf(stderr, "usage: hostile_component spin|sleep|hoard|errors NAME|grow\n");
    return 2;
}
