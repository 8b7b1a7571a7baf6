/*
 * sipedgectl: sends one command to sipedge's admin UNIX socket and prints the JSON reply.
 *
 *   sipedgectl [-s PATH] bans | ban ADDR [DURATION] | unban ADDR | stats
 *
 * Exit status: 0 when the reply says "ok":true, 1 when it says otherwise, 2 on usage or
 * connection errors.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SIPEDGECTL_DEFAULT_SOCKET "/run/sipedge/admin.sock"
#define SIPEDGECTL_TIMEOUT_MS 5000
#define SIPEDGECTL_REPLY_MAX (1024 * 1024 + 1)

static void usage(void)
{
    fprintf(stderr, "usage: sipedgectl [-s PATH] bans | ban ADDR [DURATION] | unban ADDR | stats\n"
                    "  ADDR: ip, ip:port or [ipv6]:port; DURATION: seconds or Ns/Nm/Nh/Nd\n"
                    "  default socket: " SIPEDGECTL_DEFAULT_SOCKET "\n");
}

int main(int argc, char **argv)
{
    const char *path = SIPEDGECTL_DEFAULT_SOCKET;
    int c;
    while ((c = getopt(argc, argv, "+s:h")) != -1) {
        if (c == 's') {
            path = optarg;
        } else {
            usage();
            return c == 'h' ? 0 : 2;
        }
    }
    int n_args = argc - optind;
    char **args = argv + optind;
    if (n_args < 1 || n_args > 3) {
        usage();
        return 2;
    }
    char line[512];
    size_t len = 0;
    for (int i = 0; i < n_args; i++) {
        if (strpbrk(args[i], "\r\n") != NULL) {
            fprintf(stderr, "sipedgectl: arguments must not contain line breaks\n");
            return 2;
        }
        int n = snprintf(line + len, sizeof(line) - len, "%s%s", i ? " " : "", args[i]);
        if (n < 0 || (size_t)n >= sizeof(line) - len - 1) {
            fprintf(stderr, "sipedgectl: command too long\n");
            return 2;
        }
        len += (size_t)n;
    }
    line[len++] = '\n';

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "sipedgectl: socket path too long\n");
        return 2;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        fprintf(stderr, "sipedgectl: cannot connect to %s: %s\n", path, strerror(errno));
        return 2;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "sipedgectl: write: %s\n", strerror(errno));
            return 2;
        }
        off += (size_t)w;
    }
    char *reply = malloc(SIPEDGECTL_REPLY_MAX);
    if (reply == NULL)
        return 2;
    size_t got = 0;
    while (got < SIPEDGECTL_REPLY_MAX - 1) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, SIPEDGECTL_TIMEOUT_MS);
        if (pr == 0) {
            fprintf(stderr, "sipedgectl: no reply within %d ms\n", SIPEDGECTL_TIMEOUT_MS);
            free(reply);
            close(fd);
            return 2;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t r = read(fd, reply + got, SIPEDGECTL_REPLY_MAX - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (reply[got - 1] == '\n')
            break;
    }
    close(fd);
    if (got == 0) {
        fprintf(stderr, "sipedgectl: connection closed without a reply\n");
        free(reply);
        return 2;
    }
    reply[got] = '\0';
    fputs(reply, stdout);
    if (reply[got - 1] != '\n')
        fputc('\n', stdout);
    int rc = strncmp(reply, "{\"ok\":true", 10) == 0 ? 0 : 1;
    free(reply);
    return rc;
}
