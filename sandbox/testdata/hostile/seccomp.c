/* seccomp: seccomp(2) (syscall 317) SECCOMP_SET_MODE_STRICT again.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(317, 0 /* SECCOMP_SET_MODE_STRICT */, 0, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
