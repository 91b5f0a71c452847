// div128 divides unsigned __int128 values, which gcc compiles into calls to libgcc's
// __udivti3 and __umodti3; volatile keeps it from folding them.
#include "gridjob.h"

int main(void) {
	volatile unsigned __int128 a = ((unsigned __int128)0x0123456789abcdefull << 64) | 0xfedcba9876543210ull;
	volatile unsigned __int128 b = 1000000007ull;
	unsigned __int128 q = a / b, r = a % b;
	gj_print_u64((uint64_t)(q >> 64));
	gj_print_u64((uint64_t)q);
	gj_print_u64((uint64_t)r);
	return 0;
}
