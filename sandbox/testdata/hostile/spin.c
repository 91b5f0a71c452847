/* spin: an infinite loop that makes no system call. Want: cpu_limit. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	for (;;)
		__asm__ volatile("" ::: "memory");
}
