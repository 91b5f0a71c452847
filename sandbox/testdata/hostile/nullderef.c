/* nullderef: writes through a null pointer. Want: crashed, SIGSEGV. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	*(volatile int *)0 = 1;
	gj_puts("ESCAPED\n");
	return 0;
}
