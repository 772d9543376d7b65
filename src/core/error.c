/*
 * error.c - the per-thread error slot, status names and the log callback.
 * kiln never prints on its own: messages go to the log callback (default: stderr, warnings and
 * errors only).
 */
#include <stdarg.h>
#include <stdio.h>

#include "core/core_impl.h"

static _Thread_local kn_status tl_status;
static _Thread_local char tl_msg[512];

static void default_log(int level, const char *msg, void *user) {
    (void)user;
    if (level >= 2) fprintf(stderr, "kiln: %s\n", msg);
}
static kn_log_fn g_log = default_log;
static void *g_log_user;

kn_status kn_last_status(void) {
    return tl_status;
}
const char *kn_last_error(void) {
    return tl_msg;
}
void kn_clear_error(void) {
    tl_status = KN_OK;
    tl_msg[0] = 0;
}

const char *kn_status_name(kn_status s) {
    switch (s) {
    case KN_OK: return "KN_OK";
    case KN_EINVAL: return "KN_EINVAL";
    case KN_ESHAPE: return "KN_ESHAPE";
    case KN_EDTYPE: return "KN_EDTYPE";
    case KN_EFORMAT: return "KN_EFORMAT";
    case KN_EUNSUPPORTED: return "KN_EUNSUPPORTED";
    case KN_ENOMEM: return "KN_ENOMEM";
    case KN_EIO: return "KN_EIO";
    case KN_ELIMIT: return "KN_ELIMIT";
    case KN_EMISUSE: return "KN_EMISUSE";
    case KN_EINTERNAL: return "KN_EINTERNAL";
    }
    return "KN_E?";
}

static void set_err(kn_status s, const char *fmt, va_list ap) {
    tl_status = s;
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
}

kn_status kn__err(kn_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_err(s, fmt, ap);
    va_end(ap);
    return s;
}

void *kn__errp(kn_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_err(s, fmt, ap);
    va_end(ap);
    return NULL;
}

void kn_set_log(kn_log_fn fn, void *user) {
    g_log = fn ? fn : default_log;
    g_log_user = fn ? user : NULL;
}

void kn__log(int level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log(level, buf, g_log_user);
}

const char *kn__shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "(");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, ndim == 1 ? ",)" : ")");
    return buf;
}
