/*
 * stats_text: a counters struct (uint64_t fields only, named by an X-macro) as the
 * "prefixname=value ..." text of the stats log line, summed over several structs (the
 * workers of one process).
 */
#ifndef SIPEDGE_STATS_TEXT_H
#define SIPEDGE_STATS_TEXT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Writes "prefix<names[k]>=<sum over srcs of field k>" for k < n_fields, separated by
 * spaces, into buf (always NUL-terminated, cut when cap is short). Each srcs[i] points at
 * a struct of n_fields uint64_t counters in the order of names.
 */
void stats_text_sum(char *buf, size_t cap, const char *prefix, const char *const *names,
                    unsigned n_fields, const uint64_t *const *srcs, unsigned n_srcs);

#endif
