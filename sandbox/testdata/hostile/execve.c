/* execve: execve(2) (syscall 59) of /bin/sh -c "echo ESCAPED".
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	const char *argv[] = {"/bin/sh", "-c", "echo ESCAPED", 0};
	const char *envp[] = {0};
	long r = gj_syscall(59, (long)argv[0], (long)argv, (long)envp, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
