/* Hostile (or patient) worker: sleeps in WASI poll_oneoff, where no epoch deadline can reach it.
 *
 *   GET /sleep?ms=N       nanosleep N milliseconds (default 3600 s), then answer how long it took
 *   GET /sleep?poll=bad   raw poll_oneoff calls with hostile pointers and counts; answers the errnos
 *   GET /sleep?poll=fd    one clock (1 h) and one stdin subscription: stdin is ready, no sleep
 *   GET /sleep?poll=abs   sleeps 50 ms until an absolute CLOCK_MONOTONIC time
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wasi/api.h>

#include "wws.h"

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *query(const wws_request_t *req, const char *key) {
    const char *q = strchr(wws_request_url(req), '?');
    size_t klen = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, klen) == 0 && q[klen] == '=') return q + klen + 1;
        q = strchr(q, '&');
    }
    return NULL;
}

static __wasi_subscription_t clock_sub(uint64_t userdata, __wasi_clockid_t id, uint64_t timeout,
                                       __wasi_subclockflags_t flags) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = userdata;
    s.u.tag = __WASI_EVENTTYPE_CLOCK;
    s.u.u.clock.id = id;
    s.u.u.clock.timeout = timeout;
    s.u.u.clock.flags = flags;
    return s;
}

/* The errnos of poll_oneoff calls a hostile guest might make, as a JSON array. */
static void bad_polls(wws_buf_t *out) {
    static __wasi_subscription_t subs[2];
    static __wasi_event_t events[2];
    __wasi_size_t n = 0;
    subs[0] = clock_sub(7, __WASI_CLOCKID_MONOTONIC, 3600ULL * 1000000000ULL, 0);
    uintptr_t beyond = (uintptr_t)__builtin_wasm_memory_size(0) * 65536;
    __wasi_errno_t e[6];
    e[0] = __wasi_poll_oneoff((const __wasi_subscription_t *)(beyond - 8), events, 1, &n);  /* in runs off */
    e[1] = __wasi_poll_oneoff(subs, (__wasi_event_t *)(beyond - 16), 1, &n);               /* out runs off */
    e[2] = __wasi_poll_oneoff(subs, events, 1, (__wasi_size_t *)(beyond - 2));             /* nevents off */
    e[3] = __wasi_poll_oneoff(subs, events, 0x7fffffff, &n);                               /* absurd count */
    e[4] = __wasi_poll_oneoff(subs, events, 0, &n);                                        /* no subscriptions */
    subs[0].u.tag = 9;
    e[5] = __wasi_poll_oneoff(subs, events, 1, &n);                                        /* unknown tag */
    wws_buf_puts(out, "[");
    for (int i = 0; i < 6; i++) wws_buf_printf(out, "%s%d", i ? "," : "", e[i]);
    wws_buf_puts(out, "]");
}

/* A 1 h clock beside a stdin subscription: stdin is ready, so the call returns at once. */
static void fd_poll(wws_buf_t *out) {
    __wasi_subscription_t subs[2];
    __wasi_event_t events[2];
    __wasi_size_t n = 0;
    subs[0] = clock_sub(1, __WASI_CLOCKID_MONOTONIC, 3600ULL * 1000000000ULL, 0);
    memset(&subs[1], 0, sizeof subs[1]);
    subs[1].userdata = 2;
    subs[1].u.tag = __WASI_EVENTTYPE_FD_READ;
    subs[1].u.u.fd_read.file_descriptor = 0;
    __wasi_errno_t e = __wasi_poll_oneoff(subs, events, 2, &n);
    wws_buf_printf(out, "{\"errno\":%d,\"nevents\":%u", e, (unsigned)n);
    if (n >= 1)
        wws_buf_printf(out, ",\"userdata\":%llu,\"type\":%u", (unsigned long long)events[0].userdata,
                       (unsigned)events[0].type);
    wws_buf_puts(out, "}");
}

/* 50 ms until an absolute monotonic time: clock_nanosleep(TIMER_ABSTIME) polls with the abstime flag. */
static void abs_poll(wws_buf_t *out) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long long t0 = now_ns(CLOCK_MONOTONIC);
    until.tv_nsec += 50000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    wws_buf_printf(out, "{\"rc\":%d,\"slept_ms\":%lld}", rc, (now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
}

int main(void) {
    wws_request_t *req = wws_request_read();
    if (!req) return 1;
    wws_response_t res;
    wws_response_init(&res, 200);
    wws_response_header(&res, "content-type", "application/json");
    const char *poll = query(req, "poll");
    if (poll && strncmp(poll, "bad", 3) == 0) {
        bad_polls(&res.body);
    } else if (poll && strncmp(poll, "fd", 2) == 0) {
        fd_poll(&res.body);
    } else if (poll && strncmp(poll, "abs", 3) == 0) {
        abs_poll(&res.body);
    } else {
        const char *ms_text = query(req, "ms");
        long long ms = ms_text ? atoll(ms_text) : 3600LL * 1000;
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        long long t0 = now_ns(CLOCK_MONOTONIC);
        int rc = nanosleep(&ts, NULL);
        wws_buf_printf(&res.body, "{\"rc\":%d,\"slept_ms\":%lld}", rc, (now_ns(CLOCK_MONOTONIC) - t0) / 1000000);
    }
    int rc = wws_response_send(&res);
    wws_request_free(req);
    return rc == 0 ? 0 : 1;
}
