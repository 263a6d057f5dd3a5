/* The sandbox's placeholder process: waits for a termination signal and
 * reaps children it inherits. Built statically, so the image needs no libc. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int signo) { (void)signo; _exit(0); }

static void on_child(int signo) {
    (void)signo;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {.sa_handler = on_term};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    sigaction(SIGCHLD, &child, 0);
    for (;;)
        pause();
}
