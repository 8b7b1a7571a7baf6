/*
 * Character classes and small scanners shared by the SIP parsers (RFC 3261 §25.1).
 * Private to src/sip. Everything is inline and works on [p, end) ranges.
 */
#ifndef SIPEDGE_SIP_LEX_INTERNAL_H
#define SIPEDGE_SIP_LEX_INTERNAL_H

#include <stdbool.h>

/* token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") */
static inline bool sip_lex_is_token(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '-': case '.': case '!': case '%': case '*': case '_': case '+': case '`':
    case '\'': case '~':
        return true;
    default:
        return false;
    }
}

static inline bool sip_lex_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool sip_lex_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Linear white space, including the CRLF of a folded line. */
static inline bool sip_lex_is_lws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static inline const char *sip_lex_skip_lws(const char *p, const char *end)
{
    while (p < end && sip_lex_is_lws((unsigned char)*p))
        p++;
    return p;
}

static inline const char *sip_lex_skip_token(const char *p, const char *end)
{
    while (p < end && sip_lex_is_token((unsigned char)*p))
        p++;
    return p;
}

/*
 * Skips a quoted-string starting at the opening quote (RFC 3261 §25.1, quoted-pair
 * excludes CR and LF). Returns the position after the closing quote, or NULL when the
 * string is unterminated.
 */
static inline const char *sip_lex_skip_quoted(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\') {
            if (p + 1 >= end || p[1] == '\r' || p[1] == '\n')
                return NULL;
            p++;
        }
    }
    return NULL;
}

#endif
