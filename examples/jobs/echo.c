//go:build ignore

/* echo: copies stdin to stdout unchanged. Reads: any bytes. Writes: the same bytes. */
#include "gridjob.h"

int main(void)
{
	static char buf[64 << 10];
	for (;;) {
		long n = gj_read(0, buf, sizeof buf);
		if (n == 0)
			return 0;
		if (n < 0 || gj_write_all(1, buf, (size_t)n) < 0)
			return 1;
	}
}
