/* arch_prctl: arch_prctl(2) (syscall 158) ARCH_GET_FS.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	unsigned long fs = 0;
	long r = gj_syscall(158, 0x1003 /* ARCH_GET_FS */, (long)&fs, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
