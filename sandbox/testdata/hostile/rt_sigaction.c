/* rt_sigaction: rt_sigaction(2) (syscall 13) installing a SIGSEGV handler.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } act = {(void *)1 /* SIG_IGN */, 0, 0, 0};
	long r = gj_syscall(13, 11 /* SIGSEGV */, (long)&act, 0, 8, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
