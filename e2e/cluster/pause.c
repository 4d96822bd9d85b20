/* The pod sandbox process of the test node: holds a pod's namespaces open and does nothing else.
 * Built by e2e/cluster/images into localhost/wasminfer/pause, because the node cannot pull the
 * upstream pause image. It sleeps in pause(), exits 0 on SIGINT or SIGTERM (so stopping a sandbox is
 * quick), and, running as PID 1 of a shared PID namespace, reaps the children it inherits. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *text) {
    /* write() rather than stdio: it is async-signal-safe, and this is all the output there is. */
    ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
    (void)ignored;
}

static void on_stop(int sig) {
    say(sig == SIGTERM ? "pause: got SIGTERM, exiting\n" : "pause: got SIGINT, exiting\n");
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    /* One SIGCHLD may stand for several exited children: collect all of them. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(sig, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        say("wasminfer-pause 3.10\n");
        return 0;
    }
    if (getpid() != 1) {
        say("pause: warning: not PID 1, so orphaned processes are not reaped here\n");
    }
    if (handle(SIGINT, on_stop, 0) != 0 || handle(SIGTERM, on_stop, 0) != 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
        say("pause: cannot install signal handlers\n");
        return 1;
    }
    for (;;) {
        pause();
    }
}
