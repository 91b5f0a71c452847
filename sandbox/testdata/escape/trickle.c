/* trickle: an SDK job (it runs under the stub) that writes n bytes one write(2) at a time,
 * n read from stdin as decimal digits: the worst case for the host that reads its output. */
#include "gridjob.h"

int main(void)
{
	char buf[32];
	long len = gj_read(0, buf, sizeof buf), n = 0;
	for (long i = 0; i < len && buf[i] >= '0' && buf[i] <= '9'; i++)
		n = n * 10 + (buf[i] - '0');
	for (long i = 0; i < n; i++)
		gj_write(1, "x", 1);
	return 0;
}
