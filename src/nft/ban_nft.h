/*
 * ban_nft: the nftables ban backend's constructor. It takes the loop its netlink socket is
 * watched on, so only the worker (which owns the loop) and ban_nft.c include this header;
 * the guard sees the backend through ban_backend.h alone.
 */
#ifndef SIPEDGE_NFT_BAN_NFT_H
#define SIPEDGE_NFT_BAN_NFT_H

#include <stddef.h>

#include "guard/ban_backend.h"

struct uv_loop_s;

/*
 * Opens the netlink socket on loop. The rules are set up by ops->configure and the live
 * elements read back by ops->read_back (the guard does both in guard_new). Returns 0;
 * -EPROTONOSUPPORT/-EAFNOSUPPORT without nf_tables; other -errno. err gets a one-line
 * reason on failure. Close it with ban_backend_close.
 */
int ban_nft_new(struct ban_backend **out, struct uv_loop_s *loop, char *err, size_t errcap);

#endif
