/* wasi_probe: small WASI actions for testing the executor.
 *
 *   wasi_probe echo              stdin -> stdout
 *   wasi_probe args A B ...      print each argument on its own line
 *   wasi_probe env NAME          print the variable, or "(unset)"
 *   wasi_probe read PATH         print the file, or "error <reason>"
 *   wasi_probe write PATH TEXT   write TEXT to PATH, print "ok" or "error <reason>"
 *   wasi_probe stderr TEXT       print TEXT on stderr
 *   wasi_probe exit N            exit with status N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if (strcmp(cmd, "echo") == 0) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
        return 0;
    }
    if (strcmp(cmd, "args") == 0) {
        for (int i = 2; i < argc; i++) printf("%s\n", argv[i]);
        return 0;
    }
    if (strcmp(cmd, "env") == 0 && argc > 2) {
        const char *v = getenv(argv[2]);
        printf("%s\n", v ? v : "(unset)");
        return 0;
    }
    if (strcmp(cmd, "read") == 0 && argc > 2) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) return printf("error %s\n", strerror(errno)), 0;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        fclose(f);
        return 0;
    }
    if (strcmp(cmd, "write") == 0 && argc > 3) {
        FILE *f = fopen(argv[2], "wb");
        if (!f) return printf("error %s\n", strerror(errno)), 0;
        fputs(argv[3], f);
        fclose(f);
        printf("ok\n");
        return 0;
    }
    if (strcmp(cmd, "stderr") == 0 && argc > 2) {
        fprintf(stderr, "%s\n", argv[2]);
        return 0;
    }
    if (strcmp(cmd, "exit") == 0 && argc > 2) exit(atoi(argv[2]));
    return 2;
}
