/* The C reference implementation of argon2id, timed the way the benchmark times ours:
 *   argon2_ref first ENCODED PASSWORD      one verification, in a process that has not hashed before
 *   argon2_ref steady ENCODED PASSWORD N   N verifications in a row
 * Prints one line per verification: milliseconds. Built by the benchmark against
 * Debian's libargon2 and against the reference sources with AVX2. */
#include <argon2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: argon2_ref first|steady ENCODED PASSWORD [N]\n");
        return 2;
    }
    int n = strcmp(argv[1], "steady") == 0 && argc > 4 ? atoi(argv[4]) : 1;
    for (int i = 0; i < n; i++) {
        double t = now_ms();
        int rc = argon2id_verify(argv[2], argv[3], strlen(argv[3]));
        double dt = now_ms() - t;
        if (rc != ARGON2_OK) {
            fprintf(stderr, "argon2_ref: verification failed: %s\n", argon2_error_message(rc));
            return 1;
        }
        printf("%.4f\n", dt);
    }
    return 0;
}
