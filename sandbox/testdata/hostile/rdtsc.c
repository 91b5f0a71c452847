/* rdtsc: reads the time-stamp counter. Strict mode sets CR4.TSD for the task, so rdtsc
 * faults with SIGSEGV: jobs have no clock. Want: crashed, SIGSEGV. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	unsigned lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)hi << 32 | lo);
	return 0;
}
