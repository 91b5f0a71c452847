/* flood: writes 'x' to stdout forever. Want: output_limit. */
#include "gridjob.h"

int main(void)
{
	static char buf[64 << 10];
	memset(buf, 'x', sizeof buf);
	for (;;)
		if (gj_write_all(1, buf, sizeof buf) < 0)
			return 1;
}
