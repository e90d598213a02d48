/*
 * pause is the sandbox process of every Skiff pod (image skiff.local/pause):
 * it holds the pod's namespaces open, reaps orphaned children as PID 1 and
 * exits on SIGINT or SIGTERM. Written in C and linked statically: one runs
 * per pod, and a Go program costs ~0.7 MB of anonymous memory where this
 * costs ~50 kB (scripts/build-assets.sh builds it).
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void)
{
	struct sigaction q = {.sa_handler = quit};
	struct sigaction r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};

	sigaction(SIGINT, &q, NULL);
	sigaction(SIGTERM, &q, NULL);
	sigaction(SIGCHLD, &r, NULL);
	for (;;)
		pause();
}
