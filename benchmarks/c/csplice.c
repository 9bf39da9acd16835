/* The baseline relay: blocking splice() from one FIFO to another, 1 MiB pipes, like pipe.md's C relay.
 * usage: csplice IN_FIFO OUT_FIFO */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: csplice IN OUT\n"); return 2; }
    int in = open(argv[1], O_RDONLY), out = open(argv[2], O_WRONLY);
    if (in < 0 || out < 0) { perror("open"); return 1; }
    fcntl(in, F_SETPIPE_SZ, 1 << 20); fcntl(out, F_SETPIPE_SZ, 1 << 20);
    ssize_t n;
    while ((n = splice(in, NULL, out, NULL, 1 << 20, SPLICE_F_MOVE)) > 0) {}
    if (n < 0) { perror("splice"); return 1; }
    return 0;
}
