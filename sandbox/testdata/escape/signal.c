/* signal: a job that got past the stub probes a process it should not reach. It reads a
 * pid from stdin (a process of the test's uid, standing in for the daemon) and prints the
 * result of kill(pid, 0), PTRACE_SEIZE (which, unlike PTRACE_ATTACH, does not stop the
 * victim) and kill(getppid(), 0). 0 means it reached the process. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

static void report(const char *what, long r)
{
	printf("%s: %ld %s\n", what, r, r == 0 ? "reached" : "refused");
}

int main(void)
{
	int pid;
	if (scanf("%d", &pid) != 1)
		return 2;
	report("kill", kill(pid, 0) == 0 ? 0 : errno);
	report("ptrace", ptrace(PTRACE_SEIZE, pid, 0, 0) == 0 ? 0 : errno);
	pid_t ppid = getppid(); /* 0 in a PID namespace: kill(0, ...) would mean our own group */
	printf("ppid: %d\n", (int)ppid);
	if (ppid > 0)
		report("kill-parent", kill(ppid, 0) == 0 ? 0 : errno);
	return 0;
}
