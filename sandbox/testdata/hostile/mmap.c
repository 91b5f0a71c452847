/* mmap: mmap(2) (syscall 9) of an anonymous read-write-execute page.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(9, 0, 4096, 7 /* PROT_READ|WRITE|EXEC */, 0x22 /* MAP_PRIVATE|ANONYMOUS */, -1, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
