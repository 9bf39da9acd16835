/* Log benchmark child: write N lines of exactly 100 bytes (99 + '\n') to stdout through a 64 KiB
 * stdio buffer, so that the writer costs little next to whatever relays its output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    static char buf[65536];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char line[101];
    memset(line, 'x', 99);
    line[99] = '\n';
    line[100] = 0;
    for (long i = 0; i < n; i++) {
        snprintf(line, 20, "line %012ld", i);
        line[17] = ' ';
        fwrite(line, 1, 100, stdout);
    }
    return 0;
}
