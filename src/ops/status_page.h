/*
 * status_page: web/status.html, embedded at build time (cmake/embed_file.cmake writes
 * status_page.c into the build tree), served by admin_http at "/".
 */
#ifndef SIPEDGE_OPS_STATUS_PAGE_H
#define SIPEDGE_OPS_STATUS_PAGE_H

#include <stddef.h>

extern const char status_page_html[];
extern const size_t status_page_html_len;

#endif
