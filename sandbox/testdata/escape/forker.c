/* forker: a job that got past the stub leaves processes behind and exits at once: one
 * child that closes its pipes and sleeps for an hour, and one that calls setsid (leaving
 * the job's process group and session) and keeps stdout open for a few seconds. It prints
 * its uid, for the test to look for what is left of it. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	fflush(stdout);
	if (fork() == 0) {
		close(0);
		close(1);
		close(2);
		sleep(3600);
		_exit(0);
	}
	if (fork() == 0) {
		setsid();
		sleep(4);
		_exit(0);
	}
	printf("forked as uid %d\n", (int)getuid());
	return 0;
}
