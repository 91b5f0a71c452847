//go:build ignore

/* primes: counts the primes <= N with a sieve of Eratosthenes on the arena.
 * Reads: a decimal N (empty input means 100000). Writes: the count, in decimal, and a
 * newline. One bit per odd number, so the 16 MiB arena holds N up to about 268 million. */
#include "gridjob.h"

int main(void)
{
	size_t len;
	const char *in = (const char *)gj_read_all(&len);
	if (!in)
		gj_fail("input too large");
	uint64_t n = 100000;
	size_t used = gj_parse_u64(in, len, &n);
	for (size_t i = used; i < len; i++)
		if (in[i] != ' ' && in[i] != '\n' && in[i] != '\r' && in[i] != '\t')
			gj_fail("want a decimal N on stdin");
	if (n < 2)
		return gj_print_u64(0) < 0;

	/* Bit i stands for the odd number 2i+1; a set bit means composite. */
	uint64_t odds = (n + 1) / 2;
	uint8_t *composite = gj_alloc((size_t)(odds + 7) / 8);
	if (!composite || odds > (uint64_t)1 << 40)
		gj_fail("N too large for the arena");
	uint64_t count = 1; /* 2 */
	for (uint64_t i = 1; i < odds; i++) {
		if (composite[i >> 3] & (1u << (i & 7)))
			continue;
		count++;
		uint64_t p = 2 * i + 1;
		if (p > n / p)
			continue; /* p*p > n: nothing left to cross off */
		for (uint64_t j = p * p / 2; j < odds; j += p)
			composite[j >> 3] |= (uint8_t)(1u << (j & 7));
	}
	return gj_print_u64(count) < 0;
}
