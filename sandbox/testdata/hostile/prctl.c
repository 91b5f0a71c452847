/* prctl: prctl(2) (syscall 157) PR_SET_DUMPABLE 1, undoing what the stub did.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(157, 4 /* PR_SET_DUMPABLE */, 1, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
