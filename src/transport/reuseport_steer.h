/*
 * reuseport_steer: a classic BPF program for an SO_REUSEPORT group that picks the member
 * socket from the packet's source address alone, so every datagram and every connection
 * from one address (whatever its port) reaches the same worker, and per-source rate
 * limits, strikes and bans stay worker-local and exact.
 *
 * Index i of the group is the i-th socket added to it: for UDP the order of bind(), for
 * TCP the order of listen(). The numbering is the kernel's and it changes when a member
 * closes (the last member moves into the closed one's slot), so a worker that loses its
 * socket must rebuild the whole group, not reopen its own socket alone.
 *
 * IPv4 (including IPv4-mapped traffic on a dual-stack IPv6 socket, which arrives as IPv4)
 * is steered by the whole address; IPv6 by its /64 prefix, the guard's IPv6 prefix keying
 * (policy guard.ipv6_prefix, default /64), so one /64 is one worker's to count.
 */
#ifndef SIPEDGE_REUSEPORT_STEER_H
#define SIPEDGE_REUSEPORT_STEER_H

#include <sys/socket.h>

/* Build the program for n_sockets members and attach it (SO_ATTACH_REUSEPORT_CBPF) to fd,
 * a socket with SO_REUSEPORT set; attaching to any member sets it for the whole group.
 * Returns 0 or -errno (-EINVAL for n_sockets == 0). */
int reuseport_steer_attach(int fd, unsigned n_sockets);

/* The member index the program picks for a packet from src (AF_INET, or AF_INET6, mapped
 * addresses counted as IPv4), in [0, n_sockets); 0 for another family or n_sockets == 0. */
unsigned reuseport_steer_index(const struct sockaddr *src, unsigned n_sockets);

#endif
