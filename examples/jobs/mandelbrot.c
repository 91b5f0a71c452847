//go:build ignore

/* mandelbrot: renders the Mandelbrot set over [-2.5, 1] x [-1.25, 1.25].
 * Reads: "W H ITER" in decimal (missing values default to 640 480 256; W and H up to
 * 16384, ITER up to 1000000). Writes: a binary PGM (P5) image, W x H bytes after the
 * header; points in the set are 0 (black), others lighter the sooner they escape. */
#include "gridjob.h"

int main(void)
{
	size_t len;
	const char *in = (const char *)gj_read_all(&len);
	if (!in)
		gj_fail("input too large");
	uint64_t v[3] = {640, 480, 256};
	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		size_t used = gj_parse_u64(in + off, len - off, &v[i]);
		if (used == 0)
			break;
		off += used;
	}
	uint64_t w = v[0], ht = v[1], iter = v[2];
	if (w < 1 || w > 16384 || ht < 1 || ht > 16384 || iter < 1 || iter > 1000000)
		gj_fail("want W H ITER with 1 <= W, H <= 16384 and 1 <= ITER <= 1000000");

	char hdr[64];
	size_t n = 0;
	hdr[n++] = 'P', hdr[n++] = '5', hdr[n++] = '\n';
	n += gj_fmt_u64(hdr + n, w);
	hdr[n++] = ' ';
	n += gj_fmt_u64(hdr + n, ht);
	hdr[n++] = '\n', hdr[n++] = '2', hdr[n++] = '5', hdr[n++] = '5', hdr[n++] = '\n';
	if (gj_write_all(1, hdr, n) < 0)
		return 1;

	unsigned char *row = gj_alloc(w);
	for (uint64_t y = 0; y < ht; y++) {
		double ci = -1.25 + 2.5 * (double)y / (double)ht;
		for (uint64_t x = 0; x < w; x++) {
			double cr = -2.5 + 3.5 * (double)x / (double)w;
			double zr = 0, zi = 0;
			uint64_t i = 0;
			while (i < iter && zr * zr + zi * zi <= 4.0) {
				double t = zr * zr - zi * zi + cr;
				zi = 2.0 * zr * zi + ci;
				zr = t;
				i++;
			}
			row[x] = i == iter ? 0 : (unsigned char)(255 - i * 255 / iter);
		}
		if (gj_write_all(1, row, w) < 0)
			return 1;
	}
	return 0;
}
