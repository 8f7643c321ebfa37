/* trace.h: the debug trace of a transfer, secrets scrubbed (see trace.c). */
#ifndef ZULIP_TRACE_H
#define ZULIP_TRACE_H

#include "http.h"

/* Appends one line ('*' curl's text, '>' sent, '<' received) with the secrets replaced. */
void zhttp_trace_line(zhttp_conn *c, char prefix, const char *line, size_t n);
/* CURLOPT_DEBUGFUNCTION: curl's text and any header it sends or receives (a proxy's CONNECT). */
int zhttp_on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userp);
/* base64 of a NUL-terminated string, malloc'd; NULL when out of memory. */
char *zhttp_base64(const char *in);

#endif
