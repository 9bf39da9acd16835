/* The one-thread baseline: one process, one thread, one edge-triggered epoll over every channel's
 * two FIFOs, non-blocking splice() from each FIFO to its pair until it would block, 1 MiB pipes.
 * smsupervise's relay thread has this shape (one thread for all channels, waiting in epoll, not in
 * splice); this is it without Python, to tell the cost of the shape from the cost of the language.
 * usage: cepoll IN_FIFO OUT_FIFO [IN_FIFO OUT_FIFO ...] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_CHANNELS 64

static int add(int ep, int fd, unsigned events, int channel) {
    struct epoll_event ev = {.events = events | EPOLLET, .data.u32 = (unsigned)channel};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv) {
    int n = (argc - 1) / 2;
    if (argc < 3 || (argc - 1) % 2 || n > MAX_CHANNELS) {
        fprintf(stderr, "usage: cepoll IN OUT [IN OUT ...] (at most %d pairs)\n", MAX_CHANNELS);
        return 2;
    }
    int in[MAX_CHANNELS], out[MAX_CHANNELS], done[MAX_CHANNELS] = {0}, open_channels = n;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < n; i++) {
        /* blocking opens, as csplice's: each returns once the producer (the consumer) has opened,
         * so a 0-byte splice afterwards is EOF */
        in[i] = open(argv[1 + 2 * i], O_RDONLY);
        out[i] = open(argv[2 + 2 * i], O_WRONLY);
        if (in[i] < 0 || out[i] < 0) { perror("open"); return 1; }
        fcntl(in[i], F_SETPIPE_SZ, 1 << 20);
        fcntl(out[i], F_SETPIPE_SZ, 1 << 20);
        if (ep < 0 || add(ep, in[i], EPOLLIN, i) < 0 || add(ep, out[i], EPOLLOUT, i) < 0) {
            perror("epoll");
            return 1;
        }
    }
    struct epoll_event events[2 * MAX_CHANNELS];
    while (open_channels) {
        int ready = epoll_wait(ep, events, 2 * MAX_CHANNELS, -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int e = 0; e < ready; e++) {
            int i = (int)events[e].data.u32;
            /* until it would block: an edge comes only after that (a write upstream, a read
             * downstream, a close) */
            while (!done[i]) {
                ssize_t moved = splice(in[i], NULL, out[i], NULL, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (moved > 0) continue;
                if (moved < 0 && errno == EAGAIN) break;
                if (moved < 0) { perror("splice"); return 1; }
                done[i] = 1; /* EOF: closing OUT is the consumer's EOF */
                close(in[i]);
                close(out[i]);
                open_channels--;
            }
        }
    }
    return 0;
}
