/* cpuid: reads the processor's vendor. The stub turns on CPUID faulting where the CPU has
 * it (arch_prctl(ARCH_SET_CPUID, 0)), so cpuid faults with SIGSEGV and the job cannot learn
 * the host processor. Want: crashed, SIGSEGV (exited, printing the vendor, on a CPU without
 * CPUID faulting: see docs/writing-jobs.md). */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	unsigned a = 0, b, c, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
	char v[13] = {0};
	memcpy(v, &b, 4);
	memcpy(v + 4, &d, 4);
	memcpy(v + 8, &c, 4);
	gj_puts("vendor ");
	gj_puts(v);
	gj_puts("\n");
	return 0;
}
