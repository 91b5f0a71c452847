/* bigbss: a 1 GiB .bss, four times the default memory limit. Demand paging would let it
 * run without a system call, so the sandbox must refuse it from the ELF headers.
 * Want: rejected. */
#include "gridjob.h"

static char big[1 << 30];

int main(void)
{
	big[sizeof big - 1] = 1;
	gj_puts("ESCAPED\n");
	return big[sizeof big - 1] - 1;
}
