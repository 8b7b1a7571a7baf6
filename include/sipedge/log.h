/*
 * log: leveled, line-oriented logging to stderr.
 *
 * One line per decision. Thread-safe (each line is one write). Peer addresses are
 * printed with log_fmt_addr so they always look the same.
 */
#ifndef SIPEDGE_LOG_H
#define SIPEDGE_LOG_H

#include <stddef.h>

struct sockaddr;

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error|warn|info|debug"; returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line printed at every log level (start-up and shutdown milestones scripts wait for). */
void log_always(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Formats an IPv4/IPv6 socket address as "1.2.3.4:5060" or "[::1]:5060" into buf. */
const char *log_fmt_addr(const struct sockaddr *sa, char *buf, size_t cap);

#define LOG_ADDR_MAX 64
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LEVEL_DEBUG)                                                    \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                               \
    } while (0)

#endif
