/* ioctl: ioctl(2) (syscall 16) TIOCGWINSZ on stdout.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	unsigned short ws[4];
	long r = gj_syscall(16, 1, 0x5413 /* TIOCGWINSZ */, (long)ws, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}
